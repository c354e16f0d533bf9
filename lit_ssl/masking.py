"""Batched patch masking on the device: masks, their validators, pixel fills and patches.

Masks are boolean tensors laid out on the patch grid, ``(B, h, w)`` with ``True`` where a
patch is masked. Every sample of a batch masks exactly the same number of patches
(``num_masked_patches``), chosen by ranking uniform noise (MAE's argsort trick), so all
functions are vectorised (no Python loop over samples or patches), run on the device of
their inputs and are reproducible under ``torch.manual_seed`` or an explicit
``torch.Generator``. Encoding masked images through a backbone lives in
``lit_ssl.backbone.encoding``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FILLS",
    "Fill",
    "cell_weights",
    "check_fill",
    "check_mask_ratio",
    "fill_masked",
    "gather_tokens",
    "keep_indices",
    "mask_to_pixels",
    "num_masked_patches",
    "patch_grid",
    "patchify",
    "random_patch_mask",
    "random_patch_mask_for",
    "unpatchify",
    "upsample_mask",
]

Fill = Literal["mean", "zero"]
FILLS: tuple[str, ...] = ("mean", "zero")


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_mask_ratio(ratio: float, *, closed: bool = False) -> float:
    """Validate a masking ratio: in ``(0, 1)`` for heads, ``[0, 1]`` with ``closed=True``.

    Returns:
        ``ratio`` as a float.
    """
    ratio = float(ratio)
    inside = 0.0 <= ratio <= 1.0 if closed else 0.0 < ratio < 1.0
    if not inside:
        bounds = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"mask_ratio must be in {bounds}, got {ratio}.")
    return ratio


def check_fill(fill: str) -> Fill:
    """Validate a pixel fill of masked patches: ``"mean"`` or ``"zero"``."""
    if fill not in FILLS:
        raise ValueError(f"fill must be 'mean' or 'zero', got {fill!r}.")
    return fill  # type: ignore[return-value]


def num_masked_patches(num_patches: int, ratio: float) -> int:
    """Number of masked patches per sample: ``round(ratio * num_patches)``.

    Args:
        num_patches: patches per image.
        ratio: masking ratio in ``[0, 1]``.
    """
    check_mask_ratio(ratio, closed=True)
    if num_patches < 1:
        raise ValueError(f"num_patches must be >= 1, got {num_patches}.")
    return int(round(ratio * num_patches))


def patch_grid(image_size: tuple[int, int], patch_size: int | tuple[int, int]) -> tuple[int, int]:
    """Patch grid ``(h, w)`` of an image ``(H, W)``; both sides must be multiples of the patch.

    Args:
        image_size: ``(H, W)`` in pixels (non-square is fine).
        patch_size: patch side in pixels, or ``(ph, pw)``.
    """
    (height, width), (ph, pw) = _pair(image_size), _pair(patch_size)
    if ph < 1 or pw < 1:
        raise ValueError(f"Patch size must be >= 1, got {(ph, pw)}.")
    if height % ph or width % pw:
        raise ValueError(
            f"Image size {(height, width)} is not a multiple of the mask patch size {(ph, pw)}. "
            "Resize/crop the images to a multiple of it or choose another mask_patch_size."
        )
    return height // ph, width // pw


def random_patch_mask(
    batch_size: int,
    grid: int | tuple[int, int],
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random masks with exactly ``num_masked_patches(h * w, ratio)`` masked patches each.

    Args:
        batch_size: number of masks.
        grid: patch grid ``(h, w)`` (or a side for square grids).
        ratio: fraction of patches to mask.
        generator: optional generator for reproducible masks (must live on ``device``).
        device: where to create the mask (the generator's device when ``None``).

    Returns:
        Bool tensor ``(B, h, w)``, ``True`` where masked.
    """
    h, w = _pair(grid)
    num_masked = num_masked_patches(h * w, ratio)
    if device is None and generator is not None:
        device = generator.device
    noise = torch.rand(batch_size, h * w, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return (ranks < num_masked).reshape(batch_size, h, w)


def random_patch_mask_for(images: Tensor, patch_size: int, ratio: float) -> Tensor:
    """Random ``(B, H / patch, W / patch)`` mask of ``images`` that masks at least one patch.

    Args:
        images: ``(B, C, H, W)``; ``H`` and ``W`` must be multiples of ``patch_size``.
        patch_size: mask patch side in pixels.
        ratio: fraction of patches to mask.
    """
    grid = patch_grid(tuple(images.shape[-2:]), patch_size)
    if num_masked_patches(grid[0] * grid[1], ratio) < 1:
        raise ValueError(
            f"mask_ratio={ratio} masks no patch of the {grid} grid; use a "
            "smaller mask_patch_size or a larger ratio."
        )
    return random_patch_mask(images.shape[0], grid, ratio, device=images.device)


def keep_indices(mask: Tensor, num_keep: int) -> Tensor:
    """Indices of the visible patches of each sample, ascending (MAE's ``ids_keep``).

    ``num_keep`` is passed explicitly (``h * w - num_masked_patches(...)``) so no host
    synchronisation is needed to size the result.

    Args:
        mask: ``(B, h, w)`` or ``(B, N)`` bool mask with ``num_keep`` False entries per row.
        num_keep: number of visible patches per sample.

    Returns:
        Long tensor ``(B, num_keep)`` of flat patch indices.
    """
    flat = mask.reshape(mask.shape[0], -1).to(torch.int8)
    return flat.argsort(dim=1, stable=True)[:, :num_keep]


def gather_tokens(tokens: Tensor, indices: Tensor) -> Tensor:
    """``tokens[b, indices[b]]``: tokens ``(B, N, D)``, indices ``(B, K)`` -> ``(B, K, D)``."""
    return tokens.gather(1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def upsample_mask(mask: Tensor, factor: int | tuple[int, int]) -> Tensor:
    """Repeat each cell of a ``(B, h, w)`` mask ``factor`` times along both axes."""
    fh, fw = _pair(factor)
    return mask.repeat_interleave(fh, dim=1).repeat_interleave(fw, dim=2)


def mask_to_pixels(mask: Tensor, patch_size: int | tuple[int, int]) -> Tensor:
    """Pixel mask ``(B, 1, h * ph, w * pw)`` (same dtype) of a patch mask ``(B, h, w)``."""
    return upsample_mask(mask, patch_size).unsqueeze(1)


def fill_masked(images: Tensor, pixel_mask: Tensor, fill: Fill = "mean") -> Tensor:
    """Replace masked pixels by the per-image channel mean (``"mean"``) or zeros.

    Args:
        images: ``(B, C, H, W)``.
        pixel_mask: ``(B, 1, H, W)`` bool or float (1 = masked).
        fill: ``"mean"`` (neutral, does not draw dark holes that look like defects) or
            ``"zero"``.
    """
    check_fill(fill)
    value = images.mean(dim=(2, 3), keepdim=True) if fill == "mean" else images.new_zeros(())
    return torch.where(pixel_mask.bool(), value.to(images.dtype), images)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, h * w, p * p * C)`` patches in row-major grid order."""
    b, c = images.shape[:2]
    h, w = patch_grid(tuple(images.shape[-2:]), patch_size)
    x = images.reshape(b, c, h, patch_size, w, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, patch_size * patch_size * c)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int], channels: int) -> Tensor:
    """Inverse of ``patchify``: ``(B, h * w, p * p * C)`` -> ``(B, C, h * p, w * p)``."""
    (h, w), p = grid, patch_size
    x = patches.reshape(patches.shape[0], h, w, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], channels, h * p, w * p)


def cell_weights(pixel_mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """Fraction of masked pixels in each dense cell: ``(B, 1, H, W)`` -> ``(B, 1, h, w)``."""
    return F.adaptive_avg_pool2d(pixel_mask.float(), grid)
