"""Small image files for tests that build a user's folder by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

RNG = np.random.default_rng(0)


def write_png(path: Path, value: int | None = None) -> Path:
    """A random 20x20 RGB PNG at ``path`` (every pixel ``value`` when given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = RNG.integers(0, 255, (20, 20, 3), endpoint=True).astype(np.uint8)
    if value is not None:
        image[:] = value
    assert cv2.imwrite(str(path), image)
    return path
