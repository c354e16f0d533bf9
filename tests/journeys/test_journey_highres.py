"""High-resolution frames: docs/finetuning.md "Tiles for high-resolution frames", as written.

The two ``lit-ssl`` commands of that section (fit with recipes/highres.yaml, predict with its
checkpoint) run in a subprocess on a folder of 1024 x 1024 16-bit TIFFs (10-20 px defects) and a
256 x 2048 line-scan strip, with size overrides only. Then: one CSV row per image, a heat-map
PNG for every flagged image, and the ONNX written at the end of fit (default exporter, whole
frames in, tiles inside) agrees with the checkpoint to 1e-4.
"""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import trees
from conftest import REPO, lit_ssl
from PIL import Image

from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.classify.export import read_metadata

SECTION = "## Tiles for high-resolution frames"
SIZES = [
    "--model.backbone", "test_resnet",
    "--data.num_workers", "0",
    "--trainer.accelerator", "cpu",
    "--trainer.max_epochs", "1",
    "--trainer.enable_progress_bar", "false",
    "--data.image_size", "384",
    "--model.tile_size", "96",
    "--model.tile_stride", "72",
]  # fmt: skip


def docs_commands(substitutions: dict[str, str]) -> list[list[str]]:
    """The section's ``lit-ssl`` commands (its ``text`` block), folders substituted."""
    text = (REPO / "docs" / "finetuning.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "lit-ssl", f"docs command is not lit-ssl: {line}"
            commands.append([substitutions.get(w, w) for w in words[1:]])
    return commands


@pytest.fixture(scope="module")
def highres(tmp_path_factory) -> trees.Tree:
    return trees.write_highres(tmp_path_factory.mktemp("highres") / "line7")


def test_fit_and_predict_on_high_resolution_frames(highres, fresh_project):
    root = str(highres.root)
    commands = docs_commands({"/data/line7_labelled": root, "/data/line7_new": root})
    assert [c[0] for c in commands] == ["fit", "predict"], commands
    fit = lit_ssl(*commands[0], *SIZES, cwd=fresh_project)
    run = fresh_project / "runs" / "highres" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file(), fit.describe()
    predict = lit_ssl(*commands[1], *SIZES, cwd=fresh_project)

    csv_path = fresh_project / "runs" / "highres" / "version_1" / "predictions.csv"
    assert csv_path.is_file(), predict.describe()
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(r["path"]).resolve() for r in rows) == sorted(
        p.resolve() for p in highres.readable
    ), "one row per image"
    flagged = [r for r in rows if r["decision"] == "defect"]
    assert flagged, "nothing flagged: no heat map to check"
    written = sorted(csv_path.parent.rglob("heatmaps/**/*.png"))
    assert [p.relative_to(csv_path.parent).as_posix() for p in written] == sorted(
        r["heatmap"] for r in flagged
    )
    assert all(r["heatmap"] == "" for r in rows if r["decision"] == "good")
    picture = Image.open(written[0])
    assert picture.size == (2 * 384, 384)  # the frame as seen, and its tile scores over it

    # the ONNX of the end of fit: whole frames in, tiles inside, parity with the checkpoint
    onnx_path = run / "classifier.onnx"
    metadata = read_metadata(onnx_path)
    assert metadata["image_size"] == [384, 384]
    assert (metadata["tile_size"], metadata["tile_stride"]) == (96, 72)
    classifier = DefectClassifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt").eval()
    frames = np.random.default_rng(0).random((2, 1, 384, 384), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    scores, probs = session.run(None, {"images": frames})
    with torch.no_grad():
        expected_scores, expected_probs = classifier.predict_scores(torch.from_numpy(frames))
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(probs, expected_probs.numpy(), atol=1e-4)
