"""The classifier's training loss: (focal) cross-entropy, class-weighted, on images or tiles.

The loss functions themselves live in ``lit_ssl.losses``; this picks and combines them as
``DefectClassifier``'s ``loss``, ``class_weights``, ``label_smoothing`` and ``focal_gamma``
ask, for whole images and for tiles (``lit_ssl.classify.tiles.tile_image_losses``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from lit_ssl.classify.tiles import tile_image_losses
from lit_ssl.losses import focal_loss, per_sample_focal

__all__ = ["ClassifierLoss"]


@dataclass(frozen=True)
class ClassifierLoss:
    """Loss settings of a ``DefectClassifier``.

    Attributes:
        kind: ``"cross_entropy"`` or ``"focal"``.
        weighted: weigh samples by their class weight (``class_weights != "none"``).
        label_smoothing: label smoothing of the (focal) cross-entropy.
        focal_gamma: focusing parameter of the focal loss.

    Example:
        >>> import torch
        >>> loss = ClassifierLoss("cross_entropy", weighted=False)
        >>> float(loss(torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2)))  # log 2
        0.6931471824645996
    """

    kind: str = "cross_entropy"
    weighted: bool = True
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0

    def __call__(self, logits: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
        """Mean loss of image logits ``(B, C)`` (class-weighted mean when ``weighted``)."""
        weight = class_weights if self.weighted else None
        if self.kind == "focal":
            return focal_loss(logits, labels, self.focal_gamma, weight, self.label_smoothing)
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing)

    def per_sample(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Unreduced loss ``(N,)``."""
        if self.kind == "focal":
            return per_sample_focal(logits, labels, self.focal_gamma, self.label_smoothing)
        return F.cross_entropy(
            logits, labels, reduction="none", label_smoothing=self.label_smoothing
        )

    def tiles(
        self,
        tile_logits: Tensor,
        labels: Tensor,
        good_index: int,
        class_weights: Tensor,
        tile_labels: Tensor | None = None,
    ) -> Tensor:
        """Mean over images of ``tile_image_losses`` (MIL, or mask tiles where known)."""
        losses = tile_image_losses(tile_logits, labels, good_index, self.per_sample, tile_labels)
        if not self.weighted:
            return losses.mean()
        weight = class_weights[labels]
        return (losses * weight).sum() / weight.sum().clamp(min=1e-12)
