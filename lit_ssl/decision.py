"""The one decision rule of lit_ssl: an image is a defect when its score is above the threshold.

``DefectClassifier`` (defect score ``1 - p(good)``) and ``AnomalyDetector`` (anomaly score)
flag an image by :func:`is_defect`, and their ONNX metadata states the same rule
(:func:`decision_text`), so a deployment re-implements exactly one comparison.

Why strictly above (``score > threshold``): a threshold is an observed score of the
validation images, and ``>`` lets it mean "flag what scores higher than this": the
detector's ``false_alarm_threshold`` flags at most ``rate`` of the good validation images
(the good image sitting exactly at the threshold passes), an infinite threshold (a detector
that never saw validation images) flags nothing, and the classifier's threshold selection
(``lit_ssl.classify.thresholds``) returns the largest float32 value just below the defect
score that must still be caught, so its recall / F1 guarantees hold under the same rule.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["decision_text", "is_defect"]


def is_defect(scores: Tensor, threshold: Tensor | float) -> Tensor:
    """Boolean ``(B,)``: the images whose score is strictly above ``threshold``.

    Args:
        scores: defect or anomaly scores ``(B,)``, higher = more likely defective.
        threshold: the decision threshold (a 0-d tensor or a float).

    Example:
        >>> import torch
        >>> is_defect(torch.tensor([0.2, 0.5, 0.7]), 0.5).tolist()
        [False, False, True]
    """
    return scores > threshold


def decision_text(score_name: str) -> str:
    """The rule as the ONNX metadata's ``decision`` string, for the output ``score_name``.

    Example:
        >>> decision_text("defect_score")
        'defect if defect_score > threshold'
    """
    return f"defect if {score_name} > threshold"
