"""Synthetic factory imagery: tree, masks, determinism, nuisance energy, speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lit_ssl.data import DEFECTS, MATERIALS, generate_image, measure_energy, write_synthetic_dataset
from lit_ssl.data.layouts import find_samples


def test_writes_an_mvtec_tree_with_masks(tmp_path: Path) -> None:
    root = write_synthetic_dataset(
        tmp_path / "d", image_size=32, n_train=4, n_test_good=2, n_per_defect=2, material="mixed"
    )
    layout, samples = find_samples(root)
    assert layout == "mvtec" and len(samples) == 4 + 2 + 2 * len(DEFECTS)
    for sample in samples:
        image = cv2.imread(sample.path, cv2.IMREAD_UNCHANGED)
        assert image.shape == (32, 32, 3)
        if sample.label != "good":
            mask = cv2.imread(sample.mask, cv2.IMREAD_UNCHANGED)
            assert mask.shape == (32, 32) and (mask == 255).any()
    info = json.loads((root / "synthetic.json").read_text())
    assert info["energy"]["ratio"] > 1 and info["counts"]["train"] == 4
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_synthetic_dataset(root)


def test_same_seed_same_files_and_grayscale(tmp_path: Path) -> None:
    kwargs = dict(image_size=32, n_train=2, n_test_good=0, n_per_defect=1, channels=1)
    a = write_synthetic_dataset(tmp_path / "a", **kwargs)
    b = write_synthetic_dataset(tmp_path / "b", **kwargs)
    name = "test/crack/000.png"
    assert (a / name).read_bytes() == (b / name).read_bytes()
    assert cv2.imread(str(a / name), cv2.IMREAD_UNCHANGED).ndim == 2


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown material"):
        write_synthetic_dataset(tmp_path, material="glass")
    with pytest.raises(ValueError, match="unknown defects"):
        write_synthetic_dataset(tmp_path, defects=["dent"])


@pytest.mark.parametrize("material", MATERIALS)
def test_every_defect_is_visible_at_low_nuisance(material: str) -> None:
    rng = np.random.default_rng(0)
    for defect in DEFECTS:
        sample = generate_image(rng, material, defect, 64, 3, nuisance=0.0)
        inside = sample.mask > 0
        assert 4 <= inside.sum() <= 0.05 * 64 * 64
        assert np.abs(sample.defect_delta[inside]).mean() > 0.12


def test_nuisance_energy_dominates_defects_at_high_settings() -> None:
    ratios = [
        measure_energy(s, n=20, image_size=48, material="mixed")["ratio"] for s in (0, 0.5, 1)
    ]
    assert ratios[0] == 0.0
    assert ratios[1] < ratios[2]
    assert 10 <= ratios[2] <= 100


def test_generation_speed_at_128px() -> None:
    """At least 200 images/s on one core is the target (the benchmark reports about 500);
    this test allows a loaded CI machine a factor of two."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(60):
        generate_image(rng, MATERIALS[i % 5], DEFECTS[i % 5] if i % 2 else None, 128, 3, 1.0)
    rate = 60 / (time.perf_counter() - start)
    cv2.setNumThreads(-1)
    assert rate >= 100, f"{rate:.0f} images/s"
