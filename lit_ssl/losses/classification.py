"""Classification losses of the defect classifier: focal loss and class-balanced weights.

Pure functions on logits ``(N, C)`` and class indices ``(N,)``; ``DefectClassifier`` picks
one by its ``loss`` and ``class_weights`` options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["balanced_class_weights", "focal_loss", "per_sample_focal"]


def balanced_class_weights(counts: Tensor) -> Tensor:
    """sklearn's "balanced" class weights ``n / (C * n_c)``; classes without samples get 0.

    As ``sklearn.utils.class_weight.compute_class_weight("balanced", ...)`` (King & Zeng
    2001, "Logistic Regression in Rare Events Data"):
    https://gking.harvard.edu/files/0s.pdf

    Args:
        counts: samples per class ``(C,)``.

    Returns:
        Float weights ``(C,)``: each present class weighs ``n / (C * n_c)``.

    Example:
        >>> balanced_class_weights(torch.tensor([30, 10, 0]))
        tensor([0.4444, 1.3333, 0.0000])
    """
    counts = counts.double()
    weights = counts.sum() / (counts.numel() * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


def per_sample_focal(logits: Tensor, labels: Tensor, gamma: float, smoothing: float) -> Tensor:
    """Unreduced focal loss ``(1 - p_t)^gamma * CE`` ``(N,)`` (Lin et al. 2017, Eq. 5).

    Paper: https://arxiv.org/abs/1708.02002

    Args:
        logits: class logits ``(N, C)``.
        labels: class indices ``(N,)``.
        gamma: focusing parameter (0: plain cross-entropy).
        smoothing: label smoothing of the cross-entropy factor.

    Example:
        >>> per_sample_focal(torch.zeros(2, 2), torch.tensor([0, 1]), 0.0, 0.0)
        tensor([0.6931, 0.6931])
    """
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=smoothing)
    p_true = logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
    return (1.0 - p_true).clamp(min=0.0).pow(gamma) * ce


def focal_loss(
    logits: Tensor,
    labels: Tensor,
    gamma: float = 2.0,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Multi-class focal loss ``(1 - p_t)^gamma * CE``, class-weighted mean (Lin et al. 2017).

    Paper: https://arxiv.org/abs/1708.02002

    Each sample's loss is multiplied by its class weight ``weight[label]`` (a weighted mean).
    With ``gamma=0`` it equals ``F.cross_entropy`` with ``weight`` (no smoothing) or with
    ``label_smoothing`` (no weight).

    Args:
        logits: class logits ``(N, C)``.
        labels: class indices ``(N,)``.
        gamma: focusing parameter.
        weight: per-class weights ``(C,)``, or ``None``.
        label_smoothing: label smoothing of the cross-entropy factor.

    Example:
        >>> logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
        >>> focal_loss(logits, labels, gamma=0.0) == F.cross_entropy(logits, labels)
        tensor(True)
    """
    modulated = per_sample_focal(logits, labels, gamma, label_smoothing)
    if weight is None:
        return modulated.mean()
    sample_weight = weight[labels]
    return (modulated * sample_weight).sum() / sample_weight.sum().clamp(min=1e-12)
