"""Decision thresholds on defect scores, chosen from validation scores only.

Pure functions: scores and binary targets in, one float threshold out. The decision rule
everywhere in lit_ssl is ``defect = score > threshold`` (:mod:`lit_ssl.decision`), so a
threshold that must catch a score ``s`` is the largest float32 value below ``s``
(:func:`just_below`): every float32 score ``>= s`` is flagged, every lower one is not, exactly
the operating point "flag the images scoring at least ``s``". Callers must pass validation
scores; ``DefectClassifier`` only calls these at the end of a validation epoch, never on
test data (anomalib picks its threshold on the test set; we do not).
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

__all__ = [
    "NonFiniteScoresError",
    "ThresholdMode",
    "recall_threshold",
    "best_f1_threshold",
    "just_below",
    "select_threshold",
    "validation_threshold",
]

ThresholdMode = Literal["f1", "recall"]


class NonFiniteScoresError(ValueError):
    """Scores with NaN or inf: no threshold can be chosen (the model itself is broken)."""


def _check(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    scores = torch.as_tensor(scores).detach().flatten().double().cpu()
    targets = torch.as_tensor(targets).detach().flatten().cpu()
    if scores.numel() != targets.numel():
        raise ValueError(f"{scores.numel()} scores but {targets.numel()} targets.")
    if scores.numel() == 0:
        raise ValueError("Cannot choose a threshold from zero validation samples.")
    if not torch.isfinite(scores).all():
        raise NonFiniteScoresError("Defect scores contain NaN or inf; cannot choose a threshold.")
    return scores, targets.bool()


def just_below(score: float) -> float:
    """The largest float32 value below ``score``: ``x > just_below(s)`` iff ``x >= s``.

    Scores are float32 in PyTorch and ONNX alike (``float32(score)`` rounds first).

    Example:
        >>> t = just_below(0.5)
        >>> t < 0.5 and torch.tensor(0.5) > t and not torch.tensor(t) > t
        True
    """
    value = torch.tensor(score, dtype=torch.float32)
    return float(torch.nextafter(value, torch.tensor(float("-inf"))))


def recall_threshold(scores: Tensor, targets: Tensor, target_recall: float = 0.99) -> float:
    """Highest threshold whose defect recall on these samples is at least ``target_recall``.

    Args:
        scores: defect scores ``(N,)`` (higher = more likely defective).
        targets: ``(N,)`` 1/True for defective samples, 0/False for good ones.
        target_recall: required fraction of defects with ``score > threshold``, in (0, 1].

    Returns:
        Just below (:func:`just_below`) the score of the k-th highest-scoring defect,
        ``k = ceil(target_recall * n_defects)``: that defect and every higher one are flagged.

    Raises:
        ValueError: no defective sample, or ``target_recall`` outside (0, 1].
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}.")
    scores, targets = _check(scores, targets)
    defect_scores = scores[targets].sort(descending=True).values
    if defect_scores.numel() == 0:
        raise ValueError("No defective sample in the validation scores: recall is undefined.")
    # small tolerance so that e.g. 0.99 * 100 does not round up to 100 defects
    k = int(torch.tensor(target_recall * defect_scores.numel() - 1e-9).ceil().clamp(min=1))
    return just_below(float(defect_scores[k - 1]))


def best_f1_threshold(scores: Tensor, targets: Tensor) -> float:
    """Threshold maximising the defect F1 score on these samples.

    Candidates are the operating points "flag the scores >= s" for each distinct score ``s``
    (as thresholds: ``just_below(s)``); among equal F1 the highest threshold wins.

    Args:
        scores: defect scores ``(N,)``.
        targets: ``(N,)`` 1/True for defective samples.

    Raises:
        ValueError: no defective sample (F1 is 0 for every threshold).
    """
    scores, targets = _check(scores, targets)
    n_defects = int(targets.sum())
    if n_defects == 0:
        raise ValueError("No defective sample in the validation scores: F1 is undefined.")
    order = scores.argsort(descending=True)
    sorted_scores, sorted_targets = scores[order], targets[order].double()
    tp = sorted_targets.cumsum(0)
    predicted = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    f1 = 2 * tp / (predicted + n_defects)
    # only the last position of a run of equal scores is a reachable operating point
    last_of_run = torch.ones_like(sorted_targets, dtype=torch.bool)
    last_of_run[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    f1 = torch.where(last_of_run, f1, torch.full_like(f1, -1.0))
    best = int(torch.argmax(f1))  # first maximum = highest threshold
    return just_below(float(sorted_scores[best]))


def select_threshold(
    scores: Tensor,
    targets: Tensor,
    mode: ThresholdMode = "recall",
    target_recall: float = 0.99,
) -> float:
    """Threshold for ``mode``: ``"f1"`` (best F1) or ``"recall"`` (target defect recall)."""
    if mode == "f1":
        return best_f1_threshold(scores, targets)
    if mode == "recall":
        return recall_threshold(scores, targets, target_recall)
    raise ValueError(f"threshold mode must be 'f1' or 'recall', got {mode!r}.")


def validation_threshold(
    scores: Tensor, targets: Tensor, mode: ThresholdMode, target_recall: float, kept: Tensor | float
) -> float | None:
    """``select_threshold`` on a validation epoch's scores; ``None`` (with a warning) when
    none can be chosen (e.g. no defect among the validation images) and ``kept`` stays.

    Raises:
        ValueError: the scores are not finite (the classifier's weights are broken).
    """
    try:
        return select_threshold(scores, targets, mode, target_recall)
    except NonFiniteScoresError:  # a NaN threshold would pass (or flag) every image
        raise ValueError(
            "the classifier's defect scores on the validation images are not finite "
            "(NaN/inf): its weights are broken.\nCheck --model.weights (NaN tensors?) or "
            "lower --model.lr if the training diverged."
        ) from None
    except ValueError as err:
        rank_zero_warn(f"Threshold kept at {float(kept):.4f}: {err}")
        return None
