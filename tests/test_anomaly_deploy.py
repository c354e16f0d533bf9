"""The fitted detector's outputs: test figures and AUPRO, the ONNX export (bank inside) and
``trainer.predict`` writing predictions.csv with map PNGs of the flagged images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
from _defect_data import trainer_kwargs
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from lit_ssl.anomaly import AnomalyDetector
from lit_ssl.anomaly.export import ANOMALY_ONNX
from lit_ssl.callbacks import ExportOnFitEnd
from lit_ssl.classify.export import read_metadata
from lit_ssl.cli.tools import export_checkpoint
from lit_ssl.data import FactoryDataModule, write_synthetic_dataset

SIZE = 32


def _data(root: Path) -> FactoryDataModule:
    return FactoryDataModule(str(root), task="anomaly", image_size=SIZE, batch_size=64)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path, AnomalyDetector, Path]:
    """(work folder, dataset root, detector after fit and test, checkpoint)."""
    work = tmp_path_factory.mktemp("anomaly")
    root = write_synthetic_dataset(
        work / "line", image_size=SIZE, n_train=24, n_test_good=6, n_per_defect=10, seed=0,
        defects=["hole", "spot"],
    )  # fmt: skip
    torch.manual_seed(0)
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.25, false_alarm_rate=0.05)
    logger = CSVLogger(work / "runs", name="anomaly")
    kwargs = trainer_kwargs(work, logger=logger, callbacks=[ExportOnFitEnd()])
    trainer = L.Trainer(max_epochs=1, **kwargs)
    data = _data(root)
    trainer.fit(detector, data)
    checkpoint = work / "anomaly.ckpt"
    trainer.save_checkpoint(checkpoint)
    (detector.test_result,) = trainer.test(detector, data, verbose=False)
    return work, root, detector, checkpoint


def test_test_reports_aupro_and_saves_the_figures(fitted):
    work, _, detector, _ = fitted
    result = detector.test_result
    assert 0.5 < result["test/aupro"] <= 1.0 and result["test/pixel_auroc"] > 0.5
    figures = work / "runs" / "anomaly" / "version_0" / "figures"
    names = {"test_worst_maps.png", "test_best_maps.png", "test_roc.png"}
    assert names <= {p.name for p in figures.glob("*.png")}
    for name in names:
        assert Image.open(figures / name).size[0] > 100


def test_onnx_export_holds_the_bank_and_matches_pytorch(fitted):
    work, _, detector, checkpoint = fitted
    path = export_checkpoint(checkpoint)  # what `lit-ssl export CKPT` runs
    assert path == work / ANOMALY_ONNX
    at_fit_end = work / "runs" / "anomaly" / "version_0" / ANOMALY_ONNX  # ExportOnFitEnd's
    assert read_metadata(at_fit_end) == read_metadata(path)
    metadata = read_metadata(path)
    assert metadata["threshold"] == pytest.approx(float(detector.threshold))
    assert metadata["image_size"] == [SIZE, SIZE] and metadata["in_chans"] == 3
    assert metadata["layers"] == [1, 2]
    assert metadata["memory_bank_shape"] == list(detector.memory_bank.shape)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    anomaly_map, score = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected_map, expected_score = detector.eval()(images)
    assert anomaly_map.shape == (3, 1, SIZE, SIZE) and score.shape == (3,)
    np.testing.assert_allclose(anomaly_map, expected_map.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(score, expected_score.numpy(), atol=1e-4, rtol=0)


def test_predict_writes_scores_decisions_and_maps_of_flagged_images(fitted, capsys):
    work, root, detector, _ = fitted
    new = work / "incoming"
    defects = sorted(root.glob("test/*/*.png"))
    for path in defects:
        (new / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, new / path.parent.name / path.name)
    (new / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    kwargs = trainer_kwargs(work, logger=CSVLogger(work / "runs", name="predict"))
    L.Trainer(**kwargs).predict(detector, _data(new), return_predictions=False)
    run = work / "runs" / "predict" / "version_0"
    with (run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(defects)
    assert {"path", "anomaly_score", "decision", "label", "heatmap"} <= set(rows[0])
    threshold = float(detector.threshold)
    flagged = [r for r in rows if r["decision"] == "defect"]
    assert flagged and any(r["decision"] == "good" for r in rows)
    for row in rows:
        assert (float(row["anomaly_score"]) > threshold) == (row["decision"] == "defect")
        assert (row["heatmap"] != "") == (row["decision"] == "defect")
        assert row["label"] == Path(row["path"]).parent.name  # class folders: label known
    for row in flagged:
        assert Image.open(run / row["heatmap"]).size == (2 * SIZE, SIZE)  # image | overlay
    assert len(list((run / "heatmaps").rglob("*.png"))) == len(flagged)
    assert (run / "skipped.txt").read_text().split() == [str(new / "good" / "broken.png")]
    assert "broken.png" in capsys.readouterr().out
