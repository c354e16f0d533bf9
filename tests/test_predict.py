"""``lit-ssl predict`` / ``lit-ssl test`` with a fine-tuned checkpoint, as documented:

    lit-ssl fit --config recipes/finetune.yaml --data.root LABELLED
    lit-ssl predict --config recipes/finetune.yaml --data.root NEW_IMAGES --ckpt_path CKPT
    lit-ssl test --config recipes/finetune.yaml --ckpt_path CKPT

run via subprocess on folders the test writes, with size overrides only.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "finetune.yaml"
LIT_SSL = Path(sys.executable).with_name("lit-ssl")
SIZE = ["--data.image_size", "32", "--data.num_workers", "0", "--trainer.accelerator", "cpu"]
FIT = [
    "--model.backbone",
    "test_resnet",
    "--trainer.max_steps",
    "2",
    "--trainer.max_epochs",
    "1",
    "--data.batch_size",
    "8",
]


def run_lit_ssl(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(
        [str(LIT_SSL), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def write_png(path: Path, rng: np.random.Generator, defect: bool = False) -> None:
    image = (rng.random((32, 32, 3)) * 120 + 60).astype(np.uint8)
    if defect:
        image[12:15, 4:28] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_class_folders(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, count in (("good", 24), ("scratch", 16)):
        for i in range(count):
            write_png(root / name / f"{i:02d}.png", rng, defect=name == "scratch")
    return root


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> tuple[Path, Path]:
    """(work folder, last.ckpt) of a tiny ``lit-ssl fit`` of recipes/finetune.yaml."""
    work = tmp_path_factory.mktemp("finetune")
    write_class_folders(work / "labelled")
    run_lit_ssl(["fit", "--config", str(RECIPE), "--data.root", "labelled", *SIZE, *FIT], work)
    checkpoint = work / "runs" / "finetune" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return work, checkpoint


def test_predict_writes_predictions_csv_in_the_run_folder(finetuned):
    work, checkpoint = finetuned
    rng = np.random.default_rng(1)
    new = work / "new_images"
    readable = [new / "a.png", new / "b.png", new / "line2" / "c.png", new / "line2" / "d.PNG"]
    for i, path in enumerate(readable):
        write_png(path, rng, defect=i % 2 == 1)
    (new / "line2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    result = run_lit_ssl(
        [
            "predict",
            "--config",
            str(RECIPE),
            "--data.root",
            str(new),
            "--ckpt_path",
            str(checkpoint),
        ]
        + SIZE,
        work,
    )
    written = re.search(r"Wrote 4 predictions to (\S+)", result.stdout)
    assert written, result.stdout[-2000:]
    predictions = work / written.group(1)
    run = predictions.parent
    assert run.parent == work / "runs" / "finetune" and run.name.startswith("version_")
    assert "broken.png" in result.stdout  # the unreadable file is named
    assert (run / "skipped.txt").read_text().splitlines() == [str(new / "line2" / "broken.png")]

    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png", "c.png", "d.PNG"]
    assert list(rows[0])[:3] == ["path", "defect_score", "decision"]
    assert {"p_good", "p_defect"} <= set(rows[0])
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    threshold = float(state["threshold"])
    for row in rows:
        score = float(row["defect_score"])
        assert row["decision"] == ("defect" if score >= threshold else "good")
        assert float(row["p_good"]) + float(row["p_defect"]) == pytest.approx(1.0, abs=1e-5)
        assert score == pytest.approx(1.0 - float(row["p_good"]), abs=1e-6)

    # the scores are the classifier's own on the same (resize-only) inputs
    from lit_ssl.classifier import DefectClassifier
    from lit_ssl.data import FactoryDataModule

    classifier = DefectClassifier.load_from_checkpoint(checkpoint).eval()
    data = FactoryDataModule(str(new), task="classify", image_size=32, binary=True)
    data.setup("predict")
    expected = {}
    with torch.no_grad():
        for images, _, paths in data.predict_dataloader():
            expected.update(zip(paths, classifier.predict_scores(images)[0].tolist(), strict=True))
    for row in rows:
        assert float(row["defect_score"]) == pytest.approx(expected[row["path"]], abs=1e-5)


def test_test_subcommand_with_the_checkpoint(finetuned):
    work, checkpoint = finetuned
    result = run_lit_ssl(
        ["test", "--config", str(RECIPE), "--data.root", "labelled", "--ckpt_path", str(checkpoint)]
        + SIZE,
        work,
    )
    assert "test/auroc" in result.stdout
    assert "test/threshold" in result.stdout
