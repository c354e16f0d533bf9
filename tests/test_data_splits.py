"""The user's split is kept: VisA split_csv, MVTec train/test, CSV split column; resplit opt-in."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from _images import write_png

from lit_ssl.data import FactoryDataModule, write_synthetic_dataset
from lit_ssl.data.layouts import detect_layout, find_samples

SIZE = 32


def _module(root: Path, stage: str = "fit", **kwargs) -> FactoryDataModule:
    dm = FactoryDataModule(root=str(root), image_size=SIZE, batch_size=4, **kwargs)
    dm.setup(stage)
    return dm


# ---------------------------------------------------------------- VisA


def _visa(root: Path, objects: tuple[str, ...] = ("candle", "capsules")) -> Path:
    rows = ["object,split,label,image,mask"]
    for obj in objects:
        for i in range(6):
            image = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            write_png(root / image)
            rows.append(f"{obj},{'train' if i < 4 else 'test'},normal,{image},")
        for i in range(4):
            image, mask = (
                f"{obj}/Data/Images/Anomaly/{i:03d}.JPG",
                f"{obj}/Data/Masks/Anomaly/{i:03d}.png",
            )
            write_png(root / image)
            write_png(root / mask, 255)
            rows.append(f"{obj},{'train' if i < 2 else 'test'},anomaly,{image},{mask}")
        (root / obj / "image_anno.csv").write_text("image,label,mask\n")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa_root_read_from_split_csv_with_its_split(tmp_path: Path) -> None:
    root = _visa(tmp_path / "VisA")
    assert detect_layout(root) == "visa"
    dm = _module(root, task="classify")
    assert dm.resolved_layout == "visa" and dm.class_names == ["normal", "anomaly"]
    assert len(dm.samples) == 20 and not any("/Masks/" in s.path for s in dm.samples)
    for s, split in zip(dm.samples, dm.splits, strict=True):
        in_csv = "train" if int(Path(s.path).stem) < (4 if s.label == "normal" else 2) else "test"
        assert split in (("train", "val") if in_csv == "train" else ("test",))
        assert (s.mask is None) == (s.label == "normal")
        if s.mask:
            assert Path(s.mask).name == Path(s.path).stem + ".png" and Path(s.mask).is_file()
    assert dm.split_sizes["test"] == 8 and dm.split_sizes["val"] >= 1


def test_visa_category_filter_and_category_folder_root(tmp_path: Path) -> None:
    root = _visa(tmp_path / "VisA")
    one = _module(root, category="candle")
    assert len(one.samples) == 10 and all("/candle/" in s.path for s in one.samples)
    folder = _module(root / "candle")
    assert folder.resolved_layout == "visa" and [s.path for s in folder.samples] == [
        s.path for s in one.samples
    ]
    with pytest.raises(ValueError, match="no rows for object 'cable'"):
        _module(root, category="cable")


def test_visa_category_folder_without_split_csv_never_lists_masks(tmp_path: Path) -> None:
    _visa(tmp_path / "VisA", ("candle",))
    shutil.copytree(tmp_path / "VisA" / "candle", tmp_path / "candle")
    assert detect_layout(tmp_path / "candle") == "visa"
    layout, samples = find_samples(tmp_path / "candle")
    assert layout == "visa" and len(samples) == 10
    assert not any("/Masks/" in s.path for s in samples)
    assert all(s.split is None for s in samples)
    anomalies = [s for s in samples if s.label == "anomaly"]
    assert len(anomalies) == 4 and all(s.mask and "/Masks/Anomaly/" in s.mask for s in anomalies)


def test_auto_detection_leaves_mask_folders_out(tmp_path: Path) -> None:
    for category in ("bottle", "cable"):  # the MVTec AD root, not one category
        write_png(tmp_path / category / "train/good/0.png")
        write_png(tmp_path / category / "test/crack/0.png")
        write_png(tmp_path / category / "ground_truth/crack/0_mask.png", 255)
    with pytest.warns(UserWarning, match="left out 2 mask folder") as record:
        layout, samples = find_samples(tmp_path)
    assert layout == "unlabeled" and len(samples) == 4
    assert not any("ground_truth" in s.path for s in samples)
    assert "bottle/ground_truth" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(find_samples(tmp_path, "unlabeled")[1]) == 6  # explicit: every image


# ---------------------------------------------------------------- MVTec and CSV splits


def _mvtec(root: Path) -> Path:
    for i in range(8):
        write_png(root / f"train/good/{i:03d}.png")
    for i in range(3):
        write_png(root / f"test/good/{i:03d}.png")
    for defect in ("crack", "scratch"):
        for i in range(3):
            write_png(root / f"test/{defect}/{i:03d}.png")
            write_png(root / f"ground_truth/{defect}/{i:03d}_mask.png", 255)
    return root


def test_mvtec_split_is_kept_and_val_comes_from_train_only(tmp_path: Path) -> None:
    dm = _module(_mvtec(tmp_path))
    layout_split = {s.path: s.split for s in dm.samples}
    for sample, split in zip(dm.samples, dm.splits, strict=True):
        assert split == layout_split[sample.path] or (layout_split[sample.path], split) == (
            "train",
            "val",
        )
    assert dm.split_sizes == {"train": 6, "val": 2, "test": 9}
    assert set(dm.labels[dm.splits != "test"].tolist()) == {dm.good_index}


def test_classify_on_a_good_only_train_split_asks_for_resplit(tmp_path: Path) -> None:
    root = _mvtec(tmp_path)
    with pytest.raises(ValueError, match=r"resplit=True \(--data.resplit true\)"):
        _module(root, task="classify")
    _module(root, stage="test", task="classify")  # testing on MVTec's test split is fine
    dm = _module(root, task="classify", resplit=True)
    assert set(dm.labels[dm.splits == "train"].tolist()) == {0, 1, 2}
    assert next(iter(dm.train_dataloader())).images.shape == (4, 3, SIZE, SIZE)


def test_csv_split_column_is_kept_unless_resplit(tmp_path: Path) -> None:
    rows, given = ["path,label,split"], {}
    for i in range(30):
        label = "good" if i % 3 else "dent"
        split = ("train", "train", "val", "test")[i % 4]
        write_png(tmp_path / f"img/{i:02d}.png")
        rows.append(f"img/{i:02d}.png,{label},{split}")
        given[str((tmp_path / f"img/{i:02d}.png").resolve())] = split
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    dm = _module(tmp_path, task="classify")
    assert {s.path: str(x) for s, x in zip(dm.samples, dm.splits, strict=True)} == given
    again = _module(tmp_path, task="classify", resplit=True)
    assert (again.splits != dm.splits).any()


def test_synthetic_data_is_resplit_unless_asked_to_keep(tmp_path: Path) -> None:
    root = write_synthetic_dataset(
        tmp_path / "synthetic", image_size=SIZE, n_train=8, n_test_good=4, n_per_defect=2
    )
    kept = FactoryDataModule(root=str(root), resplit=False)
    kept.setup("fit")
    assert set(kept.labels[kept.splits == "train"].tolist()) == {0}
    # data the package made is re-split by default, so the finetune recipe trains on defects
    made = _module(root, task="classify")
    assert len(set(made.labels[made.splits == "train"].tolist())) > 1
    with pytest.raises(ValueError, match="resplit=True"):
        _module(root, task="classify", resplit=False)
