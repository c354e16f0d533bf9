"""``lit-ssl predict`` / ``lit-ssl test`` with a fine-tuned checkpoint, as documented:

    lit-ssl fit --config recipes/finetune.yaml --data.root LABELLED
    lit-ssl predict --config recipes/finetune.yaml --data.root NEW_IMAGES --ckpt_path CKPT
    lit-ssl test --config recipes/finetune.yaml --ckpt_path CKPT

run in-process on folders the test writes, with size overrides only (tests/journeys/ types
the same commands in a subprocess).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import RECIPE, SIZE, run_lit_ssl, write_png


def test_predict_writes_predictions_csv_in_the_run_folder(finetuned, capsys):
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
        capsys,
    )
    written = re.search(r"Wrote 4 predictions to (\S+)", result)
    assert written, result[-2000:]
    predictions = work / written.group(1)
    run = predictions.parent
    assert run.parent == work / "runs" / "finetune" and run.name.startswith("version_")
    assert "broken.png" in result  # the unreadable file is named
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
        assert row["decision"] == ("defect" if score > threshold else "good")
        assert float(row["p_good"]) + float(row["p_defect"]) == pytest.approx(1.0, abs=1e-5)
        assert score == pytest.approx(1.0 - float(row["p_good"]), abs=1e-6)

    # the scores are the classifier's own on the same (resize-only) inputs
    from lit_ssl.classify.classifier import DefectClassifier
    from lit_ssl.data import FactoryDataModule

    classifier = DefectClassifier.load_from_checkpoint(checkpoint).eval()
    data = FactoryDataModule(str(new), task="classify", image_size=32, binary=True)
    data.setup("predict")
    expected = {}
    with torch.no_grad():
        for batch in data.predict_dataloader():
            scores = classifier.predict_scores(batch.images)[0].tolist()
            expected.update(zip(batch.paths, scores, strict=True))
    for row in rows:
        assert float(row["defect_score"]) == pytest.approx(expected[row["path"]], abs=1e-5)


def test_test_subcommand_with_the_checkpoint(finetuned, capsys):
    work, checkpoint = finetuned
    result = run_lit_ssl(
        ["test", "--config", str(RECIPE), "--data.root", "labelled", "--ckpt_path", str(checkpoint)]
        + SIZE,
        work,
        capsys,
    )
    assert "test/auroc" in result
    assert "test/threshold" in result
    # per defect type (class folders: good, scratch), on screen and in the run's metrics.csv
    assert "test/defect_recall_at_threshold/scratch" in result
    assert "test/auroc_vs_good/scratch" in result
    newest = max((work / "runs" / "finetune").glob("version_*"), key=lambda p: p.stat().st_mtime)
    header = (newest / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"test/defect_recall_at_threshold/scratch", "test/auroc_vs_good/scratch"} <= set(header)
    predicted = run_lit_ssl(
        ["predict", "--config", str(RECIPE), "--data.root", "labelled"]
        + ["--ckpt_path", str(checkpoint), *SIZE],
        work,
        capsys,
    )
    (summary,) = [line for line in predicted.splitlines() if "by known type" in line]
    assert re.fullmatch(
        r'Flagged "defect", by known type: good \d+ of 24, scratch \d+ of 16', summary
    )
