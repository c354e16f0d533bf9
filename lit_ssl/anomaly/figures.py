"""Anomaly-map pictures: heat-map overlays on the image, the test figures, the predict PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["overlay", "save_overlay_png", "save_test_figures"]


def overlay(images: Tensor, maps: Tensor, scale: Tensor | float, alpha: float = 0.5) -> Tensor:
    """The maps as a jet heat map blended over the images.

    Args:
        images: ``(B, C, H, W)`` floats in [0, 1] (one or three channels).
        maps: ``(B, 1, H, W)`` anomaly maps.
        scale: the map value shown as the hottest colour (e.g. twice the threshold), a number
            or one per image ``(B,)``.
        alpha: weight of the heat map.

    Returns:
        ``(B, 3, H, W)`` floats in [0, 1], on the CPU.
    """
    from matplotlib import colormaps

    images, maps = images.detach().float().cpu(), maps.detach().float().cpu()
    scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1, 1, 1, 1).clamp_min(1e-12)
    values = (maps / scale).clamp(0, 1)[:, 0].numpy()
    heat = torch.from_numpy(colormaps["jet"](values)[..., :3]).float().permute(0, 3, 1, 2)
    rgb = images[:, :3].expand(-1, 3, -1, -1)
    return ((1 - alpha) * rgb + alpha * heat).clamp(0, 1)


def save_overlay_png(image: Tensor, overlaid: Tensor, path: str | Path) -> Path:
    """Save one image and its overlay side by side (``(C, H, W)`` and ``(3, H, W)``)."""
    from PIL import Image

    rgb = image.detach().float().cpu()[:3].expand(3, -1, -1)
    pair = torch.cat([rgb, overlaid.cpu()], dim=-1).clamp(0, 1)
    pixels = (pair.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def save_test_figures(
    worst: tuple[Tensor, Tensor, Tensor],
    best: tuple[Tensor, Tensor, Tensor],
    roc: tuple[Tensor, Tensor, float],
    directory: str | Path,
) -> list[Path]:
    """``test_worst_maps.png``, ``test_best_maps.png`` and ``test_roc.png`` in ``directory``.

    Args:
        worst: ``(images, maps, scores)`` of the test images the detector got most wrong
            (highest-scoring good ones, lowest-scoring defects).
        best: the same for those it got most right.
        roc: ``(fpr, tpr, auroc)`` of the image scores.
        directory: the run's figures folder.
    """
    from lit_ssl.classify.metrics import save_roc_curve
    from lit_ssl.figures import save_image_grid

    directory = Path(directory)
    scale = torch.cat([worst[1].flatten(), best[1].flatten()]).max()
    paths = []
    for name, (images, maps, _) in (("worst", worst), ("best", best)):
        if images.shape[0] == 0:
            continue
        rows = [images, overlay(images, maps, scale)]
        titles = [f"{name}: image", f"{name}: anomaly map"]
        paths.append(save_image_grid(rows, titles, directory / f"test_{name}_maps.png"))
    fpr, tpr, auroc = roc
    paths.append(save_roc_curve(fpr, tpr, auroc, directory / "test_roc.png"))
    return paths
