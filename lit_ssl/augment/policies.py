"""Named augmentation presets for factory imagery, and their YAML round trip.

Every preset starts with ``ToFloat`` (so ``uint8``, ``uint16`` and float input all work and every
later transform sees float32 in [0, 1]) and a resize to ``image_size`` that keeps the aspect ratio
(:func:`letterbox`: longest side to ``image_size``, then centred zero padding to the square; a
mask is padded with -1, unknown); none normalises (that lives inside the Backbone). Presets
re-sample nuisance (illumination, exposure, noise, pose) and avoid transforms that erase or
fake defects: no cutout/erasing, no aggressive random-resized crop, no strong blur; geometric
transforms use reflect borders (a black border looks like an edge defect).

- ``surface``: flat textured parts. Flips, 90-degree rotations, small shift/scale, illumination
  gradient, vignetting, brightness/contrast/gamma, sensor noise.
- ``object``: discrete parts whose orientation may be a defect cue. No flips; small rotation,
  scale and shift; the same photometric nuisance.
- ``minimal``: resize only, letterboxed (evaluation, and the clean view of denoising heads).
- ``natural``: the SimCLR/BYOL ImageNet pipeline (random-resized crop with scale (0.08, 1),
  colour jitter, grey, blur, solarise), for comparison only: it does crop defects away.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from lit_ssl.augment.transforms import (
    IlluminationGradient,
    PoissonGaussianNoise,
    Vignetting,
)

__all__ = [
    "PRESETS",
    "letterbox",
    "load_policy",
    "policy",
    "policy_from_yaml",
    "policy_to_yaml",
    "save_policy",
    "seed_policy",
]

PRESETS = ("surface", "object", "minimal", "natural")
_REFLECT = cv2.BORDER_REFLECT_101


def letterbox(image_size: int) -> list[A.BasicTransform]:
    """Resize the longest side to ``image_size`` and pad to a square, aspect ratio kept.

    Area interpolation; the padding is centred, constant 0 in the image and -1 ("unknown")
    in a mask passed alongside. A square input gives exactly ``A.Resize(image_size,
    image_size, interpolation=cv2.INTER_AREA)``.

    Args:
        image_size: Side of the square output.

    Returns:
        The two transforms (``LongestMaxSize``, ``PadIfNeeded``).
    """
    return [
        A.LongestMaxSize(max_size=image_size, interpolation=cv2.INTER_AREA, p=1.0),
        A.PadIfNeeded(
            min_height=image_size,
            min_width=image_size,
            position="center",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=-1,
            p=1.0,
        ),
    ]


def _head(image_size: int) -> list[A.BasicTransform]:
    return [A.ToFloat(max_value=None, p=1.0), *letterbox(image_size)]


def _photometric() -> list[A.BasicTransform]:
    # Ranges cover the exposure/illumination swings of a real line (and of the synthetic
    # generator up to nuisance=1): a policy narrower than the nuisance leaves its excess
    # looking like content to a joint-embedding objective (see lit-ssl diagnose).
    return [
        IlluminationGradient(strength_range=(0.0, 0.5), p=0.8),
        Vignetting(strength_range=(0.0, 0.4), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8),
        A.RandomGamma(gamma_limit=(70, 140), p=0.5),
        PoissonGaussianNoise(shot_range=(0.0, 0.002), read_range=(0.0, 0.015), p=0.5),
    ]


def _surface(image_size: int, in_chans: int) -> list[A.BasicTransform]:
    geometry = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.Affine(translate_percent=(-0.05, 0.05), scale=(0.95, 1.05), border_mode=_REFLECT, p=0.7),
    ]
    return _head(image_size) + geometry + _photometric()


def _object(image_size: int, in_chans: int) -> list[A.BasicTransform]:
    geometry = [
        A.Affine(
            translate_percent=(-0.04, 0.04),
            scale=(0.95, 1.05),
            rotate=(-10, 10),
            border_mode=_REFLECT,
            p=0.7,
        )
    ]
    return _head(image_size) + geometry + _photometric()


def _minimal(image_size: int, in_chans: int) -> list[A.BasicTransform]:
    return _head(image_size)


def _natural(image_size: int, in_chans: int) -> list[A.BasicTransform]:
    if in_chans == 3:
        colour = [
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
            A.ToGray(num_output_channels=3, p=0.2),
        ]
    else:
        colour = [A.RandomBrightnessContrast(brightness_limit=0.4, contrast_limit=0.4, p=0.8)]
    blur = max(3, (image_size // 10) | 1)
    return [
        A.ToFloat(max_value=None, p=1.0),
        A.RandomResizedCrop(size=(image_size, image_size), scale=(0.08, 1.0), p=1.0),
        A.HorizontalFlip(p=0.5),
        *colour,
        A.GaussianBlur(blur_limit=(3, blur), sigma_limit=(0.1, 2.0), p=0.5),
        A.Solarize(threshold_range=(0.5, 0.5), p=0.2),
    ]


_BUILDERS = {"surface": _surface, "object": _object, "minimal": _minimal, "natural": _natural}


def policy(
    name: str, image_size: int = 64, in_chans: int = 3, seed: int | None = None
) -> A.Compose:
    """Build a named preset, or load a policy from a YAML file.

    Args:
        name: One of :data:`PRESETS`, or a path to a ``.yaml``/``.yml`` policy (then
            ``image_size`` and ``in_chans`` are whatever the file says).
        image_size: Side of the square output, in pixels.
        in_chans: Channels of the input images (1 or 3); picks colour or grey jitter.
        seed: Seed of the Compose's private RNG (albumentations does not serialise it).

    Returns:
        An ``albumentations.Compose`` mapping an ``H x W x C`` image (uint8, uint16 or float)
        to a float32 ``image_size x image_size x C`` image in about [0, 1].

    Raises:
        ValueError: Unknown preset name.
    """
    if name.lower().endswith((".yaml", ".yml")):
        compose = load_policy(name)
    elif name in _BUILDERS:
        compose = A.Compose(_BUILDERS[name](image_size, in_chans), strict=True)
    else:
        raise ValueError(f"unknown policy {name!r}; use one of {PRESETS} or a .yaml file")
    seed_policy(compose, seed)
    return compose


def seed_policy(compose: A.Compose, seed: int | None) -> None:
    """Seed a policy with ONE random stream that all its transforms draw from in turn.

    albumentations' ``Compose.set_random_seed`` gives every transform its own generator started
    from the same seed, so all transforms draw the same numbers: whether each one applies (its
    ``p``) and its strength move together (illumination, vignetting, contrast, gamma, noise
    all on or all off). One shared stream makes them independent, as the policy means.

    Args:
        compose: the policy.
        seed: any integer; ``None`` seeds from the operating system.
    """
    generator, py_random = np.random.default_rng(seed), random.Random(seed)
    compose.seed = seed
    compose.set_random_state(generator, py_random)


def _drop_inherited_padding(node: object) -> None:
    """albumentations 2.0.8 writes ``PadIfNeeded``'s inherited ``padding`` (always 0), which
    its constructor rejects with a warning on load: leave it out."""
    if isinstance(node, dict):
        if node.get("__class_fullname__") == "PadIfNeeded":
            node.pop("padding", None)
        for value in node.values():
            _drop_inherited_padding(value)
    elif isinstance(node, list):
        for value in node:
            _drop_inherited_padding(value)


def policy_to_yaml(compose: A.Compose) -> str:
    """Serialise a policy to YAML text (the seed is not included)."""
    import yaml

    data = compose.to_dict()
    _drop_inherited_padding(data)
    return yaml.safe_dump(data, default_flow_style=False)


def policy_from_yaml(text: str) -> A.Compose:
    """Rebuild a policy from YAML text written by :func:`policy_to_yaml`."""
    import io

    return A.load(io.StringIO(text), data_format="yaml")


def save_policy(compose: A.Compose, path: str | os.PathLike[str]) -> None:
    """Write a policy to a YAML file (recipes can then carry a full custom policy).

    Args:
        compose: The policy.
        path: Destination ``.yaml`` file.
    """
    Path(path).write_text(policy_to_yaml(compose))


def load_policy(path: str | os.PathLike[str]) -> A.Compose:
    """Read a policy from a YAML file written by :func:`save_policy` or by hand.

    Args:
        path: A ``.yaml`` file in albumentations' serialisation format.

    Returns:
        The policy (custom lit_ssl transforms are registered by importing this module).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy file {path} does not exist; check the path")
    return policy_from_yaml(path.read_text())
