"""Factory nuisance transforms that albumentations lacks, as serialisable albumentations transforms.

All three re-sample a nuisance of factory imaging (uneven illumination, lens vignetting, sensor
noise) and leave the structure of defects alone. They accept float images in [0, 1] (the policies
convert to float first) as well as ``uint8``/``uint16``, with 1 or more channels, and draw their
randomness from the owning ``Compose``'s RNG, so ``lit_ssl.augment.policies.seed_policy``
controls them.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema

__all__ = ["IlluminationGradient", "PoissonGaussianNoise", "Vignetting"]

_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _apply_float(img: np.ndarray, fn: Any) -> np.ndarray:
    """Run ``fn`` on a float32 [0, 1] view of ``img`` and convert back to its dtype."""
    scale = _MAX.get(img.dtype)
    if scale is None:
        return np.clip(fn(img.astype(np.float32, copy=False)), 0.0, 1.0).astype(img.dtype)
    out = np.clip(fn(img.astype(np.float32) / scale), 0.0, 1.0) * scale
    return np.rint(out).astype(img.dtype)


def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    height, width = shape[:2]
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    return y, x


def _gain_field(img: np.ndarray, field: np.ndarray) -> np.ndarray:
    return img * (field[:, :, None] if img.ndim == 3 else field)


class IlluminationGradient(A.ImageOnlyTransform):
    """Multiply the image by a linear illumination ramp in a random direction.

    The gain goes from ``1 - s`` to ``1 + s`` across the image, ``s`` drawn from
    ``strength_range``.

    Args:
        strength_range: Range of the half-amplitude ``s`` of the ramp, in [0, 1).
        p: Probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        strength_range: tuple[float, float]

    def __init__(self, strength_range: tuple[float, float] = (0.0, 0.3), p: float = 0.5):
        super().__init__(p=p)
        self.strength_range = tuple(strength_range)

    def get_params(self) -> dict[str, Any]:
        """Draw the ramp's strength and direction."""
        return {
            "strength": self.py_random.uniform(*self.strength_range),
            "angle": self.py_random.uniform(0.0, 2.0 * np.pi),
        }

    def apply(self, img: np.ndarray, strength: float, angle: float, **params: Any) -> np.ndarray:
        """Apply the ramp."""
        y, x = _grid(img.shape)
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        ramp = (cos * x + sin * y) / np.float32(abs(cos) + abs(sin))  # -1 to 1 corner to corner
        return _apply_float(img, lambda f: _gain_field(f, 1.0 + np.float32(strength) * ramp))


class Vignetting(A.ImageOnlyTransform):
    """Darken the image towards its corners around a slightly shifted optical centre.

    Args:
        strength_range: Range of the darkening at the farthest corner, in [0, 1).
        center_shift: Largest shift of the optical centre, as a fraction of the half-size.
        p: Probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        strength_range: tuple[float, float]
        center_shift: float

    def __init__(
        self,
        strength_range: tuple[float, float] = (0.0, 0.3),
        center_shift: float = 0.2,
        p: float = 0.5,
    ):
        super().__init__(p=p)
        self.strength_range = tuple(strength_range)
        self.center_shift = center_shift

    def get_params(self) -> dict[str, Any]:
        """Draw the strength and the optical centre."""
        shift = self.center_shift
        return {
            "strength": self.py_random.uniform(*self.strength_range),
            "cx": self.py_random.uniform(-shift, shift),
            "cy": self.py_random.uniform(-shift, shift),
        }

    def apply(
        self, img: np.ndarray, strength: float, cx: float, cy: float, **params: Any
    ) -> np.ndarray:
        """Apply the vignette."""
        y, x = _grid(img.shape)
        radius2 = (x - np.float32(cx)) ** 2 + (y - np.float32(cy)) ** 2
        field = 1.0 - np.float32(strength) * radius2 / radius2.max()
        return _apply_float(img, lambda f: _gain_field(f, field))


class PoissonGaussianNoise(A.ImageOnlyTransform):
    """Camera sensor noise: signal-dependent shot noise plus signal-independent read noise.

    Noise variance per pixel is ``shot * x + read**2`` for an image ``x`` in [0, 1] (the
    Poisson-Gaussian model, Gaussian approximation of the Poisson part).

    Args:
        shot_range: Range of the shot-noise gain ``shot``.
        read_range: Range of the read-noise standard deviation ``read``.
        p: Probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        shot_range: tuple[float, float]
        read_range: tuple[float, float]

    def __init__(
        self,
        shot_range: tuple[float, float] = (0.0, 0.002),
        read_range: tuple[float, float] = (0.0, 0.02),
        p: float = 0.5,
    ):
        super().__init__(p=p)
        self.shot_range = tuple(shot_range)
        self.read_range = tuple(read_range)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Draw the noise gains and a standard-normal field of the image's shape."""
        shape = params["shape"]
        return {
            "shot": self.py_random.uniform(*self.shot_range),
            "read": self.py_random.uniform(*self.read_range),
            "normal": self.random_generator.standard_normal(shape, dtype=np.float32),
        }

    def apply(
        self, img: np.ndarray, shot: float, read: float, normal: np.ndarray, **params: Any
    ) -> np.ndarray:
        """Add the noise."""
        normal = normal.reshape(img.shape)

        def noisy(f: np.ndarray) -> np.ndarray:
            sigma = np.sqrt(np.float32(shot) * np.maximum(f, 0.0) + np.float32(read) ** 2)
            return f + sigma * normal

        return _apply_float(img, noisy)
