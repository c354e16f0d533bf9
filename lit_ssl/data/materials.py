"""Material textures of the synthetic factory imagery: brushed metal, woven fabric, wood grain,
cast stone, printed circuit.

Each texture is a seeded ``H x W x 3`` float32 image around mid-grey (about [0, 1]) that
:func:`~lit_ssl.data.synthetic.generate_image` puts defects and nuisance on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

__all__ = ["MATERIALS", "TEXTURES", "lowfreq"]

MATERIALS = ("metal", "fabric", "wood", "stone", "pcb")
Rng = np.random.Generator


def lowfreq(rng: Rng, size: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _coords(size: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y + rng.uniform(0, size), x + rng.uniform(0, size)


def _tint(gray: np.ndarray, colour: Sequence[float]) -> np.ndarray:
    return gray[:, :, None] * np.asarray(colour, dtype=np.float32)


def _metal(size: int, rng: Rng) -> np.ndarray:
    streaks = cv2.blur(rng.standard_normal((size, size)).astype(np.float32), (size // 3, 1))
    streaks *= 0.05 / (streaks.std() + 1e-6)
    gray = 0.55 + streaks + 0.01 * rng.standard_normal((size, size)).astype(np.float32)
    return _tint(gray, (0.96, 1.0, 1.04))


def _fabric(size: int, rng: Rng) -> np.ndarray:
    y, x = _coords(size, rng)
    w = 2 * np.pi / (size / rng.uniform(10, 14))
    weave = np.sign(np.sin(w * x / 2) * np.sin(w * y / 2))
    gray = 0.55 + 0.08 * np.cos(w * x) * np.cos(w * y) + 0.04 * weave
    return _tint(gray.astype(np.float32), (1.0, 0.9, 0.72))


def _wood(size: int, rng: Rng) -> np.ndarray:
    y, _ = _coords(size, rng)
    period = size / rng.uniform(5, 8)
    rings = np.sin(2 * np.pi * (y / period + 0.5 * lowfreq(rng, size, 3)))
    grain = cv2.blur(rng.standard_normal((size, size)).astype(np.float32), (size // 4, 1))
    gray = 0.5 + 0.08 * rings + 0.03 * grain / (grain.std() + 1e-6)
    return _tint(gray.astype(np.float32), (1.1, 0.8, 0.5))


def _stone(size: int, rng: Rng) -> np.ndarray:
    cells = (4, 8, 16, max(16, size // 2))
    octaves = sum(lowfreq(rng, size, c) * 0.5**i for i, c in enumerate(cells))
    gray = 0.5 + 0.06 * octaves / (octaves.std() + 1e-6)
    return _tint(gray, (1.0, 0.98, 0.94))


def _pcb(size: int, rng: Rng) -> np.ndarray:
    copper = np.zeros((size, size), np.uint8)
    width = max(1, size // 40)
    for pos in rng.integers(0, size, 5):
        cv2.line(copper, (0, int(pos)), (size, int(pos)), 255, width)
    for pos in rng.integers(0, size, 4):
        cv2.line(copper, (int(pos), 0), (int(pos), size), 255, width)
    alpha = cv2.GaussianBlur(copper.astype(np.float32) / 255, (3, 3), 0)[:, :, None]
    board = np.array([0.15, 0.42, 0.22], np.float32) * (1 + 0.05 * lowfreq(rng, size, 8))[..., None]
    return board * (1 - alpha) + np.array([0.8, 0.6, 0.3], np.float32) * alpha


TEXTURES: dict[str, Callable[[int, Rng], np.ndarray]] = {
    "metal": _metal,
    "fabric": _fabric,
    "wood": _wood,
    "stone": _stone,
    "pcb": _pcb,
}
