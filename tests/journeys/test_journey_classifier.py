"""After fine-tuning (README journey): test it, export it to ONNX; the README's predict on new
images.

Commands as docs/getting_started.md, docs/export.md and recipes/finetune.yaml write them, typed in
the README journey's project folder, with the size overrides only.
"""

from __future__ import annotations

import csv
import math
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import Result, lit_ssl, run_many, small
from PIL import Image

from lit_ssl.classify.export import read_metadata

CKPT = "runs/finetune/version_0/checkpoints/last.ckpt"


@pytest.fixture(scope="session")
def exported(project, classifier_ckpt, journey_pool) -> tuple[Path, int | None, Future[Result]]:
    """``lit-ssl export CKPT``, started in the background (it writes no run folder, so it can
    overlap ``test``): (ONNX path, its mtime before, the running export)."""
    onnx_path = classifier_ckpt.parents[1] / "classifier.onnx"
    before = onnx_path.stat().st_mtime_ns if onnx_path.exists() else None
    return onnx_path, before, run_many([["export", CKPT]], project, pool=journey_pool)[0]


def test_test_the_finetuned_classifier(project, class_folders, classifier_ckpt, exported):
    args = ["test", "--config", "recipes/finetune.yaml", "--data.root", class_folders.root]
    result = lit_ssl(*args, "--ckpt_path", CKPT, *small(), cwd=project)
    assert "test/" in result.output, "no test metric reported"


def test_export_the_classifier_to_onnx_and_run_it(class_folders, exported):
    onnx_path, before, job = exported
    result = job.result()
    assert result.returncode == 0, result.describe()
    assert onnx_path.is_file() and onnx_path.stat().st_mtime_ns != before, "export wrote nothing"

    metadata = read_metadata(onnx_path)
    assert metadata["good_class"] == "good" and 0.0 <= metadata["threshold"] <= 1.0
    size = metadata["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    user_image = Image.open(class_folders.readable[0]).convert("RGB").resize((width, height))
    images = (np.asarray(user_image, np.float32) / 255.0).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    score, probabilities = session.run(None, {session.get_inputs()[0].name: images})
    assert score.shape == (1,) and 0.0 <= float(score[0]) <= 1.0
    assert probabilities.shape == (1, len(metadata["class_names"]))
    assert math.isclose(float(probabilities.sum()), 1.0, rel_tol=1e-4)


def test_predict_on_a_folder_of_new_images(project, new_images, readme_runs):
    result = readme_runs[3]  # README: lit-ssl predict --config recipes/finetune.yaml ...
    assert result.returncode == 0, result.describe()
    written = sorted((project / "runs" / "finetune").glob("version_*/predictions.csv"))
    assert len(written) == 1, f"expected one predictions.csv in the run folder, got {written}"
    with written[0].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0]) if rows else []
    assert {Path(r["path"]).resolve() for r in rows} == {p.resolve() for p in new_images.readable}
    assert len(rows) == len(new_images.readable), "one row per readable image"
    score = next(c for c in columns if "score" in c)
    decision = next(c for c in columns if c in ("decision", "is_defect", "predicted_class"))
    probabilities = [c for c in columns if c.startswith("p_")]
    assert len(probabilities) >= 2, f"no class probabilities in {columns}"
    for row in rows:
        assert 0.0 <= float(row[score]) <= 1.0 and row[decision] != ""
        assert math.isclose(sum(float(row[c]) for c in probabilities), 1.0, rel_tol=1e-3)
    for unreadable in new_images.broken:
        assert unreadable.name in result.output, f"{unreadable.name} is not named"
