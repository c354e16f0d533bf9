"""Reconstruction and latent-prediction losses: local means over masked patches or cells.

Every rank holds a full copy of the model; Lightning averages the gradients.
"""

from __future__ import annotations

from typing import Literal

import torch  # noqa: F401 (the docstring examples use it)
import torch.nn.functional as F
from torch import Tensor

from lit_ssl.losses.base import NORM_PIX_EPS, float32_loss

__all__ = [
    "denoising_loss",
    "mae_loss",
    "masked_latent_loss",
    "masked_pixel_loss",
    "normalise_patches",
]


def normalise_patches(patches: Tensor) -> Tensor:
    """MAE's per-patch target normalisation: ``(x - mean) / sqrt(var + 1e-6)`` over each patch.

    Example:
        >>> normalise_patches(torch.tensor([[[1.0, 3.0]]]))  # mean 2, unbiased var 2
        tensor([[[-0.7071,  0.7071]]])
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + NORM_PIX_EPS).sqrt()


@float32_loss
def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """MAE loss: per-patch MSE averaged over masked patches (He et al. 2022, Sec. 3).

    Paper: https://arxiv.org/abs/2111.06377

    Args:
        pred: ``(B, N, P)`` predicted patches.
        target: ``(B, N, P)`` target patches (``patchify`` of the normalised image).
        mask: ``(B, N)`` with 1 where masked.
        norm_pix: normalise each target patch by its own mean and (unbiased) variance.

    Example:
        >>> pred, target = torch.zeros(1, 2, 4), torch.ones(1, 2, 4)
        >>> mask = torch.tensor([[True, False]])
        >>> mae_loss(pred, target, mask, norm_pix=False)  # only the first patch counts
        tensor(1.)
    """
    if norm_pix:
        target = normalise_patches(target)
    per_patch = (pred - target).square().mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


@float32_loss
def masked_pixel_loss(
    pred: Tensor, target: Tensor, pixel_mask: Tensor, kind: Literal["l1", "l2"] = "l1"
) -> Tensor:
    """Mean L1 or squared error over masked pixels only (SimMIM, Xie et al. 2022, Sec. 3.3).

    Paper: https://arxiv.org/abs/2111.09886

    Args:
        pred: ``(B, C, H, W)`` predictions.
        target: ``(B, C, H, W)`` targets.
        pixel_mask: ``(B, 1, H, W)`` with 1 where masked.
        kind: ``"l1"`` or ``"l2"``.

    Example:
        >>> pred, target = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
        >>> pixel_mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> masked_pixel_loss(pred, target, pixel_mask, "l2")  # one masked pixel: 2^2
        tensor(4.)
    """
    diff = pred - target
    error = diff.abs() if kind == "l1" else diff.square()
    weight = pixel_mask.expand_as(error)
    return (error * weight).sum() / weight.sum().clamp_min(1.0)


@float32_loss
def denoising_loss(pred: Tensor, clean: Tensor) -> Tensor:
    """Denoising autoencoder loss: MSE to the clean image (Vincent et al. 2008, Sec. 2.3).

    Paper: https://www.cs.toronto.edu/~larocheh/publications/icml-2008-denoising-autoencoders.pdf

    Args:
        pred: ``(B, C, H, W)`` reconstruction of the corrupted (augmented) view.
        clean: ``(B, C, H, W)`` un-augmented image, same space as ``pred``.

    Example:
        >>> denoising_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor(1.)
    """
    return F.mse_loss(pred, clean)


@float32_loss
def masked_latent_loss(
    pred: Tensor, target: Tensor, weights: Tensor, kind: Literal["smooth_l1", "mse"] = "smooth_l1"
) -> Tensor:
    """Regression loss on dense latents, averaged over masked cells only (data2vec, I-JEPA).

    Papers: https://arxiv.org/abs/2202.03555 (data2vec, smooth L1 with beta = 1),
    https://arxiv.org/abs/2301.08243 (I-JEPA, MSE).

    Args:
        pred: ``(B, D, h, w)`` predicted latents.
        target: ``(B, D, h, w)`` teacher latents (no gradient).
        weights: ``(B, 1, h, w)`` masked fraction of each cell (0 = visible, 1 = masked).
        kind: ``"smooth_l1"`` (data2vec, beta = 1) or ``"mse"``.

    Example:
        >>> pred, target = torch.zeros(1, 2, 1, 2), torch.full((1, 2, 1, 2), 2.0)
        >>> weights = torch.tensor([[[[1.0, 0.0]]]])  # only the first cell is masked
        >>> masked_latent_loss(pred, target, weights, "mse")
        tensor(4.)
    """
    if kind == "smooth_l1":
        error = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    else:
        error = (pred - target).square()
    per_cell = error.mean(dim=1, keepdim=True)
    return (per_cell * weights).sum() / weights.sum().clamp_min(1e-6)
