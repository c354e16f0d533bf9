"""Tiles of high-resolution frames for the classifier: cut, score, pick, and the tile losses.

A frame ``(B, C, H, W)`` is padded (constant 0, at the bottom and right) until the tile grid
covers it exactly, never resized, and cut into ``T = rows * cols`` tiles of ``tile_size``
placed every ``tile_stride`` pixels, in row-major order, with batched tensor ops (a reshape
for non-overlapping tiles, one index gather per axis otherwise): one ``(B * T, C, tile, tile)``
batch goes through the network in one forward.

Image rule (multiple-instance): the image's defect score is the maximum over its tiles of the
tile defect score ``1 - p(good)``; the image's class probabilities (and logits) are those of
that maximum-scoring tile, so ``defect_scores(image_logits)`` gives back the maximum.

Tile labels from masks (``Batch.masks``: 1 defect, 0 good, -1 unknown): a tile with a defect
pixel gets the image's label, a tile without defect pixels but with known good pixels is good,
a tile of only unknown pixels (or of grid padding) has no label.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "check_tiling",
    "cover_padding",
    "image_logits",
    "mask_tile_labels",
    "tile_grid",
    "tile_image_losses",
    "tile_frames",
    "tile_score_map",
]


def check_tiling(tile_size: int | None, tile_stride: int | None) -> int | None:
    """Validate the tile options; returns the stride (``tile_size`` when not given)."""
    if tile_size is None:
        if tile_stride is not None:
            raise ValueError(
                f"tile_stride={tile_stride} without tile_size: give tile_size too (or neither)."
            )
        return None
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 8:
        raise ValueError(f"tile_size must be an integer >= 8 pixels, got {tile_size!r}.")
    stride = tile_size if tile_stride is None else tile_stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= tile_size:
        raise ValueError(
            f"tile_stride must be an integer in [1, tile_size={tile_size}] (larger strides "
            f"leave pixels unseen), got {tile_stride!r}."
        )
    return stride


def _count(length: int, tile: int, stride: int) -> int:
    return 1 if length <= tile else math.ceil((length - tile) / stride) + 1


def tile_grid(height: int, width: int, tile: int, stride: int) -> tuple[int, int]:
    """``(rows, cols)`` of tiles covering an ``height x width`` frame (padding included)."""
    return _count(height, tile, stride), _count(width, tile, stride)


def cover_padding(height: int, width: int, tile: int, stride: int) -> tuple[int, int]:
    """Pixels added at the bottom and the right so that the tile grid covers the frame."""
    rows, cols = tile_grid(height, width, tile, stride)
    return (rows - 1) * stride + tile - height, (cols - 1) * stride + tile - width


def _pad(frames: Tensor, tile: int, stride: int, value: float) -> Tensor:
    pad_h, pad_w = cover_padding(frames.shape[-2], frames.shape[-1], tile, stride)
    if pad_h == 0 and pad_w == 0:
        return frames
    return F.pad(frames, (0, pad_w, 0, pad_h), mode="constant", value=value)


def tile_frames(frames: Tensor, tile: int, stride: int, pad_value: float = 0.0) -> Tensor:
    """Tiles ``(B, T, C, tile, tile)`` of frames ``(B, C, H, W)``, row-major, padded to cover.

    Example:
        >>> tile_frames(torch.zeros(2, 1, 40, 64), tile=32, stride=32).shape
        torch.Size([2, 4, 1, 32, 32])
    """
    frames = _pad(frames, tile, stride, pad_value)
    batch, chans, height, width = frames.shape
    rows, cols = tile_grid(height, width, tile, stride)
    if stride == tile:  # non-overlapping: a view, no copy until the reshape below
        grid = frames.reshape(batch, chans, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5)
    else:  # overlapping: one gather per axis (exports to ONNX with both exporters)
        rows_at = _window_index(rows, tile, stride, frames.device)
        cols_at = _window_index(cols, tile, stride, frames.device)
        grid = frames[:, :, rows_at][..., cols_at].permute(0, 2, 4, 1, 3, 5)
    return grid.reshape(batch, rows * cols, chans, tile, tile)


def _window_index(count: int, tile: int, stride: int, device: torch.device) -> Tensor:
    """``(count, tile)`` pixel indices of ``count`` windows of ``tile`` every ``stride``."""
    starts = torch.arange(count, device=device) * stride
    return starts[:, None] + torch.arange(tile, device=device)[None, :]


def tile_defect_scores(tile_logits: Tensor, good_index: int) -> Tensor:
    """Tile defect scores ``1 - p(good)`` ``(B, T)`` of tile logits ``(B, T, K)``."""
    return 1.0 - tile_logits.float().softmax(dim=-1)[..., good_index]


def image_logits(tile_logits: Tensor, good_index: int) -> tuple[Tensor, Tensor]:
    """``(logits (B, K) of each image's maximum-scoring tile, tile scores (B, T))``."""
    scores = tile_defect_scores(tile_logits, good_index)
    best = scores.argmax(dim=1)
    index = best[:, None, None].expand(-1, 1, tile_logits.shape[-1])
    return tile_logits.gather(1, index).squeeze(1), scores


def tile_score_map(scores: Tensor, rows: int, cols: int) -> Tensor:
    """Tile scores ``(B, T)`` laid out on the tile grid ``(B, rows, cols)``."""
    return scores.reshape(scores.shape[0], rows, cols)


def mask_tile_labels(
    masks: Tensor, labels: Tensor, tile: int, stride: int, good_index: int
) -> Tensor:
    """Tile labels ``(B, T)`` from masks ``(B, 1, H, W)``: the image's label where a tile has
    a defect pixel (1), ``good_index`` where it has none but known good pixels (0), -1 where
    it has only unknown pixels (-1, grid padding included)."""
    tiles = tile_frames(masks.float(), tile, stride, pad_value=-1.0).flatten(2)
    has_defect = (tiles > 0.5).any(dim=2)
    has_good = (tiles.abs() < 0.5).any(dim=2)
    good = torch.full_like(has_defect, good_index, dtype=torch.long)
    known = torch.where(has_good, good, torch.full_like(good, -1))
    return torch.where(has_defect, labels[:, None].expand_as(good), known)


def tile_image_losses(
    tile_logits: Tensor,
    labels: Tensor,
    good_index: int,
    per_sample: Callable[[Tensor, Tensor], Tensor],
    tile_labels: Tensor | None = None,
) -> Tensor:
    """One loss per image ``(B,)``, without host syncs (fixed-shape tensor ops only).

    Multiple-instance by default: ``per_sample`` (e.g. unreduced cross-entropy) of the
    maximum-scoring tile's logits against the image label. Images whose ``tile_labels``
    (``mask_tile_labels``) are known use them instead: the mean loss of their defect tiles
    and the mean loss of their good tiles, averaged (each image counts once, its few defect
    tiles as much as its many good ones). A defect image without any defect tile in its
    mask (e.g. the defect vanished in a resize) and images of only unknown tiles stay MIL.

    Args:
        tile_logits: ``(B, T, K)``.
        labels: image labels ``(B,)``, all known (>= 0).
        good_index: the good class.
        per_sample: ``(logits (N, K), labels (N,)) -> (N,)`` unreduced loss.
        tile_labels: ``(B, T)`` tile labels, -1 unknown; ``None``: MIL for every image.
    """
    batch, count, classes = tile_logits.shape
    best, _ = image_logits(tile_logits, good_index)
    mil = per_sample(best, labels)
    if tile_labels is None:
        return mil
    flat_labels = tile_labels.clamp(min=0).flatten()
    losses = per_sample(tile_logits.reshape(batch * count, classes), flat_labels)
    losses = losses.reshape(batch, count)
    is_defect = (tile_labels >= 0) & (tile_labels != good_index)
    is_good = tile_labels == good_index
    n_defect, n_good = is_defect.sum(dim=1), is_good.sum(dim=1)
    defect_part = (losses * is_defect).sum(dim=1) / n_defect.clamp(min=1)
    good_part = (losses * is_good).sum(dim=1) / n_good.clamp(min=1)
    groups = (n_defect > 0).float() + (n_good > 0).float()
    from_tiles = (defect_part + good_part) / groups.clamp(min=1.0)
    missed = (labels != good_index) & (n_defect == 0)  # a defect image without a defect tile
    use_tiles = (groups > 0) & ~missed
    return torch.where(use_tiles, from_tiles, mil)
