"""The ``i2p`` command: LightningCLI (fit/validate/test/predict) plus a few extra commands.

Configs name classes with ``class_path``/``init_args``; ``num_classes`` and the class names
come from the DataModule (argument links). The project's defaults (seed, checkpoints ``last`` +
best ``val/acc``, the W&B logger that goes offline without credentials) are YAML,
``configs/defaults.yaml``, read before any ``--config``; what stays code is behaviour (links,
``name:`` folders, the sparse sync-BN plugin, the progress display: Rich on a terminal, plain
lines in a log file; the summary block after ``fit``; and resuming: see ``i2p/cli/resume.py`` for
how ``--ckpt_path`` is resolved and checked, ``callbacks/checkpoint.py`` and
``callbacks/resume.py`` for what a checkpoint holds and how a kill or pre-emption ends).
``i2p predict`` is the project's own command (``i2p/cli/predict.py``), not Lightning's.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import DefaultHelpFormatter
from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from callbacks.checkpoint import AtomicCheckpointIO, Checkpoint
from callbacks.resume import RUN_KEY, ResumeState
from i2p.checkpoint_file import peek_checkpoint
from i2p.cli.configs import DEFAULTS
from i2p.cli.progress import choose_progress_bar
from i2p.cli.resume import CLIError, default_run_name, model_overrides, resolve_last
from i2p.cli.summary import print_summary, run_summary
from i2p.io import atomic_write_bytes
from models.weights import SLIM_KEY

__all__ = ["I2PCLI", "I2PArgumentParser", "LogConfigCallback", "ConfigError", "one_line_parser_error",
           "run_lightning", "parse_config", "SUBCOMMANDS", "flat_settings", "quiet_known_warnings"]

SUBCOMMANDS = ("fit", "validate", "test")  # `i2p predict` is the project's own command


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept (the extra commands, one per line)."""


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_known_warnings() -> None:
    """Silence what a normal run would print that needs no action, each for a stated reason."""
    # FIP regimes keep the copied BN layers in eval mode on purpose (docs/regimes.md)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # raised inside Lightning 2.6's own pytree helper by torch >= 2.10; nothing in i2p calls it
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # `i2p demo` hands the CLI its own argument list while sys.argv holds `demo`: intended
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    # an advertisement printed at every Trainer start, not a diagnostic
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTip())


def flat_settings(section: Any, prefix: str) -> dict[str, Any]:
    """A ``class_path``/``init_args`` config as flat ``<prefix>/<key>`` entries (nested dicts joined by
    ``/``): W&B shows, filters and groups runs by these columns.
    """
    if not isinstance(section, dict):
        return {}
    out: dict[str, Any] = {}
    if "class_path" in section:
        out[f"{prefix}/class"] = section["class_path"]
    args = section.get("init_args", section if "class_path" not in section else {}) or {}

    def walk(values: dict, where: str) -> None:
        for key, value in values.items():
            if key.startswith("_"):
                continue
            if isinstance(value, dict) and "class_path" not in value:
                walk(value, f"{where}/{key}")
            else:
                out[f"{where}/{key}"] = value

    walk(args, prefix)
    return out

class LogConfigCallback(SaveConfigCallback):
    """Sends the full resolved config to the experiment logger (and the W&B run files)."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        logger = trainer.logger
        if logger is None:
            return
        text = self.parser.dump(self.config, skip_none=False)
        config = yaml.safe_load(text)
        logger.log_hyperparams({"cli": config, "name": config.get("name"), **flat_settings(config.get("data"), "data")})
        run_dir = getattr(getattr(logger, "experiment", None), "dir", None)
        if isinstance(run_dir, str) and os.path.isdir(run_dir):
            atomic_write_bytes(Path(run_dir, self.config_filename), text.encode())

    def on_save_checkpoint(self, trainer: Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Record the experiment name beside the W&B run (``ResumeState`` writes its id and group), so
        later test and predict runs can join it.
        """
        checkpoint.setdefault(RUN_KEY, {})["name"] = self.config.get("name")


class ConfigError(CLIError):
    """A class of the config refused its arguments; the message is the class's own."""


def _root_cause(error: BaseException) -> BaseException:
    """The innermost cause: jsonargparse wraps a class's ValueError in "Does not validate against any
    of the Union subtypes" errors, which would otherwise be the last line printed.
    """
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


_UNION_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
                "- Expected a <class 'NoneType'>")


def one_line_parser_error(message: str) -> str:
    """The parser's message without jsonargparse's Union scaffolding (the subtypes tried, the value echoed), on one
    line: ``Parser key "data": ... Parser key "batch_size": Expected a <class 'int'>. Got value: abc``.
    """
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    kept = [ln[2:] if ln.startswith("- ") else ln for ln in lines if not ln.startswith(_UNION_NOISE)]
    return " ".join(kept) or message.strip()


class I2PArgumentParser(LightningArgumentParser):
    """Parse errors end the output with one line (not the whole usage, then a nested Union report)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        from jsonargparse._common import debug_mode_active

        if not self.exit_on_error or debug_mode_active():
            super().error(message, ex)
        self._logger.error(message)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(f"tip: `{prog} --help` lists the options\n{prog}: error: {one_line_parser_error(message)}\n")
        sys.exit(2)


class I2PCLI(LightningCLI):
    """LightningCLI with the project's links, defaults and resume rules (``i2p/cli/resume.py``)."""

    #: print the summary block (best metric, checkpoints, W&B run) after ``fit``
    fit_summary: bool = True

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's, less ``predict`` (``i2p predict`` reads files, see i2p/cli/predict.py)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="Experiment name: checkpoints go to runs/<name>/checkpoints (unless checkpoint.dirpath is set) "
            "and the W&B run is called <name>. Default: the --config file (experiments/a/b.yaml -> a/b).",
        )
        parser.add_argument(
            "--allow_fresh",
            type=bool,
            default=False,
            help="With --ckpt_path last: start the run from scratch when it has no checkpoint yet (default: an "
            "error). Lets a cluster script repeat one command on every (re)start.",
        )
        parser.add_lightning_class_args(Checkpoint, "checkpoint")  # defaults: configs/defaults.yaml
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.target_names", "model.init_args.class_names", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)] if not isinstance(args, dict) else []
        super().parse_arguments(parser, args)

    # ------------------------------------------------------------------ run name and --ckpt_path
    def _apply_run_name(self, cfg: Any) -> None:
        """``name:`` (or the run file's name) -> checkpoint folder and W&B run name."""
        name = cfg.get("name") or default_run_name(cfg.get("config"))
        if not name:
            return
        cfg.name = name
        if cfg.get("checkpoint") is not None and not cfg.checkpoint.get("dirpath"):
            cfg.checkpoint.dirpath = str(Path(self._runs_root(cfg)) / name / "checkpoints")
        init = getattr(cfg.trainer.get("logger"), "init_args", None)
        if init is not None and "name" in init and not init.get("name"):
            init.name = name

    @staticmethod
    def _runs_root(cfg: Any) -> str:
        init = getattr(cfg.trainer.get("logger"), "init_args", None)
        return str((init.get("save_dir") if init is not None else None) or "runs")

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last``, check the checkpoint, and merge its model settings (only those
        the command did not give; a contradicting architecture is an error). Replaces Lightning's
        version, which lets the checkpoint override explicit flags and reads every tensor to do so.
        """
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        self._apply_run_name(cfg)
        self._resume_run: dict[str, Any] = {}
        self._ckpt_class_names = None
        self._ckpt_slim, self._ckpt_data = False, {}
        ckpt = cfg.get("ckpt_path")
        if not ckpt or ckpt in ("best", "hpc", "registry") or str(ckpt).startswith("registry:") or "://" in str(ckpt):
            return  # Lightning's own keywords, remote files (fsspec)
        if ckpt == "last":
            folder = cfg.checkpoint.get("dirpath") if cfg.get("checkpoint") is not None else None
            if not folder:
                raise CLIError("--ckpt_path last needs a run name to find its checkpoints: give --name or --config")
            path = resolve_last(folder, cfg.get("name"), self._runs_root(cfg), bool(cfg.get("allow_fresh")))
            cfg.ckpt_path = str(path) if path is not None else None
            if path is None:
                print(f"i2p {sub}: run {cfg.get('name')!r} has no checkpoint in {folder} yet: starting it fresh "
                      "(--allow_fresh)", file=sys.stderr)
                return
        checkpoint = peek_checkpoint(cfg.ckpt_path)
        self._resume_run = dict(checkpoint.get(RUN_KEY) or {})
        self._ckpt_slim = SLIM_KEY in checkpoint  # frozen tensors omitted: rebuilt from `pretrained`
        self._ckpt_data = dict(checkpoint.get("datamodule_hyper_parameters") or {})
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        self._ckpt_class_names = hparams.get("class_names")
        if not hparams:
            return
        class_path, take = model_overrides(cfg.get("model"), hparams, self._argv, cfg.ckpt_path)
        if class_path and take:
            self.config = self.parser.parse_object({sub: {"model": {"class_path": class_path, "init_args": take}}},
                                                   self.config)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        init = getattr(cfg.get("model"), "init_args", None)
        if self.subcommand in ("validate", "test"):
            self._take_preprocessing(cfg)
        slim = getattr(self, "_ckpt_slim", False)  # a slim checkpoint rebuilds its frozen tensors from `pretrained`
        if cfg.get("ckpt_path") and init is not None and init.get("pretrained") and not slim:
            init.pretrained = False  # the checkpoint holds the weights: no 2D file, no download
        self._wandb_links(cfg)

    def instantiate_classes(self) -> None:
        """Check that ``pretrained: true`` can get its weights before building anything (without the hub
        this fails in seconds, saying what to do), then build; a class refusing its arguments is one line.
        """
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        init = getattr(cfg.get("model"), "init_args", None)
        if init is not None and init.get("pretrained") is True and init.get("backbone") and self._needs_2d(init):
            from models.weights import WeightsUnavailable, hub_weights_file

            try:
                hub_weights_file(init.backbone)
            except WeightsUnavailable as e:
                raise SystemExit(f"i2p {self.subcommand}: {e}") from None
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as e:
            cause = _root_cause(e)
            if cause is e and "Does not validate against any of the Union subtypes" not in str(e):
                raise
            raise ConfigError(f"{type(cause).__name__}: {cause}") from cause

    def after_instantiate_classes(self) -> None:
        stored = getattr(self, "_ckpt_class_names", None)
        data_names = getattr(getattr(self, "datamodule", None), "class_names", None)
        if stored is not None and data_names is not None and list(stored) != list(data_names):
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            raise CLIError(f"{cfg.get('ckpt_path')} was trained on the classes {list(stored)}, but the data has "
                           f"{list(data_names)}: the predictions would be named wrongly")
        super().after_instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        cfg = self._get(self.config_init, "trainer", default={})
        plugins = cfg.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if cfg.get("sync_batchnorm"):  # Lightning's torch.nn.SyncBatchNorm cannot take SparseTensors
            from models.sync_batchnorm import SparseSyncBatchNorm

            if not any(isinstance(p, SparseSyncBatchNorm) for p in plugins):
                plugins.append(SparseSyncBatchNorm())
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # checkpoints renamed into place, never half-written
        if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
            plugins.append(SLURMEnvironment(auto_requeue=False))  # Checkpoint saves and requeues on SIGUSR1
        kwargs["plugins"] = plugins
        callbacks = list(cfg.get("callbacks") or [])
        if cfg.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(choose_progress_bar())  # Rich on a terminal, plain lines in a log file
        if not any(isinstance(c, ResumeState) for c in callbacks):
            callbacks.append(ResumeState())
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    @staticmethod
    def _needs_2d(init: Any) -> bool:
        """Whether the model's regime loads its 2D weights (``scratch`` does not)."""
        from models.finetune import REGIMES

        regime = REGIMES.get(str(init.get("regime", "io")))
        return regime is None or regime.needs_pretrained

    def _take_preprocessing(self, cfg: Any) -> None:
        """validate/test from a checkpoint: take the preprocessing it was trained with (the DataModule
        hyper-parameters it stores) where the config differs, saying so.
        """
        from datamodules.base import PREPROCESSING

        data = getattr(cfg.get("data"), "init_args", None)
        stored = getattr(self, "_ckpt_data", {})
        if data is None:
            return
        for key in PREPROCESSING:
            if key in stored and key in data and data[key] != stored[key]:
                print(f"[i2p] {key} {stored[key]!r} from the checkpoint (the config says {data[key]!r})")
                data[key] = stored[key]

    def _wandb_links(self, cfg: Any) -> None:
        """W&B runs of one experiment share a group (its ``name``) and say what they are (``job_type``:
        fit, validate, test), so a test run sits beside its fit run instead of apart under the same name; a
        resumed fit continues the W&B run its checkpoint names.
        """
        logger = getattr(cfg.get("trainer"), "get", lambda _k: None)("logger")
        init = getattr(logger, "init_args", None)
        wandb_id = getattr(self, "_resume_run", {}).get("wandb_id")
        if self.subcommand == "fit" and wandb_id and init is not None and "id" in init and not init.get("id"):
            init.id = wandb_id
        if init is None or "job_type" not in init:
            return
        if not init.get("job_type"):
            init.job_type = self.subcommand
        if not init.get("group") and cfg.get("name"):
            init.group = cfg.get("name")

    def after_fit(self) -> None:
        """The summary block: best metric, checkpoint paths, W&B run, wall time."""
        if self.fit_summary and self.trainer.is_global_zero:
            seconds = time.time() - getattr(self, "_fit_started", time.time())
            print_summary(run_summary(self.trainer, seconds=seconds))

    def before_fit(self) -> None:
        self._fit_started = time.time()


def run_lightning(args: Sequence[str] | None = None, cli_class: type[I2PCLI] = I2PCLI, description: str = "",
                  **kwargs: Any) -> I2PCLI:
    """Build (and by default run) the LightningCLI; ``args=None`` reads ``sys.argv``."""
    kwargs.setdefault("save_config_callback", LogConfigCallback)
    kwargs.setdefault("save_config_kwargs", {"save_to_log_dir": False, "config_filename": "i2p_config.yaml"})
    kwargs.setdefault("auto_configure_optimizers", False)
    kwargs.setdefault("parser_class", I2PArgumentParser)
    quiet_known_warnings()
    defaults = {"default_config_files": [str(DEFAULTS)]}
    kwargs.setdefault("parser_kwargs", {"description": description, "formatter_class": HelpFormatter, "prog": "i2p",
                                        **{c: defaults for c in SUBCOMMANDS}})
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
