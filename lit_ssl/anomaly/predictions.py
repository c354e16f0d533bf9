"""``predictions.csv`` and anomaly-map PNGs of ``trainer.predict`` with an ``AnomalyDetector``.

``AnomalyDetector.predict_step`` returns one dict per image: ``path``, ``anomaly_score``,
``decision`` (``"defect"`` if the score is above the stored threshold, else ``"good"``),
``label`` (the class name when known) and, for flagged images only, the image and its map
under private keys. :class:`AnomalyPredictionWriter` (added by the detector itself) saves each
flagged image's overlay as ``<run>/heatmaps/<path>.png`` (named like the classifier's heat
maps, :func:`~lit_ssl.classify.heatmaps.heatmap_name`: the image's folders are kept, so two
images never share a file) as the batches come (the tensors are
then dropped), records it in the ``heatmap`` column (relative to the run folder), and
writes ``predictions.csv`` (+ ``skipped.txt`` for unreadable files) when prediction ends, as
the classifier's ``PredictionsCSVWriter`` does. Under DDP every rank writes its own PNGs into
rank 0's run folder (``trainer.log_dir``, read on every rank) and the rows are gathered; rank
0 writes the CSV.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from lit_ssl.anomaly.figures import overlay, save_overlay_png
from lit_ssl.classify.predictions import PredictionsCSVWriter

__all__ = ["AnomalyPredictionWriter"]

IMAGE_KEY, MAP_KEY, SCALE_KEY = "_image", "_map", "_scale"


class AnomalyPredictionWriter(PredictionsCSVWriter):
    """``PredictionsCSVWriter`` for an ``AnomalyDetector``: flagged images' map PNGs per batch.

    Args:
        path: output CSV; ``None``: ``predictions.csv`` in the run folder. The PNGs go to
            ``heatmaps/`` next to the CSV.
    """

    def add_heatmaps(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        rows: list[dict[str, Any]],
        batch: Any,
        batch_idx: int,
    ) -> list[dict[str, Any]]:
        """Write the overlay of every flagged row (its image and map travel in private keys)."""
        for i, row in enumerate(rows):
            image, anomaly_map, scale = (row.pop(k, None) for k in (IMAGE_KEY, MAP_KEY, SCALE_KEY))
            row["heatmap"] = ""
            if image is not None:
                row["heatmap"], file = self._heatmap_file(trainer, row.get("path"), i)
                save_overlay_png(image, overlay(image[None], anomaly_map[None], scale)[0], file)
        return rows
