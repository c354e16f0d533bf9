"""``predictions.csv`` and anomaly-map PNGs of ``trainer.predict`` with an ``AnomalyDetector``.

``AnomalyDetector.predict_step`` returns one dict per image: ``path``, ``anomaly_score``,
``decision`` (``"defect"`` if the score is above the stored threshold, else ``"good"``),
``label`` (the class name when known) and, for flagged images only, the image and its map
under private keys. :class:`AnomalyPredictionWriter` (added by the detector itself) saves each
flagged image's overlay as ``<run>/heatmaps/<name>.png`` (named like the classifier's heat
maps, :func:`~lit_ssl.classify.heatmaps.heatmap_name`) as the batches come (the tensors are
then dropped), records it in the ``heatmap`` column (relative to the run folder), and
writes ``predictions.csv`` (+ ``skipped.txt`` for unreadable files) when prediction ends, as
the classifier's ``PredictionsCSVWriter`` does. Under DDP every rank writes its own PNGs into
rank 0's run folder (``trainer.log_dir``, read on every rank) and the rows are gathered; rank
0 writes the CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_ssl.anomaly.figures import overlay, save_overlay_png
from lit_ssl.classify.heatmaps import HEATMAP_DIR, heatmap_name
from lit_ssl.classify.predictions import (
    PREDICTIONS_FILE,
    _gather,
    _write_outputs,
    flatten_predictions,
)

__all__ = ["AnomalyPredictionWriter"]

IMAGE_KEY, MAP_KEY, SCALE_KEY = "_image", "_map", "_scale"


class AnomalyPredictionWriter(BasePredictionWriter):
    """Writes the flagged images' map PNGs per batch and ``predictions.csv`` at the end.

    Args:
        path: output CSV; ``None``: ``predictions.csv`` in the run folder. The PNGs go to
            ``heatmaps/`` next to the CSV.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = None if path is None else Path(path)
        self._rows: list[dict[str, Any]] = []
        self._folder: Path | None = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []  # every rank runs this: trainer.log_dir is a collective
        self._folder = (
            self.path.parent if self.path else Path(trainer.log_dir or trainer.default_root_dir)
        )

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = flatten_predictions([prediction])
        root = getattr(getattr(trainer, "datamodule", None), "root", None)
        for i, row in enumerate(rows):
            image, anomaly_map, scale = (row.pop(k, None) for k in (IMAGE_KEY, MAP_KEY, SCALE_KEY))
            row["heatmap"] = ""
            if image is None:
                continue
            index = batch_indices[i] if batch_indices else len(self._rows) + i
            name = f"{HEATMAP_DIR}/{heatmap_name(row.get('path'), root, index)}"
            save_overlay_png(
                image, overlay(image[None], anomaly_map[None], scale)[0], self._folder / name
            )
            row["heatmap"] = name
        self._rows.extend(rows)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = _gather(self._rows)  # a collective: every rank calls it
        path = self.path or self._folder / PREDICTIONS_FILE
        skipped = list(getattr(trainer.datamodule, "skipped_files", None) or [])
        self._rows = []
        if trainer.is_global_zero:
            _write_outputs(rows, path, skipped, list_skipped=self.path is None)
            flagged = sum(1 for row in rows if row["heatmap"])
            print(
                f"Wrote {flagged} anomaly map(s) of flagged images to {path.parent / HEATMAP_DIR}"
            )
