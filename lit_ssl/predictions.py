"""Per-image predictions of a DefectClassifier as CSV.

``trainer.predict(classifier, loader)`` returns, per batch, a list of per-image dicts
(``path``, ``defect_score``, ``predicted_class``, ``is_defect``, ``label``, ``p_<class>``).
``write_predictions_csv`` flattens that and writes one row per image;
``PredictionsCSVWriter`` does it as a callback at the end of ``trainer.predict``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["PredictionsCSVWriter", "flatten_predictions", "write_predictions_csv"]

FIRST_COLUMNS = ("path", "defect_score", "predicted_class", "is_defect", "label")


def flatten_predictions(predictions: Iterable[Any]) -> list[dict[str, Any]]:
    """Per-image dicts from ``trainer.predict`` output (nested lists of any depth)."""
    rows: list[dict[str, Any]] = []
    for item in predictions:
        if isinstance(item, dict):
            rows.append(item)
        elif isinstance(item, list | tuple):
            rows.extend(flatten_predictions(item))
        else:
            raise TypeError(
                f"Expected per-image prediction dicts (DefectClassifier.predict_step), got "
                f"{type(item).__name__}."
            )
    return rows


def write_predictions_csv(predictions: Iterable[Any], path: str | Path) -> Path:
    """Write one CSV row per image; columns: path, defect_score, predicted_class, ...

    Args:
        predictions: ``trainer.predict`` output of a ``DefectClassifier`` (or its rows).
        path: output CSV file (parent folders are created).

    Returns:
        The written path.
    """
    rows = flatten_predictions(predictions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    extra: list[str] = []
    for row in rows:
        extra.extend(k for k in row if k not in FIRST_COLUMNS and k not in extra)
    present = [c for c in FIRST_COLUMNS if any(c in row for row in rows)]
    return present + extra if rows else list(FIRST_COLUMNS)


class PredictionsCSVWriter(BasePredictionWriter):
    """Callback writing ``trainer.predict`` results to a CSV at the end of prediction.

    Args:
        path: output CSV file. Under DDP each rank writes ``<stem>.rank<N>.csv``.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(write_interval="epoch")
        self.path = Path(path)

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        path = self.path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        write_predictions_csv(predictions, path)
