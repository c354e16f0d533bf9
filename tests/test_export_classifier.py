"""``lit-ssl export <classifier checkpoint>`` (docs/export.md) writes ``classifier.onnx`` into
the run folder, and the ONNX scores equal the PyTorch classifier's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_predict import run_lit_ssl

from lit_ssl.checkpoints import MODULE_KEY
from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.classify.export import read_metadata


@pytest.fixture
def checkpoint(finetuned):
    """test_predict's fine-tuned classifier (one fit for both files)."""
    return finetuned[1]


def test_export_writes_classifier_onnx_into_the_run_folder(checkpoint, capsys):
    assert torch.load(checkpoint, weights_only=True)[MODULE_KEY] == "DefectClassifier"
    run = checkpoint.parent.parent
    onnx_path = run / "classifier.onnx"
    onnx_path.unlink()  # written at the end of fit: show that export writes it again
    result = run_lit_ssl(["export", str(checkpoint)], run, capsys)
    assert "classifier.onnx" in result
    assert onnx_path.is_file()

    classifier = DefectClassifier.load_from_checkpoint(checkpoint).eval()
    metadata = read_metadata(onnx_path)
    assert metadata["image_size"] == [32, 32]
    assert metadata["class_names"] == classifier.class_names == ["good", "defect"]
    assert metadata["threshold"] == pytest.approx(float(classifier.threshold))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    scores, probs = session.run(None, {"images": images})
    with torch.no_grad():
        expected_scores, expected_probs = classifier.predict_scores(torch.from_numpy(images))
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(probs, expected_probs.numpy(), atol=1e-4)
