"""Dense and masked encoding through a Backbone: unmasked features via timm's public
``forward_intermediates``, the masked ViT path by hand.

Dense features are always a grid ``(B, dense_dim, h, w)``. Unmasked images go through
timm's ``forward_intermediates(output_fmt="NCHW")`` (CNN feature maps and ViT patch tokens
alike, non-square ViT grids included). Masked ViT encoding cannot use it: it replaces
patch embeddings by a mask token *before* the position embedding (SimMIM / data2vec) or
drops the masked tokens before the blocks (MAE), and timm's public API has no hook between
``patch_embed`` and ``_pos_embed`` nor a way to pass a shorter token sequence to the
blocks; that path (``vit_embed``, ``vit_encode``) calls the model's parts directly.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from lit_ssl.masking import Fill, fill_masked, mask_to_pixels, patch_grid, upsample_mask


class Backbone(Protocol):
    """What encoding reads of a ``lit_ssl.Backbone`` (this module sits below it: no import)."""

    model: nn.Module
    name: str
    is_vit: bool
    patch_size: int | None

    def normalize(self, x: Tensor) -> Tensor: ...  # noqa: D102

    def pool(self, features: Tensor) -> Tensor: ...  # noqa: D102

    def forward_dense(self, x: Tensor) -> tuple[Tensor, Tensor]: ...  # noqa: D102


__all__ = [
    "VIT_PARTS",
    "check_mask_patch",
    "check_vit",
    "dense_features",
    "dense_stride",
    "encode_masked",
    "tokens_to_grid",
    "vit_embed",
    "vit_encode",
]

VIT_PARTS = ("patch_embed", "_pos_embed", "blocks", "norm")


def tokens_to_grid(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch tokens ``(B, h * w, D)`` in row-major order -> grid ``(B, D, h, w)``."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


def _features_to_grid(backbone: Backbone, features: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Grid ``(B, D, h, w)`` from ``forward_features`` output (tokens, NHWC or NCHW maps)."""
    if features.ndim == 3:
        prefix_count = int(getattr(backbone.model, "num_prefix_tokens", 0))
        grid = patch_grid(image_size, int(backbone.patch_size or 1))
        return tokens_to_grid(features[:, prefix_count:], grid)
    if getattr(backbone.model, "output_fmt", "NCHW") == "NHWC":
        return features.permute(0, 3, 1, 2)
    return features


def dense_features(backbone: Backbone, images: Tensor) -> tuple[Tensor, Tensor]:
    """Pooled ``(B, embed_dim)`` and dense ``(B, dense_dim, h, w)`` features, one pass.

    Uses timm's ``forward_intermediates(indices=1, norm=True, output_fmt="NCHW")``. Its
    final output (timm's ``forward_features``) is pooled by timm's head. ViTs: the last
    intermediate is the final-normed patch tokens laid out by timm on the (possibly
    non-square) patch grid. CNNs: the final feature map itself (the last intermediate may
    stop before a final conv or activation, e.g. EfficientNet's ``conv_head``, NFNet's
    ``final_act``), in NCHW. Models without ``forward_intermediates`` use
    ``forward_features``.
    """
    model = backbone.model
    x = backbone.normalize(images)
    size = tuple(images.shape[-2:])
    if not hasattr(model, "forward_intermediates"):
        features = model.forward_features(x)
        return backbone.pool(features), _features_to_grid(backbone, features, size)
    final, intermediates = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW")
    if final.ndim == 3:  # tokens: timm lays the normed patch tokens out on the grid
        return backbone.pool(final), intermediates[-1]
    return backbone.pool(final), _features_to_grid(backbone, final, size)


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


def check_mask_patch(backbone: Backbone, mask_patch_size: int) -> None:
    """Raise unless ``mask_patch_size`` is a positive multiple of a ViT's patch size."""
    if mask_patch_size < 1:
        raise ValueError(f"mask_patch_size must be >= 1, got {mask_patch_size}.")
    if backbone.is_vit and mask_patch_size % int(backbone.patch_size):
        raise ValueError(
            f"mask_patch_size={mask_patch_size} must be a multiple of the ViT patch size "
            f"{backbone.patch_size} (masks are applied to whole tokens)."
        )


def vit_embed(
    backbone: Backbone,
    images: Tensor,
    token_mask: Tensor | None = None,
    mask_token: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Patch-embed and position-embed images in [0, 1] through a timm ViT.

    Custom on purpose: the mask token must replace patch embeddings between timm's
    ``patch_embed`` and its private ``_pos_embed``, which ``forward_intermediates`` does not
    expose.

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
    """Run the ViT's blocks and final norm on a token sequence ``(B, L, D)``.

    Custom on purpose: MAE passes only the visible tokens (a shorter sequence than the
    patch grid), which timm's forward methods cannot take.
    """
    model = backbone.model
    x = model.norm_pre(tokens) if hasattr(model, "norm_pre") else tokens
    return model.norm(model.blocks(x))


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
    be a multiple of the ViT patch size); custom path, see ``vit_embed``. CNNs: masked
    pixels are filled (``fill``) before the backbone's ``forward_dense``.

    Args:
        backbone: the backbone.
        images: ``(B, C, H, W)`` float images in [0, 1].
        patch_mask: ``(B, H / mask_patch_size, W / mask_patch_size)`` bool mask.
        mask_patch_size: side of the mask patches in pixels.
        mask_token: ``(1, 1, D)`` token for ViTs.
        fill: pixel fill for CNNs (see ``lit_ssl.masking.fill_masked``).

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
    dense = tokens_to_grid(features[:, prefix.shape[1] :], grid)
    return backbone.pool(features), dense
