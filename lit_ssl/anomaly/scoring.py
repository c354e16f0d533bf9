"""The detector's inference path as functions: patch features, then nearest-good distances.

``AnomalyDetector.forward`` and the ONNX graph (``lit_ssl.anomaly.export``) both run
:func:`anomaly_maps`, so PyTorch and ONNX compute the same formula: nearest-neighbour distances
by ``||q||^2 - 2 q.b + ||b||^2`` (matrix products over blocks of the bank, clamped at 0, then the
square root), not ``torch.cdist``, which the ONNX exporters do not all support.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ssl.anomaly.memory_bank import nearest_distances
from lit_ssl.backbone import Backbone

__all__ = ["anomaly_maps", "check_layers", "check_neighbourhood", "patch_features"]


def check_layers(backbone: Backbone, layers: Sequence[int]) -> None:
    """Refuse ``layers`` that are not distinct ``forward_intermediates`` indices of ``backbone``.

    timm numbers a model's feature stages ``0 .. n - 1`` (``feature_info``; negative indices
    count from the end, as in timm). A repeated stage would silently be taken once.

    Raises:
        ValueError: empty, not integers, repeated, or out of the backbone's range.
    """
    stages = getattr(backbone.model, "feature_info", None)
    count = len(stages) if stages is not None else None
    allowed = f"{backbone.name} has stages 0..{count - 1}" if count else "see the backbone"
    example = "[1, 2]" if count is None or count > 2 else f"[{count - 1}]"
    given = list(layers) if isinstance(layers, Sequence) and not isinstance(layers, str) else None
    if not given or any(isinstance(v, bool) or not isinstance(v, int) for v in given):
        raise ValueError(
            f"layers={layers!r}: give a non-empty list of stage indices ({allowed}), "
            f"e.g. --model.layers {example.replace(' ', '')}."
        )
    if count is not None and any(not -count <= v < count for v in given):
        raise ValueError(f"layers={given}: {allowed}; give indices in that range, e.g. {example}.")
    absolute = [v % count if count is not None else v for v in given]
    if len(set(absolute)) != len(absolute):
        raise ValueError(
            f"layers={given} names a stage twice; give each stage once, e.g. {example} ({allowed})."
        )


def check_neighbourhood(neighbourhood: int) -> None:
    """Refuse a ``neighbourhood`` that is not a positive odd integer.

    The local average is centred on each patch (``padding = k // 2``): an even side would
    shift the map by half a patch and grow it by one row and column.
    """
    if (
        isinstance(neighbourhood, bool)
        or not isinstance(neighbourhood, int)
        or neighbourhood < 1
        or neighbourhood % 2 == 0
    ):
        raise ValueError(
            f"neighbourhood={neighbourhood!r}: give a positive odd integer (1 = no averaging, "
            "3 as PatchCore, 5, ...); the average is centred on each patch."
        )


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
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(anomaly_map (B, 1, H, W), score (B,))`` of float images in [0, 1].

    The map is each patch's distance to its nearest bank row, bilinearly upsampled to the
    input; the score is the maximum of the patch map (before upsampling). ``should_stop``:
    see ``nearest_distances`` (None in the ONNX graph).
    """
    features = patch_features(backbone, images, layers, neighbourhood)
    b, c, h, w = features.shape
    queries = features.permute(0, 2, 3, 1).reshape(-1, c)
    distances = nearest_distances(queries, bank, should_stop=should_stop)
    patch_map = distances.reshape(b, 1, h, w)
    anomaly_map = F.interpolate(patch_map, images.shape[-2:], mode="bilinear")
    return anomaly_map, patch_map.flatten(1).amax(1)
