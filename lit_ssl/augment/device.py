"""The factory presets as batched torch on the device: every sample its own random parameters.

``FactoryDataModule(augment_on="device")`` has its workers decode, cut and letterbox windows
in their native dtype (:class:`~lit_ssl.data.batch.FrameBatch`); after the batch reaches the
device, :class:`DeviceViews` scales it to float exactly as the CPU path does, then runs one
:class:`DevicePolicy` per view on one stacked ``(views * B, C, S, S)`` tensor. No Python loop
over samples, no host synchronisation: every parameter is a per-sample tensor drawn from a
``torch.Generator`` on the batch's device, and "not applied" is the identity parameter.

The presets match :mod:`lit_ssl.augment.policies` range for range, in the same order:

- geometry (``surface``): horizontal and vertical flips (p 0.5 each), a rotation by
  ``k * 90`` degrees (``k`` uniform in 0..3), then with p 0.7 an affine map: translation a
  whole number of pixels, ``int(u * S)`` with ``u`` in +-5 %, scale 0.95-1.05 per axis, about
  the image centre. ``object``: no flips or 90-degree turns; translation +-4 %, the same
  scale and a rotation of +-10 degrees. One composed sampling grid per sample, bilinear for
  images, nearest for masks, borders reflected (OpenCV's ``BORDER_REFLECT_101``, like the
  CPU presets): nothing is erased and no black border looks like an edge defect.
- photometric (both): :class:`~lit_ssl.augment.transforms.IlluminationGradient` (p 0.8,
  half-amplitude 0-0.5), :class:`~lit_ssl.augment.transforms.Vignetting` (p 0.5, 0-0.4,
  centre shift +-0.2), brightness/contrast (p 0.8, ``x * (1 + c) + b`` with ``b, c`` in
  +-0.3), gamma (p 0.5, 0.7-1.4), :class:`~lit_ssl.augment.transforms.PoissonGaussianNoise`
  (p 0.5, shot 0-0.002, read 0-0.015), each clipped to [0, 1] as on the CPU.
- ``minimal``: nothing (the letterbox happened in the worker).

Custom YAML policies and ``natural`` stay on the CPU (:func:`device_capable`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEVICE_PRESETS", "DevicePolicy", "device_capable"]

DEVICE_PRESETS = ("surface", "object", "minimal")

# (translate fraction, rotate degrees, flips and 90-degree turns) of the geometric presets
_GEOMETRY = {"surface": (0.05, 0.0, True), "object": (0.04, 10.0, False)}
_AFFINE_P, _SCALE = 0.7, (0.95, 1.05)


def device_capable(policies: str | Sequence[str]) -> bool:
    """Whether every named policy has a device version (YAML files and ``natural`` do not).

    Args:
        policies: One policy name or path, or one per view.

    Examples:
        >>> device_capable("surface"), device_capable(["object", "my_policy.yaml"])
        (True, False)
    """
    names = [policies] if isinstance(policies, str) else list(policies)
    return all(name in DEVICE_PRESETS for name in names)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _chance(n: int, p: float, generator: torch.Generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def _affine(rows: list[list[Tensor | float]], n: int, device) -> Tensor:
    """``(n, 3, 3)`` matrices from rows of per-sample tensors or constants.

    Constants become device-side fills (no host-to-device copy, hence no synchronisation).
    """
    columns = [
        v.to(torch.float32) if isinstance(v, Tensor) else torch.full((n,), v, device=device)
        for row in rows
        for v in row
    ]
    bottom = torch.eye(3, device=device)[2].expand(n, 3)
    return torch.cat([torch.stack(columns, dim=1), bottom], dim=1).view(n, 3, 3)


def _inverse(matrix: Tensor) -> Tensor:
    """Inverse of ``(n, 3, 3)`` affine matrices in closed form (no solver, no host sync)."""
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = [[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]]
    return _affine(rows, matrix.shape[0], matrix.device)


def _reflect101(coord: Tensor, size: int) -> Tensor:
    """Fold pixel coordinates into ``[0, size - 1]`` as ``BORDER_REFLECT_101`` does."""
    if size == 1:
        return torch.zeros_like(coord)
    period = 2 * (size - 1)
    coord = torch.remainder(coord.abs(), period)
    return torch.where(coord > size - 1, period - coord, coord)


class DevicePolicy:
    """One preset, batched: ``(N, C, S, S)`` float images in [0, 1] in, the same shape out.

    Args:
        name: One of :data:`DEVICE_PRESETS`.

    Raises:
        ValueError: ``name`` has no device version.

    Examples:
        >>> import torch
        >>> images = torch.rand(4, 1, 32, 32)
        >>> out, _ = DevicePolicy("surface")(images, torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([4, 1, 32, 32]), True, True)
    """

    def __init__(self, name: str):
        if name not in DEVICE_PRESETS:
            raise ValueError(
                f"policy {name!r} has no device version; the device runs {DEVICE_PRESETS}: "
                "use augment_on='cpu' for YAML policies and 'natural'"
            )
        self.name = name

    def __repr__(self) -> str:
        return f"DevicePolicy({self.name!r})"

    def __call__(
        self, images: Tensor, generator: torch.Generator, masks: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Augment every sample with its own parameters (masks through the same geometry).

        Args:
            images: ``(N, C, S, S)`` float images in [0, 1] (square: letterboxed).
            generator: Source of every random parameter, on ``images.device``.
            masks: Optional ``(N, 1, S, S)`` float masks (1 defect, 0 good, -1 unknown).

        Returns:
            The augmented images and masks (``None`` stays ``None``).
        """
        if self.name == "minimal":
            return images, masks
        images, masks = self.geometry(images, generator, masks)
        return self.photometric(images, generator), masks

    def geometry(
        self, images: Tensor, generator: torch.Generator, masks: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Flips, 90-degree turns and the affine map as one reflect-bordered grid per sample."""
        n, size, device = images.shape[0], images.shape[-1], images.device
        shift, degrees, turns = _GEOMETRY[self.name]
        one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
        last = float(size - 1)
        matrix = torch.eye(3, device=device).expand(n, 3, 3)
        if turns:
            h = torch.where(_chance(n, 0.5, generator, device), -one, one)
            v = torch.where(_chance(n, 0.5, generator, device), -one, one)
            flips = _affine([[h, 0.0, (1 - h) * last / 2], [0.0, v, (1 - v) * last / 2]], n, device)
            turn = torch.randint(0, 4, (n,), generator=generator, device=device) * (math.pi / 2)
            cos, sin = turn.cos().round(), turn.sin().round()  # exact 0 / +-1
            matrix = _about_centre(cos, sin, one, one, zero, zero, last) @ flips
        apply = _chance(n, _AFFINE_P, generator, device)
        tx = torch.trunc(_uniform(n, -shift, shift, generator, device) * size)
        ty = torch.trunc(_uniform(n, -shift, shift, generator, device) * size)
        sx = _uniform(n, *_SCALE, generator, device)
        sy = _uniform(n, *_SCALE, generator, device)
        angle = _uniform(n, -degrees, degrees, generator, device) * (math.pi / 180)
        sx, sy = torch.where(apply, sx, one), torch.where(apply, sy, one)
        tx, ty = torch.where(apply, tx, zero), torch.where(apply, ty, zero)
        angle = torch.where(apply, angle, zero)
        affine = _about_centre(angle.cos(), angle.sin(), sx, sy, tx, ty, last)
        grid = _grid(_inverse(affine @ matrix), size)
        images = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        if masks is not None:
            masks = F.grid_sample(
                masks, grid, mode="nearest", padding_mode="border", align_corners=True
            )
        return images, masks

    def photometric(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Illumination ramp, vignette, brightness/contrast, gamma and sensor noise."""
        n, size, device = images.shape[0], images.shape[-1], images.device
        axis = torch.linspace(-1.0, 1.0, size, device=device)
        x, y = axis.view(1, 1, 1, size), axis.view(1, 1, size, 1)

        def per_sample(values: Tensor) -> Tensor:
            return values.view(n, 1, 1, 1)

        # IlluminationGradient(strength_range=(0, 0.5), p=0.8)
        strength = _uniform(n, 0.0, 0.5, generator, device)
        strength = per_sample(strength * _chance(n, 0.8, generator, device))
        theta = _uniform(n, 0.0, 2 * math.pi, generator, device)
        cos, sin = per_sample(theta.cos()), per_sample(theta.sin())
        ramp = (cos * x + sin * y) / (cos.abs() + sin.abs())
        images = (images * (1.0 + strength * ramp)).clamp_(0.0, 1.0)
        # Vignetting(strength_range=(0, 0.4), center_shift=0.2, p=0.5)
        strength = _uniform(n, 0.0, 0.4, generator, device)
        strength = per_sample(strength * _chance(n, 0.5, generator, device))
        cx = per_sample(_uniform(n, -0.2, 0.2, generator, device))
        cy = per_sample(_uniform(n, -0.2, 0.2, generator, device))
        radius2 = (x - cx) ** 2 + (y - cy) ** 2
        field = 1.0 - strength * radius2 / radius2.amax(dim=(2, 3), keepdim=True)
        images = (images * field).clamp_(0.0, 1.0)
        # RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8)
        apply = _chance(n, 0.8, generator, device)
        alpha = torch.where(apply, 1.0 + _uniform(n, -0.3, 0.3, generator, device), 1.0)
        beta = torch.where(apply, _uniform(n, -0.3, 0.3, generator, device), 0.0)
        images = (images * per_sample(alpha) + per_sample(beta)).clamp_(0.0, 1.0)
        # RandomGamma(gamma_limit=(70, 140), p=0.5)
        apply = _chance(n, 0.5, generator, device)
        gamma = torch.where(apply, _uniform(n, 0.7, 1.4, generator, device), 1.0)
        images = images.pow(per_sample(gamma))
        # PoissonGaussianNoise(shot_range=(0, 0.002), read_range=(0, 0.015), p=0.5)
        apply = _chance(n, 0.5, generator, device)
        shot = per_sample(_uniform(n, 0.0, 0.002, generator, device) * apply)
        read = per_sample(_uniform(n, 0.0, 0.015, generator, device) * apply)
        normal = torch.randn(images.shape, generator=generator, device=device)
        sigma = (shot * images.clamp(min=0.0) + read**2).sqrt()
        return (images + sigma * normal).clamp_(0.0, 1.0)


def _about_centre(
    cos: Tensor, sin: Tensor, sx: Tensor, sy: Tensor, tx: Tensor, ty: Tensor, last: float
) -> Tensor:
    """``(n, 3, 3)``: scale, rotate about the image centre ``last / 2``, then translate."""
    centre = last / 2
    a, b = cos * sx, sin * sy
    c, d = -sin * sx, cos * sy
    ox = centre + tx - (a * centre + b * centre)
    oy = centre + ty - (c * centre + d * centre)
    return _affine([[a, b, ox], [c, d, oy]], cos.shape[0], cos.device)


def _grid(inverse: Tensor, size: int) -> Tensor:
    """``(n, S, S, 2)`` sampling grid (``align_corners=True`` units) from output to input."""
    axis = torch.arange(size, dtype=torch.float32, device=inverse.device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, size * size, 3)
    source = points @ inverse[:, :2].transpose(1, 2)  # (n, S*S, 2) pixel coordinates
    source = _reflect101(source, size)
    scale = 2.0 / max(size - 1, 1)
    return (source * scale - 1.0).view(-1, size, size, 2)
