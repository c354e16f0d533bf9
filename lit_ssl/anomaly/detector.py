"""``AnomalyDetector``: defects found and located from good images only (PatchCore-style).

Fit builds a memory bank of locally aggregated patch features of the good training images
(no gradient steps), keeps a greedy coreset of it, and scores a test image by each patch's
distance to the nearest good patch: an anomaly map upsampled to the input and an image score
(the map's maximum). The decision threshold is chosen on the validation split's good images
at a target false-alarm rate, never on test.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from lit_ssl import checkpoints
from lit_ssl.anomaly.memory_bank import greedy_coreset, nearest_distances
from lit_ssl.backbone import Backbone
from lit_ssl.backbone.loading import resolve_backbone
from lit_ssl.data.batch import as_batch
from lit_ssl.distributed import gather_rows

__all__ = ["AnomalyDetector", "false_alarm_threshold"]


def false_alarm_threshold(good_scores: Tensor, rate: float) -> Tensor:
    """The lowest threshold that flags at most ``rate`` of these good images (score > it).

    Example:
        >>> false_alarm_threshold(torch.arange(100.0), 0.05)
        tensor(94.)
    """
    ordered = good_scores.float().sort(descending=True).values
    allowed = int(rate * ordered.numel())  # images that may be flagged
    return ordered[min(allowed, ordered.numel() - 1)]


class AnomalyDetector(checkpoints.SafeCheckpointing, L.LightningModule):
    """Anomaly maps and scores from a memory bank of good patch features.

    Args:
        backbone: timm name or ``Backbone``; the self-supervised one is the point
            (``weights=`` an ``export_backbone`` file or an SSL checkpoint).
        weights: backbone weights (see ``DefectClassifier``).
        in_chans: input channels; ``None``: from the weights, else 3.
        image_size: input size for fixed-size architectures (ViTs).
        layers: indices of the backbone stages whose feature maps are used (timm
            ``forward_intermediates`` indices; PatchCore takes two middle stages).
        neighbourhood: side of the local average over each feature map (3 in PatchCore).
        coreset_fraction: share of the good patch features kept in the bank.
        false_alarm_rate: share of good validation images the threshold may flag.

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
    ) -> None:
        super().__init__()
        if not 0.0 < false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}.")
        backbone = resolve_backbone(backbone, weights, in_chans, image_size)
        in_chans = backbone.in_chans  # the logged hparams must agree with the datamodule's
        self.save_hyperparameters(ignore=["backbone", "image_size"])
        self.hparams.update(backbone=backbone.name, in_chans=backbone.in_chans, weights=None)
        self.backbone = backbone.eval().requires_grad_(False)
        self.automatic_optimization = False
        self.register_buffer("memory_bank", torch.zeros(0))
        self.register_buffer("threshold", torch.tensor(float("inf")))
        self._good: list[Tensor] = []
        self._val: list[tuple[Tensor, Tensor]] = []
        self.image_auroc = BinaryAUROC()
        self.image_ap = BinaryAveragePrecision()
        self.pixel_auroc = BinaryAUROC()

    # ------------------------------------------------------------------ features
    def patch_features(self, images: Tensor) -> Tensor:
        """Locally aggregated patch features ``(B, C, h, w)`` of the chosen stages."""
        model = self.backbone.model
        maps = model.forward_intermediates(
            self.backbone.normalize(images),
            indices=list(self.hparams.layers),
            intermediates_only=True,
            output_fmt="NCHW",
        )
        k = self.hparams.neighbourhood
        maps = [F.avg_pool2d(m.float(), k, stride=1, padding=k // 2) for m in maps]
        size = maps[0].shape[-2:]
        maps = [
            m if m.shape[-2:] == size else F.interpolate(m, size, mode="bilinear") for m in maps
        ]
        return torch.cat(maps, dim=1)

    def add_good(self, images: Tensor) -> None:
        """Add good images' patch features to the (not yet subsampled) bank."""
        with torch.no_grad():
            features = self.patch_features(images)
        self._good.append(features.permute(0, 2, 3, 1).flatten(0, 2))

    def build_bank(self) -> None:
        """Keep a greedy coreset of the collected good patch features as the memory bank."""
        if not self._good:
            raise RuntimeError("No good images were seen: the memory bank is empty.")
        features = gather_rows(torch.cat(self._good))  # every rank's good patches, one bank
        keep = greedy_coreset(features, self.hparams.coreset_fraction)
        self.memory_bank = features[keep].contiguous()
        self._good.clear()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(anomaly_map (B, 1, H, W), score (B,))`` of float images in [0, 1]."""
        features = self.patch_features(images)
        b, c, h, w = features.shape
        distances = nearest_distances(features.permute(0, 2, 3, 1).reshape(-1, c), self.memory_bank)
        patch_map = distances.reshape(b, 1, h, w)
        anomaly_map = F.interpolate(patch_map, images.shape[-2:], mode="bilinear")
        return anomaly_map, patch_map.flatten(1).amax(1)

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
            self.threshold = false_alarm_threshold(good, self.hparams.false_alarm_rate)
        self.log("val/threshold", self.threshold)

    def test_step(self, batch, batch_idx: int) -> None:
        if self.memory_bank.numel() == 0:
            raise RuntimeError(
                "The memory bank is empty: fit the detector first, or test with --ckpt_path "
                "runs/anomaly/version_N/checkpoints/last.ckpt."
            )
        batch = as_batch(batch)
        anomaly_map, scores = self(batch.views[0])
        known = batch.labels >= 0
        self.image_auroc.update(scores[known], (batch.labels[known] > 0).long())
        self.image_ap.update(scores[known], (batch.labels[known] > 0).long())
        if batch.masks is not None:
            known_pixels = batch.masks >= 0  # -1: a defect image without its mask file
            target = (batch.masks[known_pixels] > 0.5).long()
            self.pixel_auroc.update(anomaly_map[known_pixels], target)

    def on_test_epoch_end(self) -> None:
        self.log("test/image_auroc", self.image_auroc.compute())
        self.log("test/image_ap", self.image_ap.compute())
        self.image_auroc.reset()
        self.image_ap.reset()
        if self.pixel_auroc.update_count:
            self.log("test/pixel_auroc", self.pixel_auroc.compute())
            self.pixel_auroc.reset()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Size the bank buffer to the stored one before the state dict is loaded
        (``load_from_checkpoint`` is the safe one of ``lit_ssl.checkpoints``)."""
        bank = checkpoint.get("state_dict", {}).get("memory_bank")
        if bank is not None:
            self.memory_bank = torch.zeros_like(bank)
