"""The ``i2p`` command: LightningCLI (fit/validate/test/predict) plus a few extra commands.

Configs name classes with ``class_path``/``init_args``; ``num_classes`` and the class names
come from the DataModule (argument links). The project's defaults (seed, checkpoints ``last`` +
best ``val/acc``, the W&B logger that goes offline without credentials) are YAML,
``configs/defaults.yaml``, read before any ``--config``; what stays code is behaviour (links,
``name:`` folders, the sparse sync-BN plugin, the rich progress bar).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from i2p.cli.configs import DEFAULTS
from i2p.io import atomic_write_bytes

__all__ = ["I2PCLI", "LogConfigCallback", "run_lightning", "parse_config", "SUBCOMMANDS"]

SUBCOMMANDS = ("fit", "validate", "test", "predict")

class LogConfigCallback(SaveConfigCallback):
    """Sends the full resolved config to the experiment logger (and the W&B run files)."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        logger = trainer.logger
        if logger is None:
            return
        text = self.parser.dump(self.config, skip_none=False)
        logger.log_hyperparams({"cli": yaml.safe_load(text)})
        run_dir = getattr(getattr(logger, "experiment", None), "dir", None)
        if isinstance(run_dir, str) and os.path.isdir(run_dir):
            atomic_write_bytes(Path(run_dir, self.config_filename), text.encode())


class I2PCLI(LightningCLI):
    """LightningCLI with the project's links and defaults."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="Experiment name: checkpoints go to runs/<name>/checkpoints (unless checkpoint.dirpath is set) "
            "and the W&B run is called <name>.",
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")  # defaults: configs/defaults.yaml
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.target_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        init = getattr(cfg.get("model"), "init_args", None)
        if self.subcommand in ("validate", "test", "predict") and cfg.get("ckpt_path") and init is not None:
            if init.get("pretrained"):  # the checkpoint holds the weights: no 2D file or download needed
                init.pretrained = False
        name = cfg.get("name")
        if not name:
            return
        if cfg.get("checkpoint") is not None and not cfg.checkpoint.get("dirpath"):
            cfg.checkpoint.dirpath = str(Path("runs") / name / "checkpoints")
        logger = cfg.trainer.get("logger")
        init = getattr(logger, "init_args", None)
        if init is not None and "name" in init and not init.get("name"):
            init.name = name

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        if cfg.get("sync_batchnorm"):  # Lightning's torch.nn.SyncBatchNorm cannot take SparseTensors
            from models.sync_batchnorm import SparseSyncBatchNorm

            plugins = cfg.get("plugins") or []
            plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
            if not any(isinstance(p, SparseSyncBatchNorm) for p in plugins):
                kwargs["plugins"] = [*plugins, SparseSyncBatchNorm()]
        callbacks = list(cfg.get("callbacks") or [])
        if cfg.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RichProgressBar()]
        return super().instantiate_trainer(**kwargs)


def run_lightning(args: Sequence[str] | None = None, cli_class: type[I2PCLI] = I2PCLI, description: str = "",
                  **kwargs: Any) -> I2PCLI:
    """Build (and by default run) the LightningCLI; ``args=None`` reads ``sys.argv``."""
    kwargs.setdefault("save_config_callback", LogConfigCallback)
    kwargs.setdefault("save_config_kwargs", {"save_to_log_dir": False, "config_filename": "i2p_config.yaml"})
    kwargs.setdefault("auto_configure_optimizers", False)
    defaults = {"default_config_files": [str(DEFAULTS)]}
    kwargs.setdefault("parser_kwargs", {"description": description, **{c: defaults for c in SUBCOMMANDS}})
    return cli_class(args=None if args is None else list(args), **kwargs)


class _ParseOnlyCLI(I2PCLI):
    def instantiate_classes(self) -> None:
        """Nothing: parsing (and validating) the config is the whole job."""

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def parse_config(args: Sequence[str]) -> Any:
    """The validated config namespace of ``args`` (e.g. ``["fit", "--config", path]``), nothing built.

    Classes are imported and ``init_args`` type-checked, but no model, data or trainer is created.
    """
    return run_lightning(args, cli_class=_ParseOnlyCLI).config
