"""Hostile inputs from issue 21: heat-map names that used to collide (item 5) and pixel scaling
that used to depend on ``verify_files`` (item 6)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from _defect_data import trainer_kwargs
from _images import write_png
from PIL import Image

from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.data import FactoryDataModule
from lit_ssl.data.scan import SAMPLE_FILES, sample_paths

SIZE = 32


def test_item5_heat_maps_of_colliding_flattened_names_stay_apart(tmp_path, capsys):
    # the names (a/x.png vs a__x.png) and the old sanitiser's (a x.png vs a_x.png)
    values = {"a/x.png": 40, "a__x.png": 90, "a x.png": 150, "a_x.png": 210}
    root = tmp_path / "data"
    for name, value in values.items():
        write_png(root / name, value)
    torch.manual_seed(0)
    classifier = DefectClassifier("test_resnet", tile_size=16).eval()
    classifier.threshold.fill_(0.0)  # every image flagged: every image gets a heat map
    data = FactoryDataModule(
        str(root), layout="unlabeled", task="classify", image_size=SIZE, batch_size=2
    )
    L.Trainer(**trainer_kwargs(tmp_path)).predict(classifier, datamodule=data)
    with (tmp_path / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    names = [row["heatmap"] for row in rows]
    assert len(set(names)) == 4, names
    written = sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("heatmaps/**/*.png")
    )
    assert written == sorted(names)
    for row in rows:
        relative = Path(row["path"]).relative_to(root).as_posix()
        assert row["heatmap"] == f"heatmaps/{relative}.png"  # the folders kept, nothing joined
        picture = np.asarray(Image.open(tmp_path / row["heatmap"]))
        # the left half is the image as the model saw it: this row's own constant grey
        assert np.all(picture[:, :SIZE] == values[relative]), relative
    assert f"Wrote 4 heat map(s) to {tmp_path / 'heatmaps'}" in capsys.readouterr().out


def _pixels_by_file(data: FactoryDataModule) -> dict[str, float]:
    """Every file's mean pixel value as the model gets it (the predict batches)."""
    out = {}
    for batch in data.predict_dataloader():
        for path, view in zip(batch.paths, batch.views[0], strict=True):
            out[Path(path).name] = float(view.mean())
    return out


@pytest.mark.parametrize("verify", [True, False])
def test_item6_scaling_of_a_dark_12bit_frame_does_not_depend_on_verify_files(tmp_path, verify):
    root = tmp_path / "frames"
    root.mkdir()
    tifffile.imwrite(root / "bright.tif", np.full((SIZE, SIZE), 4095, np.uint16))
    tifffile.imwrite(root / "dark.tif", np.full((SIZE, SIZE), 500, np.uint16))
    data = FactoryDataModule(
        str(root), layout="unlabeled", in_chans=1, image_size=SIZE, batch_size=2,
        verify_files=verify, cache_images=True,
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"scaled as 12-bit .*largest value \(4095\)") as record:
        data.setup("predict")
    assert sum("scaled as" in str(w.message) for w in record) == 1  # said once
    pixels = _pixels_by_file(data)
    assert pixels["dark.tif"] == pytest.approx(500 / 4095, abs=1e-6)  # not 500 / 1023
    assert pixels["bright.tif"] == pytest.approx(1.0, abs=1e-6)
    assert sorted(Path(p).name for p in data._store.cache) == ["bright.tif", "dark.tif"]


def test_item6_a_stated_bit_depth_wins_and_is_not_announced(tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    tifffile.imwrite(root / "dark.tif", np.full((SIZE, SIZE), 500, np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no inference notice, nothing else either
        data = FactoryDataModule(
            str(root), layout="unlabeled", in_chans=1, image_size=SIZE, bit_depth=14,
            verify_files=False,
        )  # fmt: skip
        data.setup("predict")
        assert _pixels_by_file(data)["dark.tif"] == pytest.approx(500 / 16383, abs=1e-6)


def test_item6_large_folders_scale_from_the_same_sample_in_both_modes(tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    names = [f"f{i:03d}.tif" for i in range(SAMPLE_FILES + 6)]
    outside = next(n for n in names if n not in sample_paths(names))  # never sampled
    for name in names:
        tifffile.imwrite(root / name, np.full((8, 8), 4000 if name == outside else 100, np.uint16))
    seen = {}
    for verify in (True, False):
        data = FactoryDataModule(
            str(root), layout="unlabeled", in_chans=1, image_size=8, batch_size=32,
            verify_files=verify,
        )  # fmt: skip
        with pytest.warns(UserWarning, match=r"scaled as 10-bit") as record:
            data.setup("predict")
        clipped = [str(w.message) for w in record if "clipped to 1" in str(w.message)]
        assert len(clipped) == int(verify)  # only the full scan knows: it says how to fix it
        assert all("bit_depth=12" in message for message in clipped)
        seen[verify] = _pixels_by_file(data)
    assert seen[True] == seen[False]
    assert seen[False]["f000.tif"] == pytest.approx(100 / 1023, abs=1e-6)
    assert seen[False][outside] == pytest.approx(1.0)
