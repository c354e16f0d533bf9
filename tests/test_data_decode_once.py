"""Decode once: the cache whatever verify_files says, and several crops per decoded frame."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

import lit_ssl.data.dataset as dataset_module
import lit_ssl.data.scan as scan_module
from lit_ssl.data import FactoryDataModule

FRAMES = 6


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 96 x 96 16-bit TIFFs whose pixels hold ``row * 96 + col`` (a window's corner is its
    first pixel)."""
    root = tmp_path_factory.mktemp("big_frames")
    frame = np.arange(96 * 96, dtype=np.uint16).reshape(96, 96)
    for i in range(FRAMES):
        tifffile.imwrite(root / f"frame_{i}.tif", frame)
    return root


def _counting(monkeypatch: pytest.MonkeyPatch, module) -> Counter[str]:
    calls: Counter[str] = Counter()
    decode = module.decode

    def counted(path):
        calls[str(path)] += 1
        return decode(path)

    monkeypatch.setattr(module, "decode", counted)
    return calls


def _module(root: Path, **kwargs) -> FactoryDataModule:
    settings = {
        "root": str(root),
        "image_size": 32,
        "crop_size": 32,
        "in_chans": 1,
        "policy": "minimal",
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "bit_depth": 16,
    }
    dm = FactoryDataModule(**settings | kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_each_frame_is_decoded_once_per_visit_for_all_its_crops(
    frames: Path, monkeypatch: pytest.MonkeyPatch, augment_on: str
) -> None:
    dm = _module(
        frames,
        verify_files=False,
        cache_images=False,
        crops_per_frame=4,
        batch_size=8,
        drop_last=False,
        augment_on=augment_on,
    )
    dm.configure_views(2)
    calls = _counting(monkeypatch, dataset_module)
    batches = [dm.on_after_batch_transfer(raw, 0) for raw in dm.train_dataloader()]
    assert sum(len(b.labels) for b in batches) == FRAMES * 4  # 4 samples per frame
    assert [len(b.labels) for b in batches] == [8, 8, 8]  # batch_size counts samples
    assert sorted(calls.values()) == [1] * FRAMES  # one decode per frame per visit
    corners = Counter()
    for batch in batches:
        first = (batch.views[0][:, 0, 0, 0].double() * 65535).round().long().tolist()
        for path, corner in zip(batch.paths, first, strict=True):
            corners[path, corner] += 1
    per_frame = Counter(path for path, _ in corners)
    assert min(per_frame.values()) >= 3  # crops of one decode are different windows


def test_crops_per_frame_needs_crops_and_a_divisible_batch_size(frames: Path) -> None:
    with pytest.raises(ValueError, match="divisible by crops_per_frame=4"):
        FactoryDataModule(crop_size=32, crops_per_frame=4, batch_size=6)
    with pytest.raises(ValueError, match="needs crop_size"):
        FactoryDataModule(crops_per_frame=2, batch_size=8)
    with pytest.raises(ValueError, match="crops_per_frame=0"):
        FactoryDataModule(crop_size=32, crops_per_frame=0)
    dm = _module(frames, crops_per_frame=2, batch_size=4)
    assert dm.train_dataloader().batch_size == 2  # frames per batch
    assert dm.predict_dataloader().batch_size == 4  # whole frames: one sample each


def test_cache_images_true_is_used_without_verify_files(
    frames: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_calls = _counting(monkeypatch, scan_module)
    dm = _module(frames, verify_files=False, cache_images=True, batch_size=2)
    assert set(setup_calls.values()) == {1}  # decoded once at setup, to fill the cache
    assert len(dm._store.cache) == FRAMES
    calls = _counting(monkeypatch, dataset_module)
    for _ in dm.train_dataloader():
        pass
    assert not calls  # served from the cache
