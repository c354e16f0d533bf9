"""The classifier's head on pooled backbone features: ``FeatureNorm`` then linear or MLP."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureNorm", "build_head"]


class FeatureNorm(nn.BatchNorm1d):
    """Per-feature standardisation of pooled features before the head (no affine).

    As in MAE's linear probing: puts the features of any backbone / SSL method on one
    scale, so one head learning rate fits all. Running statistics are a cumulative average
    (``momentum=None``) that ``DefectClassifier`` resets at each training epoch start: exact
    for a frozen backbone, the current epoch's average while fine-tuning. A training batch
    of one sample is normalised with the running statistics.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False, momentum=None)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False)
        return super().forward(x)


def build_head(
    embed_dim: int,
    num_classes: int,
    kind: Literal["linear", "mlp"] = "linear",
    feature_norm: bool = True,
    hidden_dim: int = 256,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``[FeatureNorm] -> [Linear -> GELU] -> Dropout -> Linear`` on ``(B, embed_dim)``.

    Example:
        >>> [type(layer).__name__ for layer in build_head(8, 2)]
        ['FeatureNorm', 'Dropout', 'Linear']
    """
    norm = FeatureNorm(embed_dim) if feature_norm else nn.Identity()
    drop = nn.Dropout(dropout)
    if kind == "linear":
        return nn.Sequential(norm, drop, nn.Linear(embed_dim, num_classes))
    return nn.Sequential(
        norm, nn.Linear(embed_dim, hidden_dim), nn.GELU(), drop, nn.Linear(hidden_dim, num_classes)
    )
