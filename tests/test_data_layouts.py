"""Layouts: MVTec/VisA trees, class folders, CSV manifests, unlabeled trees, auto-detection."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lit_ssl.data.layouts import detect_layout, find_samples

_PIXELS = np.full((8, 8, 3), 128, np.uint8)


def _touch(root: Path, *relative: str) -> None:
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), _PIXELS)


def _mvtec(root: Path) -> Path:
    _touch(
        root,
        "train/good/000.png",
        "train/good/001.PNG",
        "test/good/000.png",
        "test/crack/000.png",
        "test/crack/001.png",
        "test/crack/010.png",
        "test/scratch/000.png",
        # masks: one per defect image, listed in an order unlike the images'
        "ground_truth/crack/010_mask.png",
        "ground_truth/crack/000_mask.png",
        "ground_truth/crack/001_mask.png",
        "ground_truth/scratch/000_mask.png",
        "train/.ipynb_checkpoints/000-checkpoint.png",
    )
    (root / "train" / "good" / ".DS_Store").write_bytes(b"\x00")
    return root


def test_mvtec_tree_masks_matched_by_stem(tmp_path: Path) -> None:
    layout, samples = find_samples(_mvtec(tmp_path), "auto")
    assert layout == "mvtec"
    assert len(samples) == 7
    for sample in samples:
        if sample.label == "good":
            assert sample.mask is None
        else:
            assert sample.mask is not None
            assert Path(sample.mask).name == Path(sample.path).stem + "_mask.png"
            assert Path(sample.mask).parent.name == sample.label
    assert {s.split for s in samples} == {"train", "test"}


def test_visa_rearranged_is_the_same_tree(tmp_path: Path) -> None:
    _touch(tmp_path, "train/good/a.JPG", "test/good/b.jpg", "test/bad/c.JPG")
    _touch(tmp_path, "ground_truth/bad/c.png")  # VisA masks keep the image's stem
    layout, samples = find_samples(tmp_path, "visa")
    assert layout == "visa"
    bad = [s for s in samples if s.label == "bad"]
    assert len(bad) == 1 and bad[0].mask.endswith("c.png")


def test_class_folders_nested_and_auto(tmp_path: Path) -> None:
    _touch(tmp_path, "ok/a.png", "ok/day2/b.png", "dent/c.bmp", "scratch/deep/d.png")
    (tmp_path / "empty_class").mkdir()
    assert detect_layout(tmp_path) == "class_folders"
    _, samples = find_samples(tmp_path)
    assert sorted(s.label for s in samples) == ["dent", "ok", "ok", "scratch"]


def test_unlabeled_tree(tmp_path: Path) -> None:
    _touch(tmp_path, "2024-01/a.png", "2024-02/b.png", "2024-02/deep/c.tif")
    assert detect_layout(tmp_path) == "unlabeled"
    _, samples = find_samples(tmp_path)
    assert [s.label for s in samples] == [None, None, None]
    assert all(s.split is None for s in samples)


def test_csv_manifest(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a.png", "img/b.png", "img/c.png", "masks/c.png")
    (tmp_path / "manifest.csv").write_text(
        "path,label,split,mask\nimg/a.png,good,train,\nimg/b.png,,,\nimg/c.png,dent,TEST,masks/c.png\n"
    )
    layout, samples = find_samples(tmp_path)
    assert layout == "csv"
    by_name = {Path(s.path).name: s for s in samples}
    assert by_name["a.png"].label == "good" and by_name["a.png"].split == "train"
    assert by_name["b.png"].label is None and by_name["b.png"].split is None
    assert by_name["c.png"].split == "test" and by_name["c.png"].mask.endswith("masks/c.png")
    assert find_samples(tmp_path / "manifest.csv")[0] == "csv"


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "img/../../x.png"])
def test_csv_paths_escaping_root_are_rejected(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "data"
    _touch(root, "img/a.png")
    _touch(tmp_path, "outside.png")
    (root / "labels.csv").write_text(f"path,label\nimg/a.png,good\n{bad},dent\n")
    with pytest.raises(ValueError, match="escapes"):
        find_samples(root, "csv")


def test_csv_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\na.png,good\n")
    with pytest.raises(ValueError, match="'path' column"):
        find_samples(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,split\na.png,holdout\n")
    with pytest.raises(ValueError, match="split"):
        find_samples(tmp_path / "m.csv")


def test_unknown_layout_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        find_samples(tmp_path, "imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "nope")
