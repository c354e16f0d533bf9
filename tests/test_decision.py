"""One decision rule for both tasks: ``defect = score > threshold`` (lit_ssl.decision)."""

from __future__ import annotations

import torch

from lit_ssl import AnomalyDetector, DefectClassifier
from lit_ssl.anomaly.export import detector_metadata
from lit_ssl.classify.export import classifier_metadata
from lit_ssl.decision import decision_text, is_defect


def test_a_score_equal_to_the_threshold_is_good():
    scores = torch.tensor([0.25, 0.5, 0.75])
    assert is_defect(scores, torch.tensor(0.5)).tolist() == [False, False, True]
    assert decision_text("s") == "defect if s > threshold"


def test_classifier_boundary_score_is_good_in_its_torch_model():
    clf = DefectClassifier("test_resnet", class_names=["good", "crack", "dent"]).eval()
    with torch.no_grad():
        scores, probs, _ = clf.model.score(torch.rand(3, 3, 32, 32))
    clf.threshold.fill_(float(scores[1]))  # exactly the second image's score
    decisions = clf.model.decide(scores, probs)
    flagged = (decisions != clf.good_index).tolist()
    assert flagged == (scores > scores[1]).tolist() and not flagged[1]
    assert classifier_metadata(clf)["decision"] == "defect if defect_score > threshold"


def test_detector_boundary_score_is_good_in_its_torch_model():
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5, save_figures=False)
    detector.add_good(torch.rand(2, 3, 32, 32))
    detector.build_bank()
    with torch.no_grad():
        _, scores = detector(torch.rand(3, 3, 32, 32))
    detector.threshold.fill_(float(scores[1]))
    flagged = detector.model.is_defect(scores).tolist()
    assert flagged == (scores > scores[1]).tolist() and not flagged[1]
    assert detector_metadata(detector)["decision"] == "defect if anomaly_score > threshold"
