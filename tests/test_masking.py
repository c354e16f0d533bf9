"""Masking utilities on their own: exact ratios, determinism, shapes, non-square grids,
the ratio and fill validators."""

from __future__ import annotations

import pytest
import torch

from lit_ssl.heads import MAE, LatentPrediction, MaskedReconstruction
from lit_ssl.masking import (
    cell_weights,
    check_fill,
    check_mask_ratio,
    fill_masked,
    gather_tokens,
    keep_indices,
    mask_to_pixels,
    num_masked_patches,
    patch_grid,
    patchify,
    random_patch_mask,
    random_patch_mask_for,
    unpatchify,
    upsample_mask,
)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.6, 0.75, 1.0])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (14, 14)])
def test_ratio_is_exact_for_every_sample(ratio: float, grid: tuple[int, int]) -> None:
    mask = random_patch_mask(16, grid, ratio)
    assert mask.shape == (16, *grid) and mask.dtype == torch.bool
    expected = num_masked_patches(grid[0] * grid[1], ratio)
    assert mask.flatten(1).sum(1).tolist() == [expected] * 16


def test_num_masked_rounds_and_validates() -> None:
    assert num_masked_patches(196, 0.75) == 147
    assert num_masked_patches(10, 0.33) == 3
    with pytest.raises(ValueError, match="ratio"):
        num_masked_patches(4, 1.5)


def test_masks_differ_across_samples_and_cover_all_positions() -> None:
    mask = random_patch_mask(64, (4, 4), 0.5)
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 32
    frequency = mask.float().mean(0)
    assert frequency.min() > 0.2 and frequency.max() < 0.8


def test_deterministic_under_generator_and_seed() -> None:
    a = random_patch_mask(8, (4, 6), 0.6, generator=torch.Generator().manual_seed(3))
    b = random_patch_mask(8, (4, 6), 0.6, generator=torch.Generator().manual_seed(3))
    c = random_patch_mask(8, (4, 6), 0.6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(11)
    d = random_patch_mask(8, (4, 6), 0.6)
    torch.manual_seed(11)
    assert torch.equal(d, random_patch_mask(8, (4, 6), 0.6))


def test_keep_indices_are_the_visible_patches_in_order() -> None:
    grid = (3, 4)
    mask = random_patch_mask(5, grid, 0.75, generator=torch.Generator().manual_seed(0))
    num_keep = 12 - num_masked_patches(12, 0.75)
    ids = keep_indices(mask, num_keep)
    assert ids.shape == (5, num_keep)
    for row, m in zip(ids, mask.flatten(1), strict=True):
        assert row.tolist() == torch.nonzero(~m).flatten().tolist()
    tokens = torch.arange(5 * 12 * 2, dtype=torch.float32).reshape(5, 12, 2)
    kept = gather_tokens(tokens, ids)
    assert torch.equal(kept[:, :, 0], tokens[:, :, 0].gather(1, ids))


def test_upsample_and_pixel_masks_for_non_square_images() -> None:
    mask = random_patch_mask(2, (2, 3), 0.5, generator=torch.Generator().manual_seed(1))
    up = upsample_mask(mask, 2)
    assert up.shape == (2, 4, 6) and torch.equal(up[:, ::2, ::2], mask)
    pixels = mask_to_pixels(mask, 8)
    assert pixels.shape == (2, 1, 16, 24)
    assert torch.equal(pixels[:, 0, ::8, ::8], mask)
    assert pixels.float().mean() == mask.float().mean()
    assert torch.equal(cell_weights(pixels, (2, 3))[:, 0], mask.float())


def test_patch_grid_requires_multiples() -> None:
    assert patch_grid((32, 64), 16) == (2, 4)
    with pytest.raises(ValueError, match="multiple of the mask patch size"):
        patch_grid((30, 64), 16)


def test_patchify_roundtrip_non_square() -> None:
    images = torch.rand(2, 3, 32, 48)
    patches = patchify(images, 16)
    assert patches.shape == (2, 6, 16 * 16 * 3)
    assert torch.equal(patches[0, 1], images[0, :, :16, 16:32].permute(1, 2, 0).flatten())
    assert torch.equal(unpatchify(patches, 16, (2, 3), 3), images)


def test_fill_masked_mean_and_zero() -> None:
    images = torch.rand(2, 3, 8, 8)
    pixel_mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    pixel_mask[:, :, :4] = True
    zero = fill_masked(images, pixel_mask, "zero")
    mean = fill_masked(images, pixel_mask, "mean")
    assert zero[:, :, :4].abs().sum() == 0 and torch.equal(zero[:, :, 4:], images[:, :, 4:])
    assert torch.allclose(mean[:, :, 0, 0], images.mean((2, 3)))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_one_ratio_validator_for_heads_and_masks(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        check_mask_ratio(ratio)
    for head in (MAE, MaskedReconstruction, LatentPrediction):
        with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
            head(mask_ratio=ratio)
    if 0.0 <= ratio <= 1.0:
        assert check_mask_ratio(ratio, closed=True) == ratio
    else:
        with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\]"):
            num_masked_patches(4, ratio)


def test_one_fill_validator_for_heads_and_masks() -> None:
    assert check_fill("mean") == "mean" and check_fill("zero") == "zero"
    images, pixel_mask = torch.rand(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="fill must be 'mean' or 'zero', got 'noise'"):
        fill_masked(images, pixel_mask, "noise")
    for head in (MaskedReconstruction, LatentPrediction):
        with pytest.raises(ValueError, match="fill must be 'mean' or 'zero', got 'noise'"):
            head(fill="noise")


def test_random_patch_mask_for_images() -> None:
    mask = random_patch_mask_for(torch.rand(3, 1, 32, 64), 16, 0.5)
    assert mask.shape == (3, 2, 4) and mask.flatten(1).sum(1).tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="masks no patch"):
        random_patch_mask_for(torch.rand(1, 1, 16, 16), 16, 0.2)
