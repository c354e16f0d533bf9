"""``AnomalyDetector``: defects found and located from good images only (PatchCore-style).

Fit builds a memory bank of locally aggregated patch features of the good training images
(no gradient steps), keeps a greedy coreset of it, and scores a test image by each patch's
distance to the nearest good patch: an anomaly map upsampled to the input and an image score
(the map's maximum). The decision threshold is chosen on the validation split's good images
at a target false-alarm rate, never on test.

Test reports image AUROC/AP and, where the data has masks, pixel AUROC and AUPRO
(``lit_ssl.anomaly.aupro``), and saves figures into ``<run>/figures`` when the trainer has a
logger; predict writes ``predictions.csv`` and map PNGs (``lit_ssl.anomaly.predictions``);
``to_onnx`` exports the bank inside the graph (``lit_ssl.anomaly.export``).

Images are scored at the size the bank was built from (``input_size``, in the checkpoint):
another size is refused with the fix (``lit_ssl.input_size``). Broken (non-finite) features or
validation scores are refused rather than stored as a bank or a NaN threshold. The bank
build shows progress when it runs long and stops on SIGTERM (Lightning's flag, checked by
the coreset and scoring loops), keeping the bank empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryROC

from lit_ssl import checkpoints
from lit_ssl.anomaly.aupro import AUPRO
from lit_ssl.anomaly.memory_bank import StopRequested, greedy_coreset
from lit_ssl.anomaly.model import DetectorModel
from lit_ssl.anomaly.scoring import check_layers, check_neighbourhood
from lit_ssl.backbone import Backbone
from lit_ssl.backbone.loading import resolve_backbone
from lit_ssl.data.batch import as_batch
from lit_ssl.distributed import gather_rows
from lit_ssl.per_type import PerTypeEvidence, data_type_names, log_per_type, name_types
from lit_ssl.torch_model import AroundTorchModel, flatten_child_keys

__all__ = ["AnomalyDetector", "false_alarm_threshold"]

FIGURE_IMAGES = 6  # worst and best test images shown in the figures


def false_alarm_threshold(good_scores: Tensor, rate: float) -> Tensor:
    """The lowest threshold that flags at most ``rate`` of these good images.

    Under the decision rule ``score > threshold`` (:mod:`lit_ssl.decision`): the threshold
    is the ``(floor(rate * n) + 1)``-th highest good score, so only the good images scoring
    strictly higher, at most ``floor(rate * n)`` of them, are flagged.

    Example:
        >>> false_alarm_threshold(torch.arange(100.0), 0.05)
        tensor(94.)
    """
    ordered = good_scores.float().sort(descending=True).values
    allowed = int(rate * ordered.numel())  # images that may be flagged
    return ordered[min(allowed, ordered.numel() - 1)]


_NOT_FINITE = (
    "the detector's scores on the {what} are not finite (NaN/inf): the backbone weights are "
    "broken.\nCheck --model.weights (or the checkpoint) and fit the detector again."
)


def _check_finite_scores(scores: Tensor) -> None:
    """Refuse non-finite validation scores (one sync per validation epoch)."""
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(_NOT_FINITE.format(what="validation images"))


def _keep_top(kept: tuple[Tensor, ...], new: tuple[Tensor, ...], k: int) -> tuple[Tensor, ...]:
    """The ``k`` rows of ``kept + new`` with the largest first field (batched, on the device)."""
    merged = [torch.cat([a, b]) for a, b in zip(kept, new, strict=True)]
    order = merged[0].topk(min(k, merged[0].numel())).indices
    return tuple(m[order] for m in merged)


class AnomalyDetector(AroundTorchModel, checkpoints.SafeCheckpointing, L.LightningModule):
    """Anomaly maps and scores from a memory bank of good patch features.

    Args:
        backbone: timm name or ``Backbone``; the self-supervised one is the point
            (``weights=`` an ``export_backbone`` file or an SSL checkpoint).
        weights: backbone weights (see ``DefectClassifier``).
        in_chans: input channels; ``None``: from the weights, else 3.
        image_size: input size for fixed-size architectures (ViTs).
        layers: distinct indices of the backbone stages whose feature maps are used (timm
            ``forward_intermediates`` indices, ``0 .. len(feature_info) - 1``: 0..4 for a
            ResNet; PatchCore takes two middle stages).
        neighbourhood: side of the local average over each feature map, a positive odd
            integer (3 in PatchCore; 1: no averaging).
        coreset_fraction: share of the good patch features kept in the bank.
        false_alarm_rate: share of good validation images the threshold may flag.
        save_figures: at test end, write anomaly-map overlays of the worst and best test
            images and the ROC curve into ``<run>/figures`` (when the trainer has a logger).
        write_predictions: ``trainer.predict`` writes ``predictions.csv`` and the flagged
            images' map PNGs into the run folder (``AnomalyPredictionWriter``).

    Example:
        >>> detector = AnomalyDetector("test_resnet", coreset_fraction=0.5)
        >>> detector.add_good(torch.rand(4, 3, 32, 32)); detector.build_bank()
        >>> anomaly_map, score = detector(torch.rand(2, 3, 32, 32))
        >>> tuple(anomaly_map.shape), tuple(score.shape)
        ((2, 1, 32, 32), (2,))
    """

    module_kind = "AnomalyDetector"  # the checkpoint marker

    def __init__(
        self,
        backbone: str | Backbone | None = "resnet18",
        weights: str | None = None,
        in_chans: int | None = None,
        image_size: int | None = None,
        layers: tuple[int, ...] = (1, 2),
        neighbourhood: int = 3,
        coreset_fraction: float = 0.1,
        false_alarm_rate: float = 0.01,
        save_figures: bool = True,
        write_predictions: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}.")
        check_neighbourhood(neighbourhood)
        backbone = resolve_backbone(backbone, weights, in_chans, image_size)
        check_layers(backbone, layers)
        in_chans = backbone.in_chans  # the logged hparams must agree with the datamodule's
        self.save_hyperparameters(ignore=["backbone", "image_size"])
        self.hparams.update(backbone=backbone.name, in_chans=backbone.in_chans, weights=None)
        self.model = DetectorModel(backbone, layers, neighbourhood)
        flatten_child_keys(self)  # checkpoints keep backbone.*, memory_bank, threshold, ...
        self.automatic_optimization = False
        self._good: list[Tensor] = []
        self._val: list[tuple[Tensor, Tensor]] = []
        self.image_auroc = BinaryAUROC()
        self.image_ap = BinaryAveragePrecision()
        self.image_roc = BinaryROC()
        self.pixel_auroc = BinaryAUROC()
        self.aupro = AUPRO(max_fpr=0.3)
        self.test_types = PerTypeEvidence()  # named at test start, from the data
        self._shown: dict[str, tuple[Tensor, ...]] = {}

    # ------------------------------------------------------------------ the torch model's parts
    @property
    def memory_bank(self) -> Tensor:
        """The bank of good patch features ``(N, C)`` (empty before fit)."""
        return self.model.memory_bank

    @memory_bank.setter
    def memory_bank(self, bank: Tensor) -> None:
        self.model.memory_bank = bank

    def patch_features(self, images: Tensor) -> Tensor:
        """Locally aggregated patch features ``(B, C, h, w)`` of the chosen stages."""
        return self.model.patch_features(images)

    def add_good(self, images: Tensor) -> None:
        """Add good images' patch features to the (not yet subsampled) bank."""
        self.model.record_size(images)  # host-side shapes only: no device sync
        with torch.no_grad():
            features = self.model.patch_features(images)
        self._good.append(features.permute(0, 2, 3, 1).flatten(0, 2))

    def build_bank(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Keep a greedy coreset of the collected good patch features as the memory bank.

        Args:
            should_stop: polled during the coreset selection; default: whether the trainer
                received SIGTERM. When it turns True, ``SIGTERMException`` is raised and the
                bank stays as it was (empty before the first fit): nothing half-built is kept.

        Raises:
            ValueError: the good patch features are not finite (broken backbone weights).
        """
        if not self._good:
            raise RuntimeError("No good images were seen: the memory bank is empty.")
        features = gather_rows(torch.cat(self._good))  # every rank's good patches, one bank
        if not bool(torch.isfinite(features).all()):  # one sync per fit
            self._good.clear()
            raise ValueError(
                "the detector's patch features of the good training images are not finite "
                "(NaN/inf): the backbone weights are broken.\nCheck or re-export --model.weights."
            )
        stop = should_stop if should_stop is not None else self._sigterm_received
        try:
            keep = greedy_coreset(features, self.hparams.coreset_fraction, should_stop=stop)
        except StopRequested:
            self._good.clear()
            raise SIGTERMException() from None
        self.memory_bank = features[keep].contiguous()
        self._good.clear()

    def _sigterm_received(self) -> bool:
        """Lightning's SIGTERM flag (a host-side bool set by its signal handler)."""
        trainer = self._trainer
        return bool(trainer is not None and trainer.received_sigterm)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(anomaly_map (B, 1, H, W), score (B,))`` of float images in [0, 1].

        Raises:
            ValueError: the images are not of the size the bank was built from.
        """
        self.model.check_size(images)
        try:
            return self.model.maps(images, should_stop=self._sigterm_received)
        except StopRequested:
            raise SIGTERMException() from None

    def _require_bank(self) -> None:
        if self.memory_bank.numel() == 0:
            raise RuntimeError(
                "The memory bank is empty: fit the detector first, or pass --ckpt_path "
                "runs/anomaly/version_N/checkpoints/last.ckpt."
            )

    # ------------------------------------------------------------------ Lightning
    def configure_optimizers(self) -> None:
        return None

    def training_step(self, batch, batch_idx: int) -> None:
        batch = as_batch(batch)
        good = batch.labels <= 0  # good (0) or unlabeled (-1): the train split is good images
        self.add_good(batch.views[0][good])

    def on_validation_epoch_start(self) -> None:
        if self._good:  # Lightning validates before on_train_epoch_end: build the bank first
            self.build_bank()

    def on_train_epoch_end(self) -> None:
        if self._good:
            self.build_bank()

    def validation_step(self, batch, batch_idx: int) -> None:
        if self.memory_bank.numel() == 0:  # sanity check before fit has built the bank
            return
        batch = as_batch(batch)
        _, scores = self(batch.views[0])
        self._val.append((scores, batch.labels))

    def on_validation_epoch_end(self) -> None:
        if not self._val or self.memory_bank.numel() == 0:
            self._val.clear()
            return
        scores = torch.cat([s for s, _ in self._val])
        labels = torch.cat([lab for _, lab in self._val])
        self._val.clear()
        good = scores[labels <= 0]
        if good.numel() > 0:
            _check_finite_scores(scores)  # a NaN threshold would pass every image
            self.threshold = false_alarm_threshold(good, self.hparams.false_alarm_rate)
        self.log("val/threshold", self.threshold)

    # ------------------------------------------------------------------ test
    def on_test_epoch_start(self) -> None:
        self._shown = {}
        self._require_finite()
        name_types(self.test_types, data_type_names(self, ()))

    def on_predict_epoch_start(self) -> None:
        self._require_finite()

    def _require_finite(self) -> None:
        """Refuse a bank or threshold with NaN/inf (a checkpoint fit from broken weights);
        one sync per epoch."""
        if not bool(torch.isfinite(self.memory_bank).all()) or bool(self.threshold.isnan()):
            raise ValueError(
                "the detector's memory bank or threshold is not finite (NaN/inf): it was fit "
                "from broken backbone weights.\nFit it again from finite --model.weights."
            )

    def test_step(self, batch, batch_idx: int) -> None:
        self._require_bank()
        batch = as_batch(batch)
        images = batch.views[0]
        anomaly_map, scores = self(images)
        known = batch.labels >= 0
        targets = (batch.labels[known] > 0).long()
        for metric in (self.image_auroc, self.image_ap, self.image_roc):
            metric.update(scores[known], targets)
        types = batch.types if batch.types is not None else batch.labels
        self.test_types.update(scores, self.model.is_defect(scores), types)
        if batch.masks is not None:
            known_pixels = batch.masks >= 0  # -1: a defect image without its mask file
            target = (batch.masks[known_pixels] > 0.5).long()
            self.pixel_auroc.update(anomaly_map[known_pixels], target)
            self.aupro.update(anomaly_map, batch.masks)
        if self._want_figures():
            self._remember_extremes(images[known], anomaly_map[known], scores[known], targets)

    def _remember_extremes(self, images: Tensor, maps: Tensor, scores: Tensor, defect: Tensor):
        """Keep the test images the detector got most wrong / right (device top-k, no sync)."""
        wrongness = torch.where(defect > 0, -scores, scores)  # high: a good part scoring high
        for name, key in (("worst", wrongness), ("best", -wrongness)):
            new = (key, images, maps, scores)
            kept = self._shown.get(name, tuple(t[:0] for t in new))
            self._shown[name] = _keep_top(kept, new, FIGURE_IMAGES)

    def on_test_epoch_end(self) -> None:
        log_per_type(self, self.test_types)
        self.log("test/image_auroc", self.image_auroc.compute())
        self.log("test/image_ap", self.image_ap.compute())
        self.log("test/threshold", self.threshold)
        if self.pixel_auroc.update_count:
            self.log("test/pixel_auroc", self.pixel_auroc.compute())
            self.log("test/aupro", self.aupro.compute())
        roc = self.image_roc.compute() if self._want_figures() else None  # every rank: a sync
        if roc is not None and self._shown:
            auroc = float(self.image_auroc.compute())
            rank_zero_only(self._save_figures)(roc, auroc)
        for metric in (self.image_auroc, self.image_ap, self.image_roc, self.pixel_auroc):
            metric.reset()
        self.aupro.reset()
        self._shown = {}

    def _want_figures(self) -> bool:
        trainer = self._trainer
        return bool(self.hparams.save_figures and trainer is not None and trainer.loggers)

    def _save_figures(self, roc: tuple[Tensor, Tensor, Tensor], auroc: float) -> None:
        from lit_ssl.anomaly.figures import save_test_figures
        from lit_ssl.callbacks.run_folder import run_dir  # local: trainer.log_dir is a collective

        fpr, tpr, _ = roc
        worst, best = (self._shown[name][1:] for name in ("worst", "best"))
        save_test_figures(worst, best, (fpr, tpr, auroc), run_dir(self.trainer) / "figures")

    # ------------------------------------------------------------------ predict
    def predict_step(self, batch, batch_idx: int) -> list[dict[str, Any]]:
        """Per-image dicts: path, anomaly_score, decision ("defect" if the score is above the
        stored threshold, else "good"), label (class name when known); flagged images also
        carry their image and map for the map PNG (``AnomalyPredictionWriter`` takes them)."""
        from lit_ssl.anomaly.predictions import IMAGE_KEY, MAP_KEY, SCALE_KEY

        self._require_bank()
        batch = as_batch(batch)
        images = batch.views[0]
        anomaly_map, scores = self(images)
        flagged = self.model.is_defect(scores).tolist()
        values = scores.tolist()
        if not all(math.isfinite(v) for v in values):  # host values: no extra sync
            raise ValueError(_NOT_FINITE.format(what="images to predict"))
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None) or []
        scale = self._map_scale()
        rows = []
        for i, (score, label) in enumerate(zip(values, batch.labels.tolist(), strict=True)):
            row = {
                "path": batch.paths[i] if batch.paths is not None else None,
                "anomaly_score": score,
                "decision": "defect" if flagged[i] else "good",
                "label": names[label] if 0 <= label < len(names) else None,
            }
            if flagged[i]:
                row.update({IMAGE_KEY: images[i].cpu(), MAP_KEY: anomaly_map[i].cpu()})
                row[SCALE_KEY] = scale if scale is not None else float(anomaly_map[i].max())
            rows.append(row)
        return rows

    def _map_scale(self) -> float | None:
        """The map value drawn hottest: twice the threshold (None when there is none)."""
        threshold = float(self.threshold)
        return 2.0 * threshold if threshold != float("inf") and threshold > 0 else None

    def configure_callbacks(self) -> list[L.Callback]:
        """``predictions.csv`` + ``heatmaps/`` in the run folder after ``trainer.predict``."""
        from lit_ssl.anomaly.predictions import AnomalyPredictionWriter

        existing = self._trainer.callbacks if self._trainer is not None else []
        if not self.hparams.write_predictions or any(
            isinstance(cb, AnomalyPredictionWriter) and cb.path is not None for cb in existing
        ):
            return []
        return [AnomalyPredictionWriter()]

    # ------------------------------------------------------------------ export
    def export_metadata(self) -> dict[str, Any]:
        """What a deployment needs besides the graph (``anomaly.export.detector_metadata``)."""
        from lit_ssl.anomaly.export import detector_metadata

        return detector_metadata(self)

    def to_onnx(self, path: str | Path, image_size: int | Sequence[int] | None = None) -> Path:
        """Export to ONNX with the memory bank inside (see ``lit_ssl.anomaly.export``)."""
        from lit_ssl.anomaly.export import to_onnx

        return to_onnx(self, path, image_size=image_size)

    def export(self, folder: Path) -> Path:
        """Write the run's deployable detector into ``folder`` (``ExportOnFitEnd`` calls it):
        ``anomaly_detector.onnx``, the memory bank inside; returns its path."""
        from lit_ssl.anomaly.export import ANOMALY_ONNX

        return self.to_onnx(Path(folder) / ANOMALY_ONNX)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Size the bank buffer to the stored one before the state dict is loaded
        (``load_from_checkpoint`` is the safe one of ``lit_ssl.checkpoints``)."""
        state = checkpoint.get("state_dict", {})
        bank = state.get("memory_bank")
        if bank is not None:
            self.memory_bank = torch.zeros_like(bank)
        state.setdefault("input_size", torch.zeros(2, dtype=torch.long))  # older checkpoints
