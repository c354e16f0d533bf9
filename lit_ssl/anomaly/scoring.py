"""The detector's inference path as functions: patch features, then nearest-good distances.

``AnomalyDetector.forward`` and the ONNX graph (``lit_ssl.anomaly.export``) both run
:func:`anomaly_maps`, so PyTorch and ONNX compute the same formula: nearest-neighbour distances
by ``||q||^2 - 2 q.b + ||b||^2`` (matrix products over blocks of the bank, clamped at 0, then the
square root), not ``torch.cdist``, which the ONNX exporters do not all support.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ssl.anomaly.memory_bank import nearest_distances
from lit_ssl.backbone import Backbone

__all__ = ["anomaly_maps", "patch_features"]


def patch_features(
    backbone: Backbone, images: Tensor, layers: Sequence[int], neighbourhood: int
) -> Tensor:
    """Locally aggregated patch features ``(B, C, h, w)`` of the chosen backbone stages.

    Each stage's map is averaged over a ``neighbourhood`` square and resized to the first
    stage's grid; the stages are concatenated along channels (PatchCore).
    """
    maps = backbone.model.forward_intermediates(
        backbone.normalize(images),
        indices=list(layers),
        intermediates_only=True,
        output_fmt="NCHW",
    )
    k = neighbourhood
    maps = [F.avg_pool2d(m.float(), k, stride=1, padding=k // 2) for m in maps]
    size = maps[0].shape[-2:]
    maps = [m if m.shape[-2:] == size else F.interpolate(m, size, mode="bilinear") for m in maps]
    return torch.cat(maps, dim=1)


def anomaly_maps(
    backbone: Backbone,
    bank: Tensor,
    images: Tensor,
    layers: Sequence[int],
    neighbourhood: int,
) -> tuple[Tensor, Tensor]:
    """``(anomaly_map (B, 1, H, W), score (B,))`` of float images in [0, 1].

    The map is each patch's distance to its nearest bank row, bilinearly upsampled to the
    input; the score is the maximum of the patch map (before upsampling).
    """
    features = patch_features(backbone, images, layers, neighbourhood)
    b, c, h, w = features.shape
    distances = nearest_distances(features.permute(0, 2, 3, 1).reshape(-1, c), bank)
    patch_map = distances.reshape(b, 1, h, w)
    anomaly_map = F.interpolate(patch_map, images.shape[-2:], mode="bilinear")
    return anomaly_map, patch_map.flatten(1).amax(1)
