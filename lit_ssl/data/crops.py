"""Training windows of the native pixels: random, overlapping, or holding a known defect.

``FactoryDataModule(crop_size=N)`` cuts every augmented training view out of the decoded frame
(native dtype: a 16-bit frame stays 16-bit until the small window is cut) before the view's
policy resizes it to ``image_size``; ``crop_size == image_size`` keeps the pixels exactly.

- :meth:`WindowSampler.overlapping`: the views of one ssl sample, the first window uniform
  over the frame, every other one shifted from it by at most ``crop_size // 2`` on each axis
  (so the windows overlap).
- :meth:`WindowSampler.random`: one uniform window (a good image of ``task="classify"``).
- :meth:`WindowSampler.containing`: one window holding a defect pixel drawn uniformly from the
  mask's defect pixels (a masked defect image of ``task="classify"``).

A frame smaller than ``crop_size`` on a side is padded with zeros, centred, never stretched
(:func:`cut`). Windows are ``(top, left)`` corners of a ``crop_size`` square.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MIN_CROP", "WindowSampler", "check_crop_size", "cut", "defect_points"]

MIN_CROP = 8
Corner = tuple[int, int]


def check_crop_size(crop_size: int | None) -> None:
    """Raise a ``ValueError`` unless ``crop_size`` is None or an integer of at least 8."""
    if crop_size is None:
        return
    if isinstance(crop_size, bool) or not isinstance(crop_size, int | np.integer):
        raise ValueError(f"crop_size={crop_size!r}; use a whole number of pixels or None")
    if crop_size < MIN_CROP:
        raise ValueError(
            f"crop_size={crop_size}; use at least {MIN_CROP} pixels, or None to train on whole "
            "frames resized to image_size"
        )


def _span(length: int, size: int) -> int:
    """Largest corner coordinate on an axis of ``length`` pixels (0 when it is too short)."""
    return max(length - size, 0)


def cut(image: np.ndarray, corner: Corner, size: int) -> np.ndarray:
    """The ``size x size`` window of ``image`` at ``corner``, zero-padded (centred) if short.

    Args:
        image: ``H x W [x C]`` array of any dtype (kept).
        corner: ``(top, left)`` of the window.
        size: Window side.

    Returns:
        A ``size x size [x C]`` array (a view of ``image`` when no padding is needed).
    """
    top, left = corner
    window = image[top : top + size, left : left + size]
    short_h, short_w = size - window.shape[0], size - window.shape[1]
    if short_h == 0 and short_w == 0:
        return window
    pad = [(short_h // 2, short_h - short_h // 2), (short_w // 2, short_w - short_w // 2)]
    pad += [(0, 0)] * (image.ndim - 2)
    return np.pad(window, pad, mode="constant", constant_values=0)


def defect_points(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(N, 2)`` row/column coordinates of the defect pixels (``mask > 0``) in a frame.

    Args:
        mask: ``H x W [x C]`` mask (any dtype; channels are merged by ``max``).
        shape: ``(height, width)`` of the image; a mask of another size is resized to it
            (nearest) first.

    Returns:
        int64 coordinates, empty ``(0, 2)`` when the mask marks no pixel.
    """
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    binary = (mask > 0).astype(np.uint8)
    if binary.shape != tuple(shape):
        binary = cv2.resize(binary, shape[::-1], interpolation=cv2.INTER_NEAREST)
    return np.argwhere(binary).astype(np.int64)


class WindowSampler:
    """Draws window corners for one dataset; reseeded per DataLoader worker.

    Args:
        crop_size: Window side in pixels (at least 8).
        seed: Initial seed of the private RNG (see :meth:`reseed`).
    """

    def __init__(self, crop_size: int, seed: int = 0):
        check_crop_size(crop_size)
        self.size = int(crop_size)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the RNG from ``seed`` (any integer; e.g. a worker's torch seed)."""
        self.rng = np.random.default_rng(np.random.SeedSequence([seed % 2**128, 0x0C0F]))

    def random(self, shape: tuple[int, ...]) -> Corner:
        """A uniform corner over a frame of ``shape`` (``H, W, ...``)."""
        top = int(self.rng.integers(0, _span(shape[0], self.size) + 1))
        left = int(self.rng.integers(0, _span(shape[1], self.size) + 1))
        return top, left

    def overlapping(self, shape: tuple[int, ...], count: int) -> list[Corner]:
        """``count`` corners: the first uniform, the others within ``size // 2`` of it."""
        first = np.array(self.random(shape))
        shift = self.size // 2
        spans = np.array([_span(shape[0], self.size), _span(shape[1], self.size)])
        others = first + self.rng.integers(-shift, shift + 1, size=(count - 1, 2))
        others = np.clip(others, 0, spans)
        return [(int(first[0]), int(first[1]))] + [(int(t), int(lf)) for t, lf in others]

    def containing(self, shape: tuple[int, ...], points: np.ndarray) -> Corner:
        """A corner whose window holds one of ``points`` (drawn uniformly), uniform otherwise.

        Args:
            shape: ``(H, W, ...)`` of the frame.
            points: ``(N, 2)`` defect pixel coordinates (:func:`defect_points`), N >= 1.
        """
        row, col = points[int(self.rng.integers(0, len(points)))]
        corner = []
        for point, length in ((int(row), shape[0]), (int(col), shape[1])):
            low = max(0, point - self.size + 1)
            high = min(point, _span(length, self.size))
            corner.append(int(self.rng.integers(low, high + 1)))
        return corner[0], corner[1]
