"""Seeded synthetic factory imagery: textured materials, small defects, strong nuisance.

Each image is a material texture (brushed metal, woven fabric, wood grain, cast stone, printed
circuit), optionally one defect (scratch, crack, stain spot, hole, contamination) with its
ground-truth mask, then nuisance of strength ``nuisance`` (0 = none): pose jitter, exposure,
illumination gradient, vignetting and low-frequency shading; then small fixed sensor noise.
Nuisance is the paper's "high-variance irrelevant component": :func:`measure_energy` reports how
its energy compares with the defects' (about 5x at ``nuisance=0.25``, 15x at 0.5, 50x at 1 and
110x at 1.5, per pixel, 64-px mixed materials).

Everything is vectorised numpy/OpenCV (several hundred 128-px images per second on one core).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lit_ssl.data.materials import MATERIALS, TEXTURES, lowfreq

__all__ = [
    "DEFECTS",
    "MATERIALS",
    "SyntheticImage",
    "default_dataset",
    "generate_image",
    "measure_energy",
    "write_synthetic_dataset",
]

DEFECTS = ("scratch", "crack", "spot", "hole", "contamination")
_VERSION = 2
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
Rng = np.random.Generator


@dataclass
class SyntheticImage:
    """One generated image and the parts it was made of (all float32, ``H x W x C``).

    Attributes:
        image: Final image in [0, 1] (texture + defect + nuisance + sensor noise).
        mask: Ground-truth defect mask (``H x W`` uint8, 0 or 255) after pose jitter.
        defect: Defect name, or None for a defect-free image.
        defect_delta: Change the defect made to the texture (before nuisance).
        nuisance_delta: Change the nuisance made (before sensor noise).
    """

    image: np.ndarray
    mask: np.ndarray
    defect: str | None
    defect_delta: np.ndarray
    nuisance_delta: np.ndarray


# ---------------------------------------------------------------- defects (alpha, then effect)


def _point(rng: Rng, size: int, margin: float = 0.15) -> tuple[int, int]:
    lo, hi = int(margin * size), int((1 - margin) * size)
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def _scratch(rng: Rng, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cx, cy = _point(rng, size, 0.25)
    half, angle = rng.uniform(0.12, 0.25) * size, rng.uniform(0, np.pi)
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    ends = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
    cv2.line(canvas, *ends, 255, max(1, round(size / 48)), cv2.LINE_AA)
    return canvas


def _crack(rng: Rng, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    steps = rng.uniform(-0.6, 0.6, 9).cumsum() + rng.uniform(0, 2 * np.pi)
    step = size / 22
    points = np.stack([np.cos(steps), np.sin(steps)], 1).cumsum(0) * step
    points += np.array(_point(rng, size, 0.3)) - points.mean(0)
    cv2.polylines(canvas, [points.astype(np.int32)], False, 255, max(1, round(size / 64)))
    return canvas


def _spot(rng: Rng, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    axes = tuple(int(max(2, rng.uniform(0.04, 0.09) * size)) for _ in range(2))
    cv2.ellipse(canvas, _point(rng, size), axes, rng.uniform(0, 180), 0, 360, 255, -1)
    return cv2.GaussianBlur(canvas, (0, 0), max(axes) / 4)


def _hole(rng: Rng, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    radius = int(max(2, rng.uniform(0.03, 0.055) * size))
    cv2.circle(canvas, _point(rng, size), radius, 255, -1, cv2.LINE_AA)
    return canvas


def _contamination(rng: Rng, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    centre = np.array(_point(rng, size))
    spread, radius = 0.07 * size, max(1, round(size / 48))
    for offset in rng.normal(0, spread, (int(rng.integers(4, 9)), 2)):
        cv2.circle(canvas, tuple(int(v) for v in centre + offset), radius, 255, -1, cv2.LINE_AA)
    return canvas


_SHAPES: dict[str, Callable[[Rng, int], np.ndarray]] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "hole": _hole,
    "contamination": _contamination,
}
DEFECT_SHAPES = _SHAPES  # public: other checks paste the same shapes (diagnosis)
_TARGETS = {  # (multiply, add): defect pixels become texture * multiply + add
    "scratch": ((0.6, 0.6, 0.6), (0.42, 0.42, 0.42)),
    "crack": ((0.25, 0.25, 0.25), (0.0, 0.0, 0.0)),
    "spot": ((0.5, 0.42, 0.35), (0.0, 0.0, 0.0)),
    "hole": ((0.0, 0.0, 0.0), (0.04, 0.04, 0.04)),
    "contamination": ((0.1, 0.1, 0.1), (0.2, 0.14, 0.08)),
}


def _add_defect(texture: np.ndarray, defect: str, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    alpha = (_SHAPES[defect](rng, texture.shape[0]).astype(np.float32) / 255)[:, :, None]
    multiply, add = (np.asarray(v, np.float32) for v in _TARGETS[defect])
    target = texture * multiply + add
    image = texture * (1 - alpha) + target * alpha
    mask = np.where(alpha[:, :, 0] > 0.3, 255, 0).astype(np.uint8)
    return image, mask


# ---------------------------------------------------------------- nuisance


def _pose(image: np.ndarray, mask: np.ndarray, s: float, rng: Rng) -> tuple[np.ndarray, ...]:
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-10, 10) * s, 1.0)
    matrix[:, 2] += rng.uniform(-0.05, 0.05, 2) * size * s
    border = cv2.BORDER_REFLECT_101
    image = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    mask = cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_NEAREST, borderMode=border)
    return image, mask


def _shading(size: int, s: float, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y) / np.sqrt(2)
    centre = rng.uniform(-0.3, 0.3, 2)
    radius2 = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / 2
    exposure = 2.0 ** (rng.uniform(-0.7, 0.7) * s)
    gain = exposure * (1 + rng.uniform(0.5, 1.0) * 0.5 * s * ramp)
    gain *= 1 - rng.uniform(0.0, 0.4) * s * radius2
    offset = 0.06 * s * lowfreq(rng, size, 4)
    return gain[:, :, None], offset[:, :, None]


def _nuisance(image: np.ndarray, mask: np.ndarray, s: float, rng: Rng) -> tuple[np.ndarray, ...]:
    if s <= 0:
        return image, mask
    image, mask = _pose(image, mask, s, rng)
    gain, offset = _shading(image.shape[0], s, rng)
    return image * gain + offset, mask


# ---------------------------------------------------------------- one image


def generate_image(
    rng: Rng,
    material: str = "metal",
    defect: str | None = None,
    image_size: int = 64,
    channels: int = 3,
    nuisance: float = 0.5,
    sensor_noise: float = 0.01,
) -> SyntheticImage:
    """Generate one image.

    Args:
        rng: numpy Generator (the only source of randomness).
        material: One of :data:`MATERIALS`.
        defect: One of :data:`DEFECTS`, or None for a defect-free image.
        image_size: Side in pixels.
        channels: 1 (grey) or 3 (RGB).
        nuisance: Nuisance strength; 0 = none, 0.5 = default, 1 = strong.
        sensor_noise: Standard deviation of the fixed Gaussian sensor noise.

    Returns:
        The image and its parts.
    """
    texture = TEXTURES[material](image_size, rng)
    if defect is None:
        defective, mask = texture, np.zeros((image_size, image_size), np.uint8)
    else:
        defective, mask = _add_defect(texture, defect, rng)
    final, mask = _nuisance(defective, mask, nuisance, rng)
    nuisance_delta = final - defective
    final = final + sensor_noise * rng.standard_normal(final.shape, dtype=np.float32)
    if channels == 1:
        final = final @ _LUMA
    final = np.clip(final, 0.0, 1.0).reshape(image_size, image_size, channels)
    return SyntheticImage(final, mask, defect, defective - texture, nuisance_delta)


def _check_args(material: str, defects: Sequence[str], channels: int) -> None:
    if material not in (*MATERIALS, "mixed"):
        raise ValueError(f"unknown material {material!r}; use 'mixed' or one of {MATERIALS}")
    unknown = sorted(set(defects) - set(DEFECTS))
    if unknown:
        raise ValueError(f"unknown defects {unknown}; choose from {DEFECTS}")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}; synthetic images have 1 or 3 channels")


def _material(material: str, rng: Rng) -> str:
    return str(rng.choice(MATERIALS)) if material == "mixed" else material


def measure_energy(
    nuisance: float, n: int = 64, image_size: int = 64, material: str = "metal", seed: int = 0
) -> dict[str, float]:
    """Mean squared energy of nuisance vs defects, over ``n`` defective images.

    Args:
        nuisance: Nuisance strength.
        n: Number of images (defect types cycle).
        image_size: Side in pixels.
        material: Material or ``"mixed"``.
        seed: Seed.

    Returns:
        ``{"nuisance_energy", "defect_energy", "ratio"}`` (energies per pixel and channel).
    """
    rng = np.random.default_rng(seed)
    nuis = defect = 0.0
    for i in range(n):
        kind = DEFECTS[i % len(DEFECTS)]
        sample = generate_image(rng, _material(material, rng), kind, image_size, 3, nuisance)
        nuis += float(np.mean(sample.nuisance_delta**2))
        defect += float(np.mean(sample.defect_delta**2))
    return {"nuisance_energy": nuis / n, "defect_energy": defect / n, "ratio": nuis / defect}


# ---------------------------------------------------------------- datasets on disk


def _write_png(path: Path, image: np.ndarray) -> None:
    pixels = np.rint(image * 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")


def _plan(n_train: int, n_test_good: int, n_per_defect: int, defects: Sequence[str]) -> list:
    plan = [("train", None, i) for i in range(n_train)]
    plan += [("test", None, i) for i in range(n_test_good)]
    plan += [("test", d, i) for d in defects for i in range(n_per_defect)]
    return plan


def write_synthetic_dataset(
    root: str | os.PathLike[str],
    *,
    material: str = "metal",
    image_size: int = 64,
    channels: int = 3,
    n_train: int = 200,
    n_test_good: int = 40,
    n_per_defect: int = 40,
    defects: Sequence[str] = DEFECTS,
    nuisance: float = 0.5,
    sensor_noise: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an MVTec-style tree of synthetic factory images with ground-truth masks.

    Layout: ``train/good/NNN.png``, ``test/good/NNN.png``, ``test/<defect>/NNN.png``,
    ``ground_truth/<defect>/NNN_mask.png`` and ``synthetic.json`` (parameters, counts, and the
    nuisance/defect energy ratio).

    Args:
        root: Destination folder (created).
        material: One of :data:`MATERIALS`, or ``"mixed"`` (random per image).
        image_size: Side in pixels.
        channels: 1 (grey) or 3 (RGB).
        n_train: Defect-free training images.
        n_test_good: Defect-free test images.
        n_per_defect: Test images per defect type.
        defects: Defect types to include.
        nuisance: Nuisance strength (0 = none).
        sensor_noise: Fixed sensor noise standard deviation.
        seed: Seed; the same arguments give the same files.
        overwrite: Replace an existing non-empty ``root``.

    Returns:
        ``root`` as a Path.

    Raises:
        FileExistsError: ``root`` is not empty and ``overwrite`` is False.
    """
    _check_args(material, defects, channels)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True or another folder")
        shutil.rmtree(root)
    plan = _plan(n_train, n_test_good, n_per_defect, defects)
    rng = np.random.default_rng(seed)
    for split, defect, index in plan:
        sample = generate_image(
            rng, _material(material, rng), defect, image_size, channels, nuisance, sensor_noise
        )
        _write_png(root / split / (defect or "good") / f"{index:03d}.png", sample.image)
        if defect is not None:
            _write_png(root / "ground_truth" / defect / f"{index:03d}_mask.png", sample.mask / 255)
    info = {
        "generator_version": _VERSION,
        "material": material,
        "image_size": image_size,
        "channels": channels,
        "counts": {"train": n_train, "test_good": n_test_good, "per_defect": n_per_defect},
        "defects": list(defects),
        "nuisance": nuisance,
        "sensor_noise": sensor_noise,
        "seed": seed,
        "energy": measure_energy(nuisance, 32, image_size, material, seed),
    }
    (root / "synthetic.json").write_text(json.dumps(info, indent=2))
    return root


def cache_dir() -> Path:
    """Cache root: ``$LIT_SSL_CACHE`` or ``~/.cache/lit_ssl``."""
    return Path(os.environ.get("LIT_SSL_CACHE") or Path.home() / ".cache" / "lit_ssl")


def default_dataset(
    nuisance: float = 0.5,
    image_size: int = 64,
    channels: int = 3,
    material: str = "metal",
    seed: int = 0,
) -> Path:
    """Path of the embedded default dataset, generated once into the cache and reused.

    The folder is keyed by the arguments and the generator version; generation writes into a
    temporary folder and renames it, so concurrent processes (DDP ranks) are safe. The default is
    200 training and 240 test images of 64 px (about two seconds to generate).

    Args:
        nuisance: Nuisance strength.
        image_size: Side in pixels.
        channels: 1 or 3.
        material: Material or ``"mixed"``.
        seed: Seed.

    Returns:
        Path of an MVTec-style tree.
    """
    params = dict(nuisance=nuisance, image_size=image_size, channels=channels)
    params |= dict(material=material, seed=seed, version=_VERSION)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_dir() / f"synthetic-{key}"
    if (target / "synthetic.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=target.parent))
    kwargs = dict(material=material, image_size=image_size, channels=channels)
    write_synthetic_dataset(scratch, **kwargs, nuisance=nuisance, seed=seed, overwrite=True)
    try:
        scratch.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(scratch, ignore_errors=True)
    return target
