"""Multi-view wrapper, reseeding, and the factory nuisance transforms."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from lit_ssl.augment import (
    IlluminationGradient,
    MultiView,
    PoissonGaussianNoise,
    Vignetting,
    multi_view,
    policy,
)

IMAGE = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)


def test_one_policy_per_view_and_clean_view_last() -> None:
    views = multi_view(["surface", "minimal"], 2, 32, 3, clean_view=True, seed=0)
    out = views(IMAGE)
    assert len(out) == 3 == views.num_outputs
    minimal = policy("minimal", 32, 3)(image=IMAGE)["image"]
    np.testing.assert_array_equal(out[1], minimal)
    np.testing.assert_array_equal(out[2], minimal)
    assert not np.array_equal(out[0], minimal)


def test_policy_count_must_match_views() -> None:
    with pytest.raises(ValueError, match="3 policies for 2 views"):
        multi_view(["surface", "object", "minimal"], 2)
    with pytest.raises(ValueError, match="at least one"):
        MultiView([])


def test_reseed_reproduces_and_views_differ() -> None:
    views = multi_view("surface", 2, 32, 3, seed=0)
    first = views(IMAGE)
    assert not np.array_equal(first[0], first[1])  # each view has its own stream
    views.reseed(0)
    again = views(IMAGE)
    views.reseed(1)
    other = views(IMAGE)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("transform", [IlluminationGradient, Vignetting, PoissonGaussianNoise])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_nuisance_transforms_keep_dtype_and_shape(transform, dtype, channels) -> None:
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1}[dtype]
    image = np.full((24, 24, channels), 0.5 * top, dtype)
    out = A.Compose([transform(p=1.0)], strict=True, seed=0)(image=image)["image"]
    assert out.dtype == dtype and out.shape == image.shape


def test_nuisance_transforms_behave() -> None:
    flat = np.full((32, 32, 1), 0.5, np.float32)
    ramp = IlluminationGradient(strength_range=(0.3, 0.3), p=1.0)
    vignette = Vignetting(strength_range=(0.4, 0.4), center_shift=0.0, p=1.0)
    noise = PoissonGaussianNoise(shot_range=(0.0, 0.0), read_range=(0.05, 0.05), p=1.0)
    lit = A.Compose([ramp], seed=0)(image=flat)["image"]
    assert lit.max() - lit.min() == pytest.approx(0.3, abs=0.02)
    dark = A.Compose([vignette], seed=0)(image=flat)["image"]
    assert dark[16, 16, 0] > dark[0, 0, 0] == pytest.approx(0.3, abs=0.01)
    noisy = A.Compose([noise], seed=0)(image=flat)["image"]
    assert abs(noisy.mean() - 0.5) < 0.01 and noisy.std() == pytest.approx(0.05, rel=0.15)


def test_custom_transforms_reject_unknown_arguments_in_strict_mode() -> None:
    with pytest.raises(ValueError, match="amplitude"):
        IlluminationGradient(amplitude=0.3, strict=True)
