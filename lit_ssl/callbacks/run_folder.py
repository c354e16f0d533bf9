"""Run-folder conventions: where a run's outputs land, its metrics log, and exporting at the
end of fit."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["RUNS_DIR", "ExportOnFitEnd", "RunCSVLogger", "run_dir"]

RUNS_DIR = "runs"


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the first logger's version folder, else ``trainer.default_root_dir``.

    Same folder as ``trainer.log_dir`` on rank 0, but read from this process's own logger
    without a collective: ``trainer.log_dir`` broadcasts from rank 0, so rank-0-only code
    calling it hangs or dies under DDP. Other ranks' loggers may not know rank 0's version
    number: write files from rank 0 only (only rank 0 creates the folder here).
    """
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        folder = None
    elif isinstance(logger, CSVLogger | TensorBoardLogger):
        folder = logger.log_dir
    else:
        folder = logger.save_dir
    path = Path(folder or trainer.default_root_dir)
    if trainer.is_global_zero:
        path.mkdir(parents=True, exist_ok=True)
    return path


class ExportOnFitEnd(Callback):
    """Write deployable weights into the run folder when ``fit`` ends (rank 0 only).

    Calls the module's ``export(folder)`` when it has one: ``SSLModule`` writes
    ``backbone.safetensors`` + ``.json``, ``DefectClassifier`` ``classifier.onnx``,
    ``AnomalyDetector`` ``anomaly_detector.onnx``. Rank 0 only and without a collective (the
    folder is :func:`run_dir`'s), so it cannot hang the other ranks.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        export = getattr(pl_module, "export", None)
        if not trainer.is_global_zero or trainer.sanity_checking or not callable(export):
            return
        print(f"Exported {export(run_dir(trainer))}")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it continues an existing ``metrics.csv``.

    Lightning's deletes the file when the folder is not empty, which is exactly the case of a
    resumed run (``--ckpt_path last`` continues in its version folder): the earlier epochs
    were lost. Here the rows stay; the header is read back so that new rows line up with it
    (a new metric key rewrites the file with the wider header, as Lightning does).
    """

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        if not header:  # an empty file (a run killed before its first row): nothing to keep
            self._fs.rm_file(self.metrics_file_path)
            return
        self.metrics_keys = sorted(header)
        if header != self.metrics_keys:  # written by another writer: same columns, sorted
            self._rewrite_with_new_header(self.metrics_keys)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume: rows logged after
    ``--ckpt_path last`` are appended to the earlier epochs' (lit-ssl's default logger).

    Same arguments as Lightning's ``CSVLogger``.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer of ``metrics.csv`` and ``hparams.yaml`` in the version folder."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
