"""Heat-map PNGs of a tiled classifier's tile scores, one per flagged image.

A heat map shows, side by side, the frame as the model saw it (left) and the same frame with
the tile defect scores laid over it (right): every pixel takes the highest score of the tiles
covering it (the image rule is the maximum too), on a fixed 0..1 scale (black/purple = 0,
yellow = 1; comparable across images), blended more strongly where the score is high.
Tiles of grid padding (outside the frame) are cut away.

``PredictionsCSVWriter`` writes them during ``trainer.predict`` into ``heatmaps/`` next to
``predictions.csv`` (each DDP rank its own images) and names them in the ``heatmap`` column.
Names keep the image's folders (:func:`heatmap_name`): ``a/x.png`` and ``a__x.png`` get
``heatmaps/a/x.png.png`` and ``heatmaps/a__x.png.png``, never the same file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

import numpy as np
from PIL import Image
from torch import Tensor

__all__ = ["HEATMAP_DIR", "heatmap_name", "pixel_scores", "render_heatmap", "write_heatmap"]

HEATMAP_DIR = "heatmaps"
# an inferno-like colour map: (position, RGB)
_ANCHORS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def heatmap_name(path: str | None, root: str | Path | None = None, index: int = 0) -> str:
    """Relative (POSIX) name of an image's heat map: the image's path below ``root``, folders
    kept, plus ``.png``; ``image_<index>.png`` without a path.

    Distinct paths give distinct names: the folders are kept as folders (nothing is joined or
    replaced), and a path not below ``root`` (or any path when ``root`` is None) keeps its
    whole absolute path (the drive, if any, as a first folder), so the name never holds
    ``..`` and never leaves the heat-map folder. Paths are made absolute and normalised
    (``a/../b`` is ``b``), not resolved (a symlink keeps its own name).

    Example:
        >>> heatmap_name("/data/line3/scratch/007.tif", "/data/line3")
        'scratch/007.tif.png'
    """
    if path is None:
        return f"image_{index:06d}.png"
    file = os.path.abspath(path)
    parts: tuple[str, ...] | None = None
    if root is not None:
        base = os.path.abspath(root)
        try:
            if os.path.commonpath([file, base]) == base:
                parts = PurePath(os.path.relpath(file, base)).parts
        except ValueError:  # another drive
            parts = None
    if not parts or parts == (".",):
        pure = PurePath(file)
        drive = pure.drive.replace(":", "").strip("\\/").replace("\\", "_").replace("/", "_")
        parts = ((drive,) if drive else ()) + pure.parts[1:]
    kept = [p for p in parts if p not in ("", ".", "..")]
    return "/".join(kept) + ".png"


def pixel_scores(tile_map: Tensor | np.ndarray, height: int, width: int, tile: int, stride: int):
    """Per-pixel scores ``(height, width)``: the highest score of the tiles covering a pixel.

    Args:
        tile_map: ``(rows, cols)`` tile scores in row-major tile order.
        height: frame height (before the grid's padding).
        width: frame width.
        tile: tile size.
        stride: tile stride.
    """
    scores = np.asarray(tile_map, dtype=np.float32)
    rows, cols = scores.shape
    ys, xs = np.arange(height), np.arange(width)
    cover_y = (ys[None] >= np.arange(rows)[:, None] * stride) & (
        ys[None] < np.arange(rows)[:, None] * stride + tile
    )
    cover_x = (xs[None] >= np.arange(cols)[:, None] * stride) & (
        xs[None] < np.arange(cols)[:, None] * stride + tile
    )
    per_row = np.where(cover_x[None], scores[:, :, None], -np.inf).max(axis=1)  # (rows, W)
    return np.where(cover_y[:, :, None], per_row[:, None, :], -np.inf).max(axis=0)


def _colour(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(values, _ANCHORS, _COLOURS[:, c]) for c in range(3)], axis=-1)


def render_heatmap(image: Tensor | np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``uint8 (H, 2W, 3)``: the image (``(C, H, W)`` in [0, 1]) and the coloured overlay."""
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels.mean(axis=0) if pixels.shape[0] != 3 else pixels.transpose(1, 2, 0)
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels
    rgb = np.clip(rgb, 0.0, 1.0) * 255.0
    alpha = (0.25 + 0.5 * np.clip(scores, 0.0, 1.0))[..., None]
    overlay = (1.0 - alpha) * rgb + alpha * _colour(scores)
    return np.round(np.concatenate([rgb, overlay], axis=1)).astype(np.uint8)


def write_heatmap(
    path: str | Path, image: Tensor, tile_map: Tensor, tile: int, stride: int
) -> Path:
    """Write the heat map PNG of one frame ``(C, H, W)`` and its ``(rows, cols)`` tile scores."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = image.detach().float().cpu()
    scores = pixel_scores(tile_map.detach().cpu(), image.shape[-2], image.shape[-1], tile, stride)
    picture = Image.fromarray(render_heatmap(image.numpy(), scores))
    picture.save(path, format="PNG", compress_level=1)  # big frames: speed over size
    return path
