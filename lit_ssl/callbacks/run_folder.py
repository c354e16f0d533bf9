"""Run-folder conventions: where a run's outputs land, and exporting at the end of fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

__all__ = ["RUNS_DIR", "ExportOnFitEnd", "run_dir"]

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

    SSL modules (with ``export_backbone``) write ``backbone.safetensors`` + ``.json``;
    classifiers (with ``to_onnx``) write ``classifier.onnx``.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        from lit_ssl.classify.classifier import DefectClassifier

        folder = run_dir(trainer)
        if isinstance(pl_module, DefectClassifier):
            path = pl_module.to_onnx(folder / "classifier.onnx")
        elif hasattr(pl_module, "export_backbone"):
            path = pl_module.export_backbone(folder / "backbone.safetensors")
        else:
            return
        print(f"Exported {path}")
