"""Batched patch masking on the device, and masked encoding through a Backbone.

Masks are boolean tensors laid out on the patch grid, ``(B, h, w)`` with ``True`` where a
patch is masked. Every sample of a batch masks exactly the same number of patches
(``num_masked_patches``), chosen by ranking uniform noise (MAE's argsort trick), so all
functions are vectorised (no Python loop over samples or patches), run on the device of
their inputs and are reproducible under ``torch.manual_seed`` or an explicit
``torch.Generator``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ssl.backbone import Backbone

__all__ = [
    "Fill",
    "cell_weights",
    "check_mask_patch",
    "check_vit",
    "dense_stride",
    "encode_dense",
    "encode_masked",
    "fill_masked",
    "gather_tokens",
    "keep_indices",
    "mask_to_pixels",
    "num_masked_patches",
    "patch_grid",
    "patchify",
    "random_patch_mask",
    "unpatchify",
    "upsample_mask",
    "vit_embed",
    "vit_encode",
]

Fill = Literal["mean", "zero"]
VIT_PARTS = ("patch_embed", "_pos_embed", "blocks", "norm")


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def num_masked_patches(num_patches: int, ratio: float) -> int:
    """Number of masked patches per sample: ``round(ratio * num_patches)``.

    Args:
        num_patches: patches per image.
        ratio: masking ratio in ``[0, 1]``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"Masking ratio must be in [0, 1], got {ratio}.")
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
    if fill not in ("mean", "zero"):
        raise ValueError(f"fill must be 'mean' or 'zero', got {fill!r}.")
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


def dense_stride(backbone: Backbone) -> int:
    """Pixels per cell of the dense grid: the patch size of a ViT, the output stride of a CNN."""
    if backbone.is_vit:
        return int(backbone.patch_size)
    info = getattr(backbone.model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list | tuple) else None
        if isinstance(last, dict) and "reduction" in last:
            return int(last["reduction"])
    raise ValueError(
        f"Cannot tell the output stride of {backbone.name!r} (no timm feature_info); pass "
        "mask_patch_size explicitly."
    )


def check_vit(backbone: Backbone, head: str) -> None:
    """Raise a clear error unless ``backbone`` is a timm VisionTransformer-style model."""
    if not backbone.is_vit:
        raise ValueError(
            f"{head} needs a ViT backbone (e.g. 'vit_small_patch16_224' or 'test_vit'); "
            f"{backbone.name!r} is not a plain ViT (CNN or hybrid). Use MaskedReconstruction there."
        )
    missing = [part for part in VIT_PARTS if not hasattr(backbone.model, part)]
    if missing:
        raise ValueError(
            f"{head} works with timm VisionTransformer-style models; {backbone.name!r} "
            f"({type(backbone.model).__name__}) lacks {missing}."
        )


def vit_embed(
    backbone: Backbone,
    images: Tensor,
    token_mask: Tensor | None = None,
    mask_token: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Patch-embed and position-embed images in [0, 1] through a timm ViT.

    Args:
        backbone: ViT backbone.
        images: ``(B, C, H, W)`` float images in [0, 1].
        token_mask: optional ``(B, h, w)`` bool mask; masked patch embeddings are replaced by
            ``mask_token`` before the position embedding (SimMIM / data2vec).
        mask_token: ``(1, 1, D)`` learnable token, required with ``token_mask``.

    Returns:
        ``(prefix, patches)``: prefix tokens ``(B, P, D)`` (class/register tokens) and patch
        tokens ``(B, h * w, D)``, both with position embeddings.
    """
    model = backbone.model
    x = model.patch_embed(backbone.normalize(images))
    if token_mask is not None:
        if mask_token is None:
            raise ValueError("vit_embed needs mask_token when token_mask is given.")
        m = token_mask if x.ndim == 4 else token_mask.reshape(x.shape[0], -1)
        x = torch.where(m.unsqueeze(-1), mask_token.to(x.dtype).reshape(-1), x)
    x = model._pos_embed(x)
    prefix_count = int(getattr(model, "num_prefix_tokens", 0))
    return x[:, :prefix_count], x[:, prefix_count:]


def vit_encode(backbone: Backbone, tokens: Tensor) -> Tensor:
    """Run the ViT's blocks and final norm on a token sequence ``(B, L, D)``."""
    model = backbone.model
    x = model.norm_pre(tokens) if hasattr(model, "norm_pre") else tokens
    return model.norm(model.blocks(x))


def _tokens_to_grid(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def encode_dense(backbone: Backbone, images: Tensor) -> tuple[Tensor, Tensor]:
    """``backbone.forward_dense`` that also lays out non-square ViT token grids."""
    if not backbone.is_vit:
        return backbone.forward_dense(images)
    features = backbone.features(images)
    grid = patch_grid(tuple(images.shape[-2:]), int(backbone.patch_size))
    prefix_count = int(getattr(backbone.model, "num_prefix_tokens", 0))
    return backbone.pool(features), _tokens_to_grid(features[:, prefix_count:], grid)


def encode_masked(
    backbone: Backbone,
    images: Tensor,
    patch_mask: Tensor,
    *,
    mask_patch_size: int,
    mask_token: Tensor | None = None,
    fill: Fill = "mean",
) -> tuple[Tensor, Tensor]:
    """Pooled and dense features of masked images, for ViTs and CNNs alike.

    ViTs: masked patch embeddings are replaced by ``mask_token`` (``mask_patch_size`` must
    be a multiple of the ViT patch size). CNNs: masked pixels are filled (``fill``) before
    the backbone.

    Args:
        backbone: the backbone.
        images: ``(B, C, H, W)`` float images in [0, 1].
        patch_mask: ``(B, H / mask_patch_size, W / mask_patch_size)`` bool mask.
        mask_patch_size: side of the mask patches in pixels.
        mask_token: ``(1, 1, D)`` token for ViTs.
        fill: pixel fill for CNNs (see ``fill_masked``).

    Returns:
        ``(pooled (B, D), dense (B, D, h, w))``.
    """
    if not backbone.is_vit:
        masked = fill_masked(images, mask_to_pixels(patch_mask, mask_patch_size), fill)
        return backbone.forward_dense(masked)
    patch = int(backbone.patch_size)
    grid = patch_grid(tuple(images.shape[-2:]), patch)
    token_mask = upsample_mask(patch_mask, mask_patch_size // patch)
    prefix, patches = vit_embed(backbone, images, token_mask, mask_token)
    tokens = backbone.model.patch_drop(torch.cat([prefix, patches], dim=1))
    features = vit_encode(backbone, tokens)
    dense = _tokens_to_grid(features[:, prefix.shape[1] :], grid)
    return backbone.pool(features), dense


def check_mask_patch(backbone: Backbone, mask_patch_size: int) -> None:
    """Raise unless ``mask_patch_size`` is a positive multiple of a ViT's patch size."""
    if mask_patch_size < 1:
        raise ValueError(f"mask_patch_size must be >= 1, got {mask_patch_size}.")
    if backbone.is_vit and mask_patch_size % int(backbone.patch_size):
        raise ValueError(
            f"mask_patch_size={mask_patch_size} must be a multiple of the ViT patch size "
            f"{backbone.patch_size} (masks are applied to whole tokens)."
        )


def cell_weights(pixel_mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """Fraction of masked pixels in each dense cell: ``(B, 1, H, W)`` -> ``(B, 1, h, w)``."""
    return F.adaptive_avg_pool2d(pixel_mask.float(), grid)
