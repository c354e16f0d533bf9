"""Sampling images for the diagnosis: a dataset's files read at a small size, as float arrays.

``lit_ssl.diagnose`` (the closed forms) and ``defect_sensitivity`` (features of pasted defects)
read images the same way: any layout, 8/16-bit and float files, channels converted, unreadable
files skipped with a note, one bit depth for the sample.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lit_ssl.data.io import (
    IMAGE_EXTENSIONS,
    BadImageError,
    convert_channels,
    infer_bit_depth,
    read_raw,
    to_float,
)
from lit_ssl.data.layouts import GOOD_NAMES, find_samples
from lit_ssl.data.synthetic import default_dataset

__all__ = ["defect_label", "load_good_images", "load_images", "pick_samples", "resolve_samples"]

Array = np.ndarray


def resolve_samples(root: str | os.PathLike[str] | None, layout: str) -> tuple[Path, str, list]:
    path = Path(root) if root is not None else default_dataset()
    resolved, samples = find_samples(path, layout)
    if not samples:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(
            f"no images found under {path} (layout {resolved!r}); expected files with "
            f"extensions {extensions} (any case); hidden files and folders are ignored"
        )
    return path, resolved, samples


def defect_label(name: str | None) -> int:
    if name is None:
        return -1
    return 0 if name.lower() in GOOD_NAMES else 1


def pick_samples(samples: list, num_images: int, rng: np.random.Generator) -> list:
    """Up to ``num_images`` samples; defects (if any) fill at most half, so the probe has both."""
    order = rng.permutation(len(samples))
    defects = [samples[i] for i in order if defect_label(samples[i].label) == 1]
    others = [samples[i] for i in order if defect_label(samples[i].label) != 1]
    n_def = min(len(defects), max(num_images // 2, num_images - len(others)))
    return sorted(defects[:n_def] + others[: num_images - n_def], key=lambda s: s.path)


def _shrink(image: Array, side: int) -> Array:
    short = min(image.shape[:2])
    if short <= side:
        return image
    scale = side / short
    shape = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    out = cv2.resize(image, shape, interpolation=cv2.INTER_AREA)
    return out.reshape(*out.shape[:2], -1)


def _read(samples: list, side: int, progress: bool) -> tuple[list, list, list[str]]:
    """Decode, shrink (short side ``side``) and keep native dtype; skip unreadable files."""
    kept, raws, bad = [], [], []
    for s in tqdm(samples, desc="reading", disable=not progress, leave=False):
        try:
            raw, declared = read_raw(s.path)
        except BadImageError as error:
            bad.append(str(error))
            continue
        kept.append((s, declared, int(raw.max()) if raw.dtype == np.uint16 else 0))
        raws.append(_shrink(raw, side))
    return kept, raws, bad


def _bit_depth(kept: list) -> int | None:
    declared = [d for _, d, _ in kept if d is not None and 8 < d < 16]
    if declared:
        return min(declared)
    peak = max((m for _, _, m in kept), default=0)
    return infer_bit_depth(peak) if peak > 0 else None


def load_images(samples: list, size: int, in_chans: int, progress: bool):
    """Images as float32 ``H x W x in_chans`` in [0, 1], their labels, and warnings."""
    kept, raws, bad = _read(samples, 4 * size, progress)
    notes = []
    if bad:
        listed = "; ".join(bad[:5]) + (f"; ... {len(bad) - 5} more" if len(bad) > 5 else "")
        notes.append(
            f"{len(bad)} of {len(samples)} files are unreadable and were skipped: {listed}"
        )
    if not kept:
        raise ValueError(f"none of the {len(samples)} sampled image files is readable: {bad[0]}")
    depth = _bit_depth(kept)
    images = [convert_channels(to_float(r, depth), in_chans) for r in raws]
    labels = np.array([defect_label(s.label) for s, _, _ in kept])
    return images, labels, notes


def load_good_images(
    root: str | os.PathLike[str] | None,
    layout: str = "auto",
    num_images: int = 64,
    size: int = 64,
    in_chans: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Tensor, list[str]]:
    """Up to ``num_images`` good (or unlabelled) images of a dataset, resized to ``size``.

    Reads through the same path as :func:`lit_ssl.diagnose` (any layout, bit depths, channel
    conversion, unreadable files skipped with a note); defect images are left out.

    Args:
        root: Dataset folder or CSV manifest; None = the embedded synthetic data.
        layout: ``"auto"`` or a layout name.
        num_images: Images to sample.
        size: Side of the square images returned.
        in_chans: Channels (1 or 3).
        seed: Seed of the sample.
        progress: Show a progress bar while reading.

    Returns:
        ``((N, in_chans, size, size) float32 tensor in [0, 1], notes)``.

    Raises:
        ValueError: No (good, readable) image.

    Example:
        >>> images, notes = load_good_images(None, num_images=8, size=32, progress=False)
        >>> tuple(images.shape)
        (8, 1, 32, 32)
    """
    path, resolved, samples = resolve_samples(root, layout)
    good = [s for s in samples if defect_label(s.label) != 1]
    if not good:
        raise ValueError(
            f"all {len(samples)} images under {path} ({resolved}) are labelled as defects; "
            "the sensitivity check pastes defects into good (or unlabelled) images"
        )
    order = np.random.default_rng(seed).permutation(len(good))[:num_images]
    picked = sorted((good[i] for i in order), key=lambda s: s.path)
    images, _, notes = load_images(picked, size, in_chans, progress)
    square = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images]
    array = np.stack([im.reshape(size, size, -1) for im in square]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).clamp(0, 1), notes
