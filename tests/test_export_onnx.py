"""ONNX export: one inference path, parity with PyTorch, deployment metadata."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _defect_data import CLASSES

from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.classify.export import read_metadata, to_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 3-class classifier with a non-default threshold, exported once (dynamo exporter)."""
    torch.manual_seed(0)
    clf = DefectClassifier("test_resnet", class_names=CLASSES, head="mlp")
    with torch.no_grad():  # non-trivial running statistics in the feature norm
        clf.head[0].running_mean.normal_()
        clf.head[0].running_var.uniform_(0.5, 2.0)
    clf.threshold.fill_(0.3125)
    clf.threshold_from_validation.fill_(True)
    clf.input_size.copy_(torch.tensor([32, 32]))  # as recorded during training
    clf.train()  # export must not depend on the caller's mode
    path = clf.to_onnx(tmp_path_factory.mktemp("onnx") / "clf.onnx")
    return clf, path


def test_onnx_scores_match_pytorch(exported):
    clf, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["defect_score", "probabilities"]
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # batch 5
    score_onnx, probs_onnx = session.run(None, {"images": images.numpy()})
    assert clf.training  # the export used an eval-mode copy and left the module alone
    clf.eval()
    with torch.no_grad():
        score, probs = clf.predict_scores(images)
    diff = float(np.abs(score_onnx - score.numpy()).max())
    print(f"max abs defect-score diff onnxruntime vs torch: {diff:.2e}")
    assert diff < 1e-4
    np.testing.assert_allclose(probs_onnx, probs.numpy(), atol=1e-4)


def test_onnx_metadata(exported):
    clf, path = exported
    meta = read_metadata(path)
    assert meta["threshold"] == pytest.approx(0.3125)
    assert meta["threshold_source"] == "validation"
    assert meta["class_names"] == CLASSES
    assert meta["good_class"] == "good" and meta["good_index"] == 0
    assert meta["image_size"] == [32, 32]
    assert meta["in_chans"] == 3
    assert meta["input_range"] == [0.0, 1.0]


def test_export_needs_an_image_size(tmp_path):
    clf = DefectClassifier("test_resnet")
    with pytest.raises(ValueError, match="image_size"):
        to_onnx(clf, tmp_path / "x.onnx")


def test_export_is_one_self_contained_file(tmp_path):
    from lit_ssl.classify.classifier import DefectClassifier

    classifier = DefectClassifier(backbone="test_resnet", class_names=["good", "defect"])
    path = classifier.to_onnx(tmp_path / "classifier.onnx", image_size=32)
    assert [p.name for p in tmp_path.iterdir()] == ["classifier.onnx"]
    assert path.stat().st_size > 100_000  # the weights are inside
