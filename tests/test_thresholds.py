"""Decision thresholds chosen from validation scores (pure functions)."""

from __future__ import annotations

import pytest
import torch

from lit_ssl.classify.thresholds import (
    best_f1_threshold,
    just_below,
    recall_threshold,
    select_threshold,
)
from lit_ssl.decision import is_defect


def _recall(scores, targets, threshold):
    return float((is_defect(scores, threshold) & targets).sum() / targets.sum())


def _f1(scores, targets, threshold):
    pred = is_defect(scores, threshold)
    tp = float((pred & targets).sum())
    return 2 * tp / (float(pred.sum()) + float(targets.sum()))


def test_recall_threshold_is_kth_highest_defect_score():
    scores = torch.tensor([0.1, 0.2, 0.9, 0.8, 0.35, 0.6, 0.05])
    targets = torch.tensor([0, 0, 1, 1, 1, 1, 0]).bool()
    assert recall_threshold(scores, targets, 1.0) == pytest.approx(0.35)
    assert recall_threshold(scores, targets, 0.75) == pytest.approx(0.6)
    assert recall_threshold(scores, targets, 0.5) == pytest.approx(0.8)
    assert recall_threshold(scores, targets, 0.01) == pytest.approx(0.9)


def test_recall_threshold_is_the_highest_reaching_target():
    gen = torch.Generator().manual_seed(0)
    targets = torch.rand(500, generator=gen) < 0.2
    scores = torch.rand(500, generator=gen) + 0.5 * targets
    for target in (0.5, 0.9, 0.95, 0.99, 1.0):
        threshold = recall_threshold(scores, targets, target)
        assert _recall(scores, targets, threshold) >= target
        assert _recall(scores, targets, threshold + 1e-6) < target


def test_recall_threshold_exact_fraction_not_rounded_up():
    scores = torch.arange(100, dtype=torch.float32) / 100
    targets = torch.ones(100, dtype=torch.bool)
    # 99% of 100 defects = 99 defects: the 99th highest score, not the lowest
    assert recall_threshold(scores, targets, 0.99) == pytest.approx(0.01)


def test_best_f1_matches_brute_force_and_prefers_higher_threshold():
    gen = torch.Generator().manual_seed(1)
    targets = torch.rand(300, generator=gen) < 0.3
    scores = (torch.rand(300, generator=gen) + 0.6 * targets).round(decimals=2)  # ties
    threshold = best_f1_threshold(scores, targets)
    candidates = [just_below(float(c)) for c in scores.unique()]  # flag the scores >= c
    best = max(_f1(scores, targets, c) for c in candidates)
    assert _f1(scores, targets, threshold) == pytest.approx(best)
    assert threshold == max(c for c in candidates if _f1(scores, targets, c) == best)


def test_best_f1_perfect_separation():
    scores = torch.tensor([0.1, 0.2, 0.7, 0.9])
    targets = torch.tensor([0, 0, 1, 1])
    assert best_f1_threshold(scores, targets) == pytest.approx(0.7)


def test_select_threshold_dispatch_and_errors():
    scores = torch.tensor([0.1, 0.4, 0.8])
    targets = torch.tensor([0, 1, 1])
    assert select_threshold(scores, targets, "f1") == best_f1_threshold(scores, targets)
    assert select_threshold(scores, targets, "recall", 1.0) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="mode"):
        select_threshold(scores, targets, "youden")
    with pytest.raises(ValueError, match="No defective"):
        select_threshold(scores, torch.zeros(3), "recall")
    with pytest.raises(ValueError, match="No defective"):
        select_threshold(scores, torch.zeros(3), "f1")
    with pytest.raises(ValueError, match="target_recall"):
        recall_threshold(scores, targets, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        recall_threshold(torch.tensor([float("nan"), 0.1, 0.2]), targets)
    with pytest.raises(ValueError, match="targets"):
        best_f1_threshold(scores, targets[:2])


def test_a_score_equal_to_the_threshold_is_not_flagged():
    """The one decision rule: strictly above the threshold."""
    assert is_defect(torch.tensor([0.3, 0.5, 0.7]), 0.5).tolist() == [False, False, True]


def test_chosen_thresholds_flag_the_defect_they_must_catch():
    scores = torch.tensor([0.1, 0.35, 0.6, 0.9])
    targets = torch.tensor([0, 1, 1, 1]).bool()
    recall = recall_threshold(scores, targets, 1.0)  # must catch the 0.35 defect
    assert recall < 0.35 and is_defect(scores, recall).tolist() == [False, True, True, True]
    f1 = best_f1_threshold(scores, targets)
    assert is_defect(scores, f1).tolist() == [False, True, True, True]
    assert just_below(0.35) == float(torch.tensor(0.35).nextafter(torch.tensor(0.0)))
