"""Extra ``i2p`` sub-commands that are not Trainer methods (each module has ``main(argv)``)."""
