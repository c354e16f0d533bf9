"""LightningCLI subclass behind ``lit-ssl fit|validate|test|predict``."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_ssl.callbacks.data_wait import DataWait
from lit_ssl.callbacks.run_folder import RUNS_DIR, ExportOnFitEnd
from lit_ssl.checkpoints import (
    CorruptCheckpointError,
    checkpoint_is_intact,
    newest_intact_checkpoint,
    verify_checkpoint_file,
)
from lit_ssl.cli.errors import LitSSLError
from lit_ssl.cli.precision import auto_precision, cpu_precision

__all__ = ["LitSSLCLI", "PeriodicLastCheckpoint", "newest_last_checkpoint"]

CHECKPOINT_EVERY_N_STEPS = 200
_VERSION = re.compile(r"^version_(\d+)$")
_LIGHTNING_KEYWORDS = ("best", "hpc", "registry")
_RUN_LOGGER = "lit_ssl.callbacks.run_folder.RunCSVLogger"
_LIGHTNING_CSV_LOGGERS = (
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.csv_logs.CSVLogger",
)
# Model settings a checkpoint fixes: an explicit --model.<key> that disagrees is refused.
_FIXED_BY_CHECKPOINT = ("backbone", "in_chans")


class PeriodicLastCheckpoint(Callback):
    """Refresh the checkpoint callback's ``last.ckpt`` during an epoch and on Ctrl-C / SIGTERM.

    ``ModelCheckpoint`` saves at the end of an epoch; a run stopped (killed, pre-empted) during
    its first long epoch would otherwise leave nothing to resume from. Errors (a NaN loss, a
    bug) do not overwrite ``last.ckpt``: it keeps the last good state.

    Args:
        every_n_steps: optimizer steps between saves; 0 saves only on Ctrl-C / SIGTERM.
    """

    def __init__(self, every_n_steps: int = CHECKPOINT_EVERY_N_STEPS) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps={every_n_steps}: use 0 (off) or a positive count.")
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0:
            self._save(trainer)

    def on_exception(self, trainer: Trainer, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt | SIGTERMException) and trainer.global_step:
            self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        checkpoint = trainer.checkpoint_callback
        step = trainer.global_step
        if step == self._saved_step or checkpoint is None or not checkpoint.save_last:
            return
        if checkpoint.dirpath is None or trainer.sanity_checking:
            return
        last = f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        # ModelCheckpoint keeps writing its last file there and never versions it to last-v1.
        checkpoint.last_model_path = checkpoint.last_model_path or str(
            Path(checkpoint.dirpath) / last
        )
        trainer.save_checkpoint(checkpoint.last_model_path, checkpoint.save_weights_only)
        self._saved_step = step


def newest_last_checkpoint(runs: str | Path) -> Path | None:
    """The ``last.ckpt`` of the newest ``<runs>/version_<n>/`` that has one, else ``None``."""
    found = []
    for path in Path(runs).glob("version_*/checkpoints/last*.ckpt"):
        version = _VERSION.match(path.parent.parent.name)
        if version and re.fullmatch(r"last(-v\d+)?\.ckpt", path.name):
            found.append((int(version.group(1)), path.stat().st_mtime, path))
    return max(found)[2] if found else None


class LitSSLCLI(LightningCLI):
    """LightningCLI with lit_ssl's defaults.

    * model and data are given as ``class_path``/``init_args`` (any LightningModule or
      DataModule, so users can plug in their own classes);
    * every run writes to ``runs/<recipe>/version_<n>/``: ``checkpoints/``, ``metrics.csv``,
      ``config.yaml`` (the resolved config), figures and the exported weights;
    * ``last.ckpt`` is refreshed every ``--checkpoint_every_n_steps`` steps and on Ctrl-C /
      SIGTERM; ``--ckpt_path last`` resumes the newest ``runs/<recipe>/version_*/`` in that
      same folder (an error if there is none; if its ``last.ckpt`` is truncated, the newest
      intact checkpoint next to it, saying so) and appends to its ``metrics.csv``;
      checkpoints load with ``weights_only=True`` and are refused if damaged or non-finite;
      ``--model.backbone`` / ``--model.in_chans`` that disagree with the checkpoint are refused.

    Args:
        recipe: run-folder name (the recipe file's stem).
        run_record: filled with ``folder`` (this run's version folder, rank 0 only) and
            ``resumed``, so the caller can remove an empty folder after a failure.
        **kwargs: forwarded to ``LightningCLI``.
    """

    def __init__(
        self, recipe: str = "default", run_record: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self.recipe = recipe
        self.run_record = {} if run_record is None else run_record
        defaults = {
            "precision": auto_precision(),  # bf16-mixed on a GPU, 32-true on CPU
            "default_root_dir": f"{RUNS_DIR}/{recipe}",
            "logger": {
                "class_path": _RUN_LOGGER,
                "init_args": {"save_dir": RUNS_DIR, "name": recipe},
            },
        }
        defaults.update(kwargs.pop("trainer_defaults", {}) or {})
        parser_kwargs = {"exit_on_error": False, **(kwargs.pop("parser_kwargs", {}) or {})}
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=defaults,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=parser_kwargs,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int,
            default=CHECKPOINT_EVERY_N_STEPS,
            help="Refresh last.ckpt every N optimizer steps (0: only at epoch end / on SIGTERM).",
        )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse as Lightning does; remember the command line (which options were explicit)."""
        given = sys.argv[1:] if args is None else args
        self._argv = [a for a in given if isinstance(a, str)] if isinstance(given, list) else []
        super().parse_arguments(parser, args)

    def _subcommand_config(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path`` and refuse an unsafe, damaged or conflicting checkpoint before
        Lightning reads its hyperparameters.

        ``last`` becomes the newest run folder's ``last.ckpt`` (or the newest intact checkpoint
        next to a truncated one). Lightning then parses the checkpoint's ``hyper_parameters``
        into the config, which imports any ``class_path`` they name: ``verify_checkpoint_file``
        allows only lit_ssl's own classes (and tensors, with ``weights_only=True``). The stored
        model settings replace the configured ones, so an explicit ``--model.backbone`` or
        ``--model.in_chans`` that disagrees with them is refused rather than ignored.
        """
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and ckpt_path not in _LIGHTNING_KEYWORDS and "://" not in str(ckpt_path):
            path = self._checkpoint_file(str(ckpt_path), self._runs_folder(config))
            config.ckpt_path = str(path)
            checkpoint = verify_checkpoint_file(path)
            self._check_against_checkpoint(config, checkpoint.get("hyper_parameters") or {}, path)
        super()._parse_ckpt_path()

    def _explicit(self, key: str) -> bool:
        """Whether ``--model.<key>`` was given on the command line."""
        options = (f"--model.{key}", f"--model.init_args.{key}")
        return any(arg.split("=", 1)[0] in options for arg in getattr(self, "_argv", []))

    def _check_against_checkpoint(self, config: Any, stored: dict[str, Any], path: Path) -> None:
        """Refuse model/data settings that contradict what the checkpoint was fit with."""
        model = getattr(config.get("model"), "init_args", None) or {}
        for key in _FIXED_BY_CHECKPOINT:
            value, fixed = model.get(key), stored.get(key)
            if fixed is None or value is None or not self._explicit(key) or value == fixed:
                continue
            raise LitSSLError(
                f"--model.{key} {value} conflicts with {path}, which was fit with {key}={fixed} "
                f"(a checkpoint's {key} cannot change).\nDrop --model.{key} to use the "
                f"checkpoint's, or start a new run without --ckpt_path to train with {key}={value}."
            )
        data = getattr(config.get("data"), "init_args", None) or {}
        in_chans, fixed = data.get("in_chans"), stored.get("in_chans")
        if in_chans is not None and isinstance(fixed, int) and in_chans != fixed:
            raise LitSSLError(
                f"{path} was fit with in_chans={fixed}, but --data.in_chans is {in_chans}.\n"
                f"Give --data.in_chans {fixed} (the checkpoint's), or fit a new model on "
                f"{in_chans}-channel images."
            )

    def before_instantiate_classes(self) -> None:
        """Settle the precision on the CPU, resolve ``--ckpt_path`` (``last`` = newest run
        folder's) and load weights only."""
        config = self._subcommand_config()
        explicit = any(a.startswith("--trainer.precision") for a in self._argv)
        trainer = config.trainer
        trainer.precision = cpu_precision(trainer.precision, trainer.accelerator, explicit)
        if "weights_only" in config and config.weights_only is None:
            config.weights_only = True
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None or ckpt_path in _LIGHTNING_KEYWORDS or "://" in str(ckpt_path):
            return
        runs = self._runs_folder(config)
        path = self._checkpoint_file(str(ckpt_path), runs)
        config.ckpt_path = str(path)
        print(f"Resuming from {path}" if self.subcommand == "fit" else f"Loading {path}")
        version = _VERSION.match(path.parent.parent.name)
        same_runs = path.parent.name == "checkpoints" and _same(path.parent.parent.parent, runs)
        if self.subcommand == "fit" and version and same_runs:
            self._continue_version(config, int(version.group(1)))

    def _checkpoint_file(self, ckpt_path: str, runs: Path | None) -> Path:
        where = f"{runs}/version_*/checkpoints/" if runs else "the run folders"
        if ckpt_path == "last":
            path = newest_last_checkpoint(runs) if runs else None
            if path is None:
                raise LitSSLError(
                    f"--ckpt_path last: no last.ckpt in {where} to resume from.\n"
                    "Start a new run without --ckpt_path, or give the checkpoint file."
                )
            fit = self.config.get("subcommand") == "fit"
            return _intact_or_fallback(path, "resuming from" if fit else "using")
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"--ckpt_path {ckpt_path}: no such checkpoint file.\n"
                f"Give a .ckpt written by lit-ssl fit, or 'last' for the newest in {where}."
            )
        return path

    def _runs_folder(self, config: Any) -> Path | None:
        """``<save_dir>/<name>`` of the configured CSV/TensorBoard logger (``runs/<recipe>``)."""
        init_args = _logger_init_args(config)
        if init_args is None:
            root = config.trainer.get("default_root_dir")
            return Path(root) if root else None
        return Path(init_args.get("save_dir") or RUNS_DIR) / str(init_args.get("name") or "")

    def _continue_version(self, config: Any, version: int) -> None:
        init_args = _logger_init_args(config)
        if init_args is None:
            return
        if config.trainer.logger.class_path in _LIGHTNING_CSV_LOGGERS:
            config.trainer.logger.class_path = _RUN_LOGGER  # appends to metrics.csv
        init_args.version = version
        self.run_record["resumed"] = True
        # Resuming into the folder on purpose: its existing files are expected.
        for text in (
            "Experiment logs directory",
            "Checkpoint directory .* exists and is not empty",
        ):
            warnings.filterwarnings("ignore", message=text)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add export-at-end and periodic last.ckpt to whatever the recipe asked for."""
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(cb, ExportOnFitEnd) for cb in trainer.callbacks):
            trainer.callbacks.append(ExportOnFitEnd())
        if not any(isinstance(cb, DataWait) for cb in trainer.callbacks):
            trainer.callbacks.append(DataWait())  # perf/data_wait in metrics.csv
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.save_last is None:
            checkpoint.save_last = True  # runs/<recipe>/version_N/checkpoints/last.ckpt
        every = self._subcommand_config().get("checkpoint_every_n_steps")
        if checkpoint is not None and not any(
            isinstance(cb, PeriodicLastCheckpoint) for cb in trainer.callbacks
        ):
            trainer.callbacks.append(PeriodicLastCheckpoint(every or 0))
        self._record_run_folder(trainer)
        return trainer

    def _record_run_folder(self, trainer: Trainer) -> None:
        """Note this run's version folder (rank 0; no collective, nothing created)."""
        logger = trainer.loggers[0] if trainer.loggers else None
        if trainer.is_global_zero and isinstance(logger, CSVLogger | TensorBoardLogger):
            folder = Path(logger.log_dir)
            self.run_record["folder"] = folder
            # runs/ and runs/<recipe>/ this run creates: removed too if it leaves nothing.
            self.run_record["new_parents"] = [p for p in folder.parents[:2] if not p.exists()]


def _intact_or_fallback(last: Path, doing: str) -> Path:
    """``last`` if it is a complete checkpoint, else the newest intact one next to it (said in
    one line); a ``CorruptCheckpointError`` if there is none."""
    if checkpoint_is_intact(last):
        return last
    earlier = newest_intact_checkpoint(last.parent, exclude=last)
    if earlier is None:
        raise CorruptCheckpointError(
            f"{last} is truncated or corrupt (a run killed while writing it?) and no intact "
            "checkpoint is next to it.\nStart a new run without --ckpt_path."
        )
    print(f"{last.name} is truncated or corrupt; {doing} {earlier.name} instead")
    return earlier


def _logger_init_args(config: Any) -> Any:
    """The ``init_args`` of a configured CSVLogger/TensorBoardLogger, else ``None``."""
    logger = config.trainer.get("logger")
    class_path = getattr(logger, "class_path", None) or ""
    if class_path.rsplit(".", 1)[-1] not in ("CSVLogger", "RunCSVLogger", "TensorBoardLogger"):
        return None
    return getattr(logger, "init_args", None)


def _same(a: Path, b: Path | None) -> bool:
    return b is not None and a.resolve() == b.resolve()
