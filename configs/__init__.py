"""The shipped LightningCLI configs (YAML, package data): data/, model/, trainer/, experiments/ and
defaults.yaml. `importlib.resources.files("configs")` finds them in a checkout and in a wheel.
"""
