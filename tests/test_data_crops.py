"""Native-resolution crops, aspect-kept resizing and the cache byte budget of FactoryDataModule."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import tifffile

from lit_ssl.augment import policy
from lit_ssl.augment.views import MultiView
from lit_ssl.data import FactoryDataModule
from lit_ssl.data.crops import WindowSampler, cut
from lit_ssl.data.io import to_float
from lit_ssl.data.scan import default_cache_limit_mb

SQUARE, STRIP = (256, 256), (64, 512)


def _position_frame(height: int, width: int) -> np.ndarray:
    """uint16 frame whose every pixel holds its own position, ``row * width + col``."""
    return np.arange(height * width, dtype=np.uint16).reshape(height, width)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 256 x 256 16-bit TIFFs and one 64 x 512 strip, pixels encoding their position."""
    root = tmp_path_factory.mktemp("frames")
    for i in range(4):
        tifffile.imwrite(root / f"frame_{i}.tif", _position_frame(*SQUARE))
    tifffile.imwrite(root / "strip.tif", _position_frame(*STRIP))
    return root


def _module(root: Path | str, **kwargs) -> FactoryDataModule:
    settings = {"image_size": 64, "in_chans": 1, "batch_size": 2, "policy": "minimal"}
    dm = FactoryDataModule(root=str(root), val_fraction=0.0, test_fraction=0.0, **settings | kwargs)
    dm.setup("fit")
    return dm


def _corner(view: np.ndarray, width: int) -> tuple[int, int]:
    """Where a native window starts, read from its first pixel (see _position_frame)."""
    position = int(round(float(view[0, 0]) * 65535))
    return position // width, position % width


def test_crops_are_raw_windows_and_ssl_views_overlap(frames: Path) -> None:
    dm = _module(frames, crop_size=64)
    dataset = dm.train_dataloader().dataset
    store = dataset.store
    assert all(a.dtype == np.uint16 for a in store.cache.values())  # cached as 16-bit
    shifts = []
    for item in range(len(dataset)):
        for _ in range(8):
            sample = dataset[item]
            raw = store.read_raw(int(dataset.indices[item]))[0][:, :, 0]
            corners = []
            for view in sample.views:
                view = view.numpy()[0]
                top, left = _corner(view, raw.shape[1])
                window = raw[top : top + 64, left : left + 64]
                np.testing.assert_array_equal(view, to_float(window, store.bit_depth))
                corners.append((top, left))
            (t0, l0), (t1, l1) = corners
            assert abs(t0 - t1) <= 32 and abs(l0 - l1) <= 32  # overlapping windows
            shifts.append((t0 - t1, l0 - l1))
    assert len(set(shifts)) > 5  # the windows are drawn, not fixed


def test_frames_smaller_than_the_crop_are_padded_not_stretched(frames: Path) -> None:
    with pytest.warns(UserWarning, match="larger than every frame"):
        _module(frames, crop_size=1024, image_size=64)
    dm = _module(frames, crop_size=128, image_size=64)
    dataset = dm.train_dataloader().dataset
    item = [Path(p).name for p in dataset.store.paths].index("strip.tif")
    position = list(dataset.indices).index(item)
    view = dataset[position].views[0].numpy()[0]  # 64 x 128 window padded to 128, then / 2
    assert (view[:16] == 0).all() and (view[48:] == 0).all() and (view[17:47] > 0).all()


def test_evaluation_keeps_the_whole_frame_with_its_aspect(frames: Path) -> None:
    dm = _module(frames, crop_size=64, image_size=64)
    dataset = dm.predict_dataloader().dataset
    item = [Path(p).name for p in dataset.store.paths].index("strip.tif")
    view = dataset[item].views[0].numpy()[0]  # 64 x 512 -> 8 x 64 band, centred
    assert view.shape == (64, 64)
    assert (view[:28] == 0).all() and (view[36:] == 0).all() and (view[28:36] > 0).all()


def test_letterbox_keeps_a_square_square_and_square_images_unchanged() -> None:
    strip = np.zeros((32, 128, 1), np.uint8)
    strip[8:24, 40:56] = 255  # a 16 x 16 square
    out = policy("minimal", 64, 1)(image=strip)["image"][:, :, 0]
    rows, cols = np.nonzero(out > 0.5)
    assert out.shape == (64, 64) and np.ptp(rows) == np.ptp(cols) == 7  # 8 x 8: still square
    assert (out[:24] == 0).all() and (out[40:] == 0).all()  # the strip is 16 rows, centred
    rng = np.random.default_rng(0)
    resize = A.Compose([A.ToFloat(max_value=None), A.Resize(32, 32, cv2.INTER_AREA)])
    for shape, dtype in (((50, 50, 3), np.uint8), ((80, 80, 1), np.uint16), ((20, 20, 3), None)):
        image = (
            rng.random(shape).astype(np.float32)
            if dtype is None
            else (rng.integers(0, 200, shape).astype(dtype))
        )
        expected = resize(image=image)["image"]
        np.testing.assert_array_equal(
            policy("minimal", 32, shape[2])(image=image)["image"], expected
        )
    views = MultiView([policy("minimal", 64, 1)])
    _, mask = views.with_mask(strip, np.ones((32, 128), np.float32))
    assert (mask[:24] == -1).all() and (mask[40:] == -1).all() and (mask[24:40] == 1).all()


def _defect_csv(folder: Path) -> Path:
    """CSV layout, 128-px grey frames: 4x4 white defects (with masks) on a grey texture."""
    rng = np.random.default_rng(3)
    rows = []

    def frame(name: str, label: str, split: str, defect: bool, masked: bool) -> None:
        image = rng.integers(60, 180, (128, 128)).astype(np.uint8)
        mask = np.zeros_like(image)
        if defect:
            top, left = rng.integers(0, 62, 2) * 2  # even: exactly 2x2 white pixels at 64 px
            image[top : top + 4, left : left + 4] = 255
            mask[top : top + 4, left : left + 4] = 255
        cv2.imwrite(str(folder / f"{name}.png"), image)
        mask_name = ""
        if defect and masked:
            mask_name = f"{name}_mask.png"
            cv2.imwrite(str(folder / mask_name), mask)
        rows.append((f"{name}.png", label, split, mask_name))

    folder.mkdir(parents=True)
    for i in range(6):
        frame(f"good_{i}", "good", "train" if i < 4 else "val", False, False)
    for i in range(6):
        frame(f"dent_{i}", "dent", "train" if i < 5 else "val", True, True)
    frame("dent_nomask", "dent", "train", True, False)
    manifest = folder / "labels.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "mask"])
        writer.writerows(rows)
    return manifest


def test_classify_crops_hold_the_defect_and_unmasked_defects_use_the_frame(tmp_path) -> None:
    manifest = _defect_csv(tmp_path / "parts")
    kwargs = {"task": "classify", "crop_size": 32, "image_size": 32, "policy": "minimal"}
    dm = FactoryDataModule(root=str(manifest), in_chans=1, batch_size=2, **kwargs)
    dm.setup("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = dm.train_dataloader().dataset
        dm.train_dataloader()  # built again: no second warning
    told = [w for w in caught if "without a mask file" in str(w.message)]
    assert len(told) == 1 and "1 of 10 training images" in str(told[0].message)
    names = [Path(dataset.store.paths[i]).stem for i in dataset.indices]
    for position, name in enumerate(names):
        for _ in range(25 if name.startswith("dent") else 3):
            view = dataset[position].views[0].numpy()[0]
            if name == "dent_nomask":  # the whole frame, letterboxed to 32 px
                whole = dataset.store.image(int(dataset.indices[position]))
                expected = policy("minimal", 32, 1)(image=whole)["image"][:, :, 0]
                np.testing.assert_array_equal(view, expected)
            elif name.startswith("dent"):
                assert (view == 1.0).any(), f"a crop of {name} misses its defect"
            else:
                assert view.shape == (32, 32) and not (view == 1.0).any()
    val = next(iter(dm.val_dataloader()))  # evaluation: whole frames, masks letterboxed alike
    assert val.images.shape[-2:] == (32, 32) and val.masks.shape[-2:] == (32, 32)


def test_cache_budget_splits_memory_and_disk_with_one_notice(frames: Path) -> None:
    frame_mb = SQUARE[0] * SQUARE[1] * 2 / 2**20  # 0.125 MiB per 16-bit square frame
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = _module(frames, cache_limit_mb=2.2 * frame_mb)
    notices = [str(w.message) for w in caught if "image cache" in str(w.message)]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "2 decoded image(s) kept in memory" in notices[0] and "3 read from disk" in notices[0]
    assert "cache_limit_mb" in notices[0]
    store = dm._store
    assert len(store.cache) == 2 and all(a.dtype == np.uint16 for a in store.cache.values())
    every = _module(frames, cache_images=False)
    for index in range(len(store)):  # cached or read from disk: the same pixels
        np.testing.assert_array_equal(store.image(index), every._store.image(index))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = _module(frames)  # default budget (25 % of RAM): everything fits, no notice
    assert len(default._store.cache) == 5 and not any(
        "image cache" in str(w.message) for w in caught
    )
    assert 0 < default_cache_limit_mb() < 2**30


def test_crop_size_is_validated() -> None:
    for bad, match in ((4, r"crop_size=4; use at least 8 pixels"), (2.5, "whole number")):
        with pytest.raises(ValueError, match=match):
            FactoryDataModule(crop_size=bad)
    with pytest.raises(ValueError, match="at least 8"):
        WindowSampler(0)


def test_cut_pads_centred_and_keeps_the_dtype() -> None:
    image = np.arange(6 * 20, dtype=np.uint16).reshape(6, 20, 1)
    window = cut(image, (0, 4), 10)
    assert window.shape == (10, 10, 1) and window.dtype == np.uint16
    assert (window[:2] == 0).all() and (window[8:] == 0).all()
    np.testing.assert_array_equal(window[2:8], image[:, 4:14])


def test_whole_frame_classify_training_batches_carry_masks_through_the_augmentation(
    tmp_path,
) -> None:
    """A tiled classifier takes tile labels from them: masks follow flips and letterbox."""
    manifest = _defect_csv(tmp_path / "parts")
    dm = FactoryDataModule(
        root=str(manifest), task="classify", image_size=64, in_chans=1, batch_size=4,
        policy="surface",
    )  # fmt: skip
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    names = [Path(dataset.store.paths[i]).stem for i in dataset.indices]
    for position, name in enumerate(names):
        item = dataset[position]
        mask, view = item.masks[0].numpy(), item.views[0].numpy()[0]
        if name == "dent_nomask":
            assert (mask == -1).all()
        elif name.startswith("dent"):  # the defect's pixels are the bright ones, wherever moved
            defect = (mask == 1).astype(np.uint8)
            ring = cv2.dilate(defect, np.ones((9, 9), np.uint8)) > cv2.dilate(
                defect, np.ones((5, 5), np.uint8)
            )  # its surroundings: the same illumination, beyond the affine's 1-px blur
            assert mask.max() == 1 and view[mask == 1].mean() > view[ring].mean() + 0.05
        else:
            assert (mask == 0).all()
    crops = FactoryDataModule(root=str(manifest), task="classify", crop_size=32, image_size=32)
    crops.setup("fit")
    assert next(iter(crops.train_dataloader())).masks is None  # crops carry no mask
