"""Data edge cases on folders a user brings: links, trailing bytes, float and multi-page TIFFs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from _images import RNG, write_png

from lit_ssl.data import FactoryDataModule, read_image
from lit_ssl.data.io import BadImageError, list_images, read_raw

SIZE = 32


def _module(root: Path, stage: str = "fit", **kwargs) -> FactoryDataModule:
    kwargs = {"image_size": SIZE, "batch_size": 4, "val_fraction": 0.0, **kwargs}
    dm = FactoryDataModule(root=str(root), **kwargs)
    dm.setup(stage)
    return dm


def _names(dm: FactoryDataModule) -> list[str]:
    return sorted(Path(s.path).name for s in dm.samples)


# ---------------------------------------------------------------- symlink loops


@pytest.fixture
def looped(tmp_path: Path) -> Path:
    root = tmp_path / "line3"
    for name in ("a.png", "day2/b.png", "day2/deep/c.png"):
        write_png(root / name)
    os.symlink("..", root / "day2" / "deep" / "up")  # a folder loop
    os.symlink("self.png", root / "day2" / "self.png")  # a file loop
    outside = write_png(tmp_path / "elsewhere" / "d.png").parent
    os.symlink(outside, root / "linked")  # an ordinary link to a folder: followed
    return root


def test_symlink_loops_are_skipped_with_one_warning_naming_them(looped: Path) -> None:
    with pytest.warns(UserWarning, match="cannot be listed") as record:
        dm = _module(looped)
    messages = [str(w.message) for w in record if "cannot be listed" in str(w.message)]
    assert len(messages) == 1
    assert "deep/up" in messages[0] and "self.png" in messages[0]
    assert "symlink loop" in messages[0]
    assert _names(dm) == ["a.png", "b.png", "c.png", "d.png"]  # each image once, links followed
    assert any(p.endswith("self.png") for p in dm.skipped_files)


def test_symlink_loop_with_on_bad_file_raise_says_so(looped: Path) -> None:
    with pytest.raises(ValueError, match=r"symlink loop.*\n.*on_bad_file='skip'"):
        _module(looped, on_bad_file="raise")


def test_list_images_alone_warns_about_loops(looped: Path) -> None:
    with pytest.warns(UserWarning, match="symlink loop"):
        found = list_images(looped)
    assert sorted(p.name for p in found) == ["a.png", "b.png", "c.png", "d.png"]


def test_loop_at_the_top_of_class_folders(tmp_path: Path) -> None:
    for name in ("good/0.png", "good/1.png", "dent/0.png", "dent/1.png"):
        write_png(tmp_path / name)
    os.symlink(".", tmp_path / "again")
    with pytest.warns(UserWarning, match="again: symlink loop"):
        dm = _module(tmp_path, task="classify", resplit=True)
    assert dm.resolved_layout == "class_folders" and sorted(dm.class_names) == ["dent", "good"]
    assert len(dm.samples) == 4


# ---------------------------------------------------------------- bytes after the end marker


def _exif_with_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    payload = b"Exif\x00\x00" + thumbnail
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def test_trailing_bytes_after_png_and_jpeg_end_are_accepted(tmp_path: Path) -> None:
    image = np.full((16, 24, 3), (30, 100, 200), np.uint8)  # BGR, as OpenCV writes
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, image)[1].tobytes()
        path = tmp_path / f"camera{ext.upper()}"
        path.write_bytes(data + b"\x00" * 7 + b"MAKERNOTE\xff\xd8 trailing garbage")
        out = read_image(path)
        assert out.shape == (16, 24, 3)
        np.testing.assert_allclose(out.mean((0, 1)), [200 / 255, 100 / 255, 30 / 255], atol=0.03)


def test_truncated_files_are_still_rejected_even_with_a_thumbnail(tmp_path: Path) -> None:
    image = RNG.integers(0, 255, (64, 64, 3), endpoint=True).astype(np.uint8)
    thumbnail = cv2.imencode(".jpg", image[:8, :8])[1].tobytes()  # has its own end marker
    jpeg = _exif_with_thumbnail(cv2.imencode(".jpg", image)[1].tobytes(), thumbnail)
    (tmp_path / "whole.jpg").write_bytes(jpeg)
    assert read_image(tmp_path / "whole.jpg").shape == (64, 64, 3)
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) - 300])
    with pytest.raises(BadImageError, match="truncated JPEG"):
        read_raw(tmp_path / "cut.jpg")
    png = cv2.imencode(".png", image)[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) - 20] + b"junk after the cut")
    with pytest.raises(BadImageError, match="truncated PNG"):
        read_raw(tmp_path / "cut.png")


# ---------------------------------------------------------------- float and multi-page TIFFs


def test_non_finite_float_tiffs_are_bad_at_scan_time(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / f"{i}.png")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((16, 16), np.nan, np.float32))
    one_inf = np.full((16, 16), 0.5, np.float32)
    one_inf[3, 4] = np.inf
    tifffile.imwrite(tmp_path / "inf.tiff", one_inf)
    with pytest.warns(UserWarning, match="2 of 5 image files are unreadable") as record:
        dm = _module(tmp_path)
    message = next(str(w.message) for w in record if "unreadable" in str(w.message))
    assert "nan.tif" in message and "inf.tiff" in message and "NaN or infinite" in message
    assert [Path(p).name for p in dm.skipped_files] == ["inf.tiff", "nan.tif"]
    assert len(dm.samples) == 3
    with pytest.raises(ValueError, match="nan.tif"):
        _module(tmp_path, on_bad_file="raise")


def test_float_tiffs_in_0_255_are_scaled_for_the_whole_dataset(tmp_path: Path) -> None:
    bright = np.linspace(0, 200, 256, dtype=np.float32).reshape(16, 16)
    dark = np.full((16, 16), 0.9, np.float32)  # alone it would look like [0, 1] data
    tifffile.imwrite(tmp_path / "bright.tif", bright)
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    with pytest.warns(UserWarning, match="divided by 255"):
        dm = _module(tmp_path, in_chans=1)
    by_name = {Path(s.path).name: i for i, s in enumerate(dm.samples)}
    np.testing.assert_allclose(dm._store.image(by_name["bright.tif"])[:, :, 0], bright / 255)
    np.testing.assert_allclose(dm._store.image(by_name["dark.tif"])[:, :, 0], dark / 255)


def test_float_tiffs_in_unit_range_are_untouched_and_above_255_are_bad(tmp_path: Path) -> None:
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    for i in range(2):
        tifffile.imwrite(tmp_path / f"{i}.tif", unit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm = _module(tmp_path, in_chans=1)
    np.testing.assert_allclose(dm._store.image(0)[:, :, 0], unit)
    tifffile.imwrite(tmp_path / "kelvin.tif", np.full((16, 16), 300.0, np.float32))
    with pytest.raises(BadImageError, match="float values up to 300"):
        read_raw(tmp_path / "kelvin.tif")


def test_multipage_tiff_uses_page_0_and_says_so(tmp_path: Path) -> None:
    pages = np.stack([np.full((16, 16), 10 * (i + 1), np.uint8) for i in range(5)])
    tifffile.imwrite(tmp_path / "stack.tif", pages)
    write_png(tmp_path / "plain.png")
    with pytest.warns(UserWarning, match=r"only page 0 .* used") as record:
        dm = _module(tmp_path, in_chans=1)
    message = next(str(w.message) for w in record if "page 0" in str(w.message))
    assert "stack.tif" in message and "plain.png" not in message
    stack = next(i for i, s in enumerate(dm.samples) if s.path.endswith("stack.tif"))
    np.testing.assert_allclose(dm._store.image(stack), 10 / 255)
    with pytest.warns(UserWarning, match="stack.tif"):
        read_raw(tmp_path / "stack.tif")


# ---------------------------------------------------------------- masks, file roots


def test_masks_matching_no_image_are_named(tmp_path: Path) -> None:
    for name in ("train/good/0.png", "test/good/1.png", "test/crack/000.png"):
        write_png(tmp_path / name)
    write_png(tmp_path / "ground_truth/crack/000_mask.png", 255)
    write_png(tmp_path / "ground_truth/crack/0001_mask.png", 255)  # renumbered: matches nothing
    write_png(tmp_path / "ground_truth/scratch/000_mask.png", 255)  # no test/scratch folder
    with pytest.warns(UserWarning, match="2 mask") as record:
        dm = _module(tmp_path)
    message = next(str(w.message) for w in record if "mask" in str(w.message))
    assert "0001_mask.png" in message and "scratch/000_mask.png" in message
    crack = next(s for s in dm.samples if s.label == "crack")
    assert crack.mask is not None and crack.mask.endswith("crack/000_mask.png")


def test_a_file_as_root_says_give_the_folder(tmp_path: Path) -> None:
    image = write_png(tmp_path / "part.png")
    with pytest.raises(ValueError, match="is a file; give the folder"):
        _module(image)
    (tmp_path / "labels.csv").write_text("path,label\npart.png,good\n")
    assert _module(tmp_path / "labels.csv").resolved_layout == "csv"
    with pytest.raises(ValueError, match="is a file; give the folder"):
        _module(tmp_path / "labels.csv", layout="mvtec")


# ---------------------------------------------------------------- a folder as a user has it


def test_mixed_user_folder_with_subfolders_formats_and_a_broken_file(tmp_path: Path) -> None:
    root = tmp_path / "line3"
    write_png(root / "a.png")
    write_png(root / "2024-05" / "B.PNG")
    cv2.imwrite(str(root / "2024-05" / "c.JPG"), np.full((20, 20, 3), 90, np.uint8))
    (root / "2024-06" / "deep").mkdir(parents=True)
    tifffile.imwrite(root / "2024-06" / "deep" / "d.TIF", np.full((20, 20), 4000, np.uint16))
    cv2.imwrite(str(root / "2024-06" / "e.jpeg"), np.full((20, 20, 3), 50, np.uint8))
    (root / "2024-06" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="broken.png"):
        dm = _module(root, stage="predict", task="classify")
    assert dm.resolved_layout == "unlabeled"
    assert _names(dm) == ["B.PNG", "a.png", "c.JPG", "d.TIF", "e.jpeg"]
    assert [Path(p).name for p in dm.skipped_files] == ["broken.png"]
    batch = next(iter(dm.predict_dataloader()))
    images, labels = batch.images, batch.labels
    assert len(batch.paths) == 4 and images.shape == (4, 3, SIZE, SIZE)
    assert labels.tolist() == [-1] * 4
    assert float(images.max()) <= 1.0
