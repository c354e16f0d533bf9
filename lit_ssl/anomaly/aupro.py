"""AUPRO: the area under the per-region overlap curve up to a false-positive rate (MVTec AD).

The MVTec AD protocol (Bergmann et al. 2021, https://doi.org/10.1007/s11263-020-01400-4)
scores localisation by regions, so that one large defect does not outweigh many small ones:
every connected defect region of the ground truth (8-connectivity) counts alike. At a
threshold ``t``, the per-region overlap ``PRO(t)`` is the mean over regions of the share of the
region's pixels scoring above ``t``; the false-positive rate ``FPR(t)`` is the share of all good
pixels (of every test image) scoring above ``t``. AUPRO is the area under ``PRO(FPR)`` from 0
to ``max_fpr`` (0.3), divided by ``max_fpr`` so that a perfect map scores 1.

torchmetrics has no AUPRO (1.9): :class:`AUPRO` is a torchmetrics ``Metric`` (its states are
concatenated across DDP ranks). The curve is exact and vectorised: one sort of all pixels, each
region pixel weighing ``1 / (|region| * n_regions)``, so the cumulative sum of the weights is
``PRO`` and the cumulative count of good pixels is ``FPR`` at every threshold. Only the
connected-component labelling loops, once per image (``scipy.ndimage.label``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torchmetrics import Metric

__all__ = ["AUPRO", "aupro", "pro_curve"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _regions(masks: Tensor) -> Tensor:
    """``(N, H, W)`` int64 region ids, unique across images; 0 outside defects."""
    ids = np.zeros(masks.shape, dtype=np.int64)
    binary = (masks > 0.5).cpu().numpy()
    offset = 0
    for i, mask in enumerate(binary):  # one labelling per image, not per pixel
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        ids[i] = np.where(labels > 0, labels + offset, 0)
        offset += count
    return torch.from_numpy(ids).to(masks.device)


def pro_curve(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """``(fpr, pro)`` at every distinct score, from the highest threshold down.

    Args:
        maps: ``(N, H, W)`` (or ``(N, 1, H, W)``) anomaly maps.
        masks: the same shape: 1 defect, 0 good, -1 unknown (left out).

    Returns:
        Two float64 ``(T,)`` tensors starting at ``(0, 0)``, ending at ``(1, 1)``.
    """
    maps, masks = maps.reshape(-1, *maps.shape[-2:]), masks.reshape(-1, *masks.shape[-2:])
    regions = _regions(masks).flatten()
    known = (masks >= 0).flatten()
    scores, regions = maps.flatten()[known].double(), regions[known]
    n_regions = int(regions.max()) if regions.numel() else 0
    good = regions == 0
    if n_regions == 0 or not good.any():
        raise ValueError("AUPRO needs defect regions and good pixels in the masks.")
    sizes = torch.bincount(regions, minlength=n_regions + 1).double()
    weights = torch.where(good, 0.0, 1.0 / (sizes[regions] * n_regions))
    order = scores.argsort(descending=True)
    scores, weights, good = scores[order], weights[order], good[order]
    last = torch.ones_like(scores, dtype=torch.bool)  # the last pixel of each tied score
    last[:-1] = scores[1:] != scores[:-1]
    fpr = good.double().cumsum(0)[last] / good.sum()
    pro = weights.cumsum(0)[last]
    zero = fpr.new_zeros(1)
    return torch.cat([zero, fpr]), torch.cat([zero, pro])


def aupro(maps: Tensor, masks: Tensor, max_fpr: float = 0.3) -> Tensor:
    """Area under ``PRO(FPR)`` on ``[0, max_fpr]`` divided by ``max_fpr`` (1 is perfect).

    The curve is linearly interpolated at ``max_fpr`` (as the MVTec AD evaluation code does).

    Example:
        >>> maps = torch.tensor([[[0.9, 0.1], [0.2, 0.3]]])
        >>> masks = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
        >>> aupro(maps, masks)
        tensor(1., dtype=torch.float64)
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}.")
    fpr, pro = pro_curve(maps, masks)
    inside = fpr <= max_fpr
    cut = int(inside.sum())  # fpr[cut] is the first point beyond max_fpr (fpr ends at 1)
    x, y = fpr[:cut], pro[:cut]
    if cut < fpr.numel() and x[-1] < max_fpr:
        share = (max_fpr - fpr[cut - 1]) / (fpr[cut] - fpr[cut - 1])
        end = pro[cut - 1] + share * (pro[cut] - pro[cut - 1])
        x, y = torch.cat([x, x.new_tensor([max_fpr])]), torch.cat([y, end.reshape(1)])
    return torch.trapezoid(y, x) / max_fpr


class AUPRO(Metric):
    """Per-region overlap AUPRO of anomaly maps against defect masks (see :func:`aupro`).

    ``update(maps, masks)`` with ``(B, 1, H, W)`` or ``(B, H, W)`` tensors (masks: 1 defect,
    0 good, -1 unknown); ``compute()`` labels the regions of every stored mask once.

    Args:
        max_fpr: integration limit of the false-positive rate (0.3 in MVTec AD).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, max_fpr: float = 0.3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_fpr = max_fpr
        self.add_state("maps", default=[], dist_reduce_fx="cat")
        self.add_state("masks", default=[], dist_reduce_fx="cat")

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Store a batch of maps and their masks."""
        self.maps.append(maps.detach().float().reshape(-1, *maps.shape[-2:]))
        self.masks.append(masks.detach().float().reshape(-1, *masks.shape[-2:]))

    def compute(self) -> Tensor:
        """AUPRO of everything stored (float32)."""
        maps = torch.cat(self.maps) if isinstance(self.maps, list) else self.maps
        masks = torch.cat(self.masks) if isinstance(self.masks, list) else self.masks
        return aupro(maps, masks, self.max_fpr).float()
