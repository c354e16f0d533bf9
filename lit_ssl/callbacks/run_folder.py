"""Run-folder conventions: where a run's outputs land, and exporting at the end of fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["RUNS_DIR", "ExportOnFitEnd", "run_dir"]

RUNS_DIR = "runs"


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the logger's version folder, else ``trainer.default_root_dir``."""
    path = Path(trainer.log_dir or trainer.default_root_dir)
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
        from lit_ssl.classifier import DefectClassifier

        folder = run_dir(trainer)
        if isinstance(pl_module, DefectClassifier):
            path = pl_module.to_onnx(folder / "classifier.onnx")
        elif hasattr(pl_module, "export_backbone"):
            path = pl_module.export_backbone(folder / "backbone.safetensors")
        else:
            return
        print(f"Exported {path}")
