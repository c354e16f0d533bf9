"""Defect detection from good images only, as docs/anomaly.md says to run it, from the README
journey's self-supervised backbone: fit builds the bank, test reports image and pixel metrics,
export writes the ONNX file with the bank inside, predict writes scores, decisions and maps.

On an MVTec AD category every step is a ``lit-ssl`` subprocess (export and predict overlap);
on a VisA category fit and test are, while export and predict run the same CLI entry points
in this process (``lit_ssl.cli.main``), to keep the journeys' subprocess budget.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import Result, lit_ssl, run_many, small
from PIL import Image

from lit_ssl.classify.export import read_metadata
from lit_ssl.cli.main import main as lit_ssl_in_process

BACKBONE = "runs/vicreg/version_0/backbone.safetensors"
CKPT = "runs/anomaly/version_0/checkpoints/last.ckpt"
RECIPE = ["--config", "recipes/anomaly.yaml"]


def _fit_and_test(project: Path, fresh: Path, root: Path) -> Result:
    """``lit-ssl fit`` then ``lit-ssl test`` with recipes/anomaly.yaml; the test's result."""
    data = ["--data.root", root]
    fit = ["fit", *RECIPE, *data, "--model.weights", project / BACKBONE]
    lit_ssl(*fit, *small(), cwd=fresh)
    checkpoint = torch.load(fresh / CKPT, weights_only=True)
    assert checkpoint["global_step"] == 0, "building the bank takes no gradient step"
    bank = checkpoint["state_dict"]["memory_bank"]
    assert bank.ndim == 2 and bank.shape[0] > 0
    assert torch.isfinite(checkpoint["state_dict"]["threshold"])
    return lit_ssl("test", *RECIPE, *data, "--ckpt_path", CKPT, *small(), cwd=fresh)


def _metric(result: Result, name: str) -> float:
    found = re.search(rf"test/{name}\s+([0-9.]+)", result.output)
    assert found, f"no test/{name}\n{result.describe()}"
    return float(found.group(1))


def _check_onnx(fresh: Path, image: Path) -> None:
    """The export beside the checkpoint: metadata, and it scores a user's image."""
    path = fresh / "runs" / "anomaly" / "version_0" / "anomaly_detector.onnx"
    metadata = read_metadata(path)
    state = torch.load(fresh / CKPT, weights_only=True)["state_dict"]
    assert metadata["threshold"] == pytest.approx(float(state["threshold"]))
    assert metadata["memory_bank_shape"] == list(state["memory_bank"].shape)
    height, width = metadata["image_size"]
    pixels = Image.open(image).convert("RGB").resize((width, height))
    images = (np.asarray(pixels, np.float32) / 255.0).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    anomaly_map, score = session.run(None, {"images": images})
    assert anomaly_map.shape == (1, 1, height, width) and np.isfinite(score).all()
    assert float(score[0]) == pytest.approx(float(anomaly_map.max()), rel=0.2)


def _predictions(fresh: Path) -> tuple[Path, list[dict[str, str]]]:
    written = sorted((fresh / "runs" / "anomaly").glob("version_*/predictions.csv"))
    assert len(written) == 1, f"expected one predictions.csv, got {written}"
    with written[0].open(newline="") as handle:
        return written[0].parent, list(csv.DictReader(handle))


def _threshold(fresh: Path) -> float:
    return float(torch.load(fresh / CKPT, weights_only=True)["state_dict"]["threshold"])


def _check_rows(run: Path, rows: list[dict[str, str]], threshold: float) -> None:
    for row in rows:
        flagged = float(row["anomaly_score"]) > threshold
        assert row["decision"] == ("defect" if flagged else "good"), row
        assert (row["heatmap"] != "") == flagged, row
        if flagged:
            assert (run / row["heatmap"]).is_file(), row


def test_anomaly_detector_on_mvtec_fit_test_export_predict(
    fresh_project, project, readme_runs, mvtec, new_images
):
    assert readme_runs[1].returncode == 0, readme_runs[1].describe()
    result = _fit_and_test(project, fresh_project, mvtec.root)
    assert _metric(result, "image_auroc") >= 0.6, result.describe()  # chance is 0.5
    assert 0.0 <= _metric(result, "aupro") <= 1.0

    predict = ["predict", *RECIPE, "--data.root", new_images.root, "--ckpt_path", CKPT]
    export, predicted = (
        job.result() for job in run_many([["export", CKPT], [*predict, *small()]], fresh_project)
    )
    assert export.returncode == 0, export.describe()
    assert "anomaly_detector.onnx" in export.output
    _check_onnx(fresh_project, new_images.readable[0])

    assert predicted.returncode == 0, predicted.describe()
    run, rows = _predictions(fresh_project)
    assert {Path(r["path"]).resolve() for r in rows} == {p.resolve() for p in new_images.readable}
    threshold = float(
        torch.load(fresh_project / CKPT, weights_only=True)["state_dict"]["threshold"]
    )
    _check_rows(run, rows, threshold)
    for unreadable in new_images.broken:
        assert unreadable.name in predicted.output, f"{unreadable.name} is not named"
    assert (run / "skipped.txt").read_text().split() == [str(p) for p in new_images.broken]


def test_anomaly_detector_on_visa_fit_test_export_predict(
    fresh_project, project, readme_runs, visa, monkeypatch, capsys
):
    assert readme_runs[1].returncode == 0, readme_runs[1].describe()
    result = _fit_and_test(project, fresh_project, visa.root)
    assert _metric(result, "image_auroc") >= 0.5, result.describe()
    assert _metric(result, "pixel_auroc") > 0.5 and 0.0 <= _metric(result, "aupro") <= 1.0

    monkeypatch.chdir(fresh_project)  # `lit-ssl export` / `lit-ssl predict`, in this process
    assert lit_ssl_in_process(["export", CKPT]) == 0
    _check_onnx(fresh_project, visa.readable[0])
    predict = ["predict", *RECIPE, "--data.root", str(visa.root), "--ckpt_path", CKPT]
    assert lit_ssl_in_process([*predict, *small()]) == 0
    run, rows = _predictions(fresh_project)
    assert {Path(r["path"]).resolve() for r in rows} == {p.resolve() for p in visa.readable}
    assert {r["label"] for r in rows} == {"normal", "anomaly"}  # VisA's own labels
    threshold = float(
        torch.load(fresh_project / CKPT, weights_only=True)["state_dict"]["threshold"]
    )
    _check_rows(run, rows, threshold)
    assert "predictions" in capsys.readouterr().out
