"""The single scoring rule of lit_ssl: validation, test, predict and ONNX export use it."""

from __future__ import annotations

from torch import Tensor

__all__ = ["defect_scores"]


def defect_scores(logits: Tensor, good_index: int) -> tuple[Tensor, Tensor]:
    """``(defect_score (B,), probabilities (B, C))`` with ``defect_score = 1 - p(good)``.

    Args:
        logits: classifier outputs ``(B, C)``.
        good_index: column of the good (defect-free) class.

    Example:
        >>> import torch
        >>> score, probs = defect_scores(torch.tensor([[2.0, 0.0]]), good_index=0)
        >>> round(float(score), 3)
        0.119
    """
    probs = logits.float().softmax(dim=1)
    return 1.0 - probs[:, good_index], probs
