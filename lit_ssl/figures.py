"""Figures saved as PNG: image grids, 2-D embedding plots, augmentation previews."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["pca_2d", "save_embedding_plot", "save_image_grid", "to_display"]


def to_display(images: Tensor) -> np.ndarray:
    """``(B, C, H, W)`` float tensor -> ``(B, H, W, C)`` numpy in [0, 1] (mono keeps C=1)."""
    array = images.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return array[..., :3] if array.shape[-1] > 3 else array


def save_image_grid(
    rows: Sequence[Tensor], row_titles: Sequence[str], path: str | Path, max_columns: int = 8
) -> Path:
    """Save rows of images (each ``(B, C, H, W)`` in [0, 1]) as one PNG grid.

    Args:
        rows: one tensor per row, e.g. input / masked input / reconstruction.
        row_titles: a label for each row.
        path: output PNG path (folders are created).
        max_columns: at most this many images per row.
    """
    if len(rows) != len(row_titles):
        raise ValueError(f"Got {len(rows)} rows but {len(row_titles)} titles.")
    columns = min(max_columns, min(r.shape[0] for r in rows))
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.6 * columns, 1.7 * len(rows)), squeeze=False
    )
    for r, (images, title) in enumerate(zip(rows, row_titles, strict=True)):
        shown = to_display(images[:columns])
        for c in range(columns):
            ax = axes[r][c]
            image = shown[c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def pca_2d(features: Tensor) -> Tensor:
    """Project ``(N, D)`` features on their first two principal components."""
    centred = features.float() - features.float().mean(dim=0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T


def save_embedding_plot(
    features: Tensor,
    labels: Tensor,
    class_names: Sequence[str] | None,
    path: str | Path,
    title: str = "Embeddings (PCA)",
) -> Path:
    """Scatter of the 2-D PCA of ``features`` coloured by label (``-1`` = unlabeled)."""
    points = pca_2d(features).cpu().numpy()
    labels_np = labels.cpu().numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for value in np.unique(labels_np):
        chosen = labels_np == value
        if value < 0:
            name = "unlabeled"
        elif class_names is not None and value < len(class_names):
            name = class_names[value]
        else:
            name = str(value)
        ax.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.7, label=name)
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
