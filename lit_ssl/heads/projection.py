"""Projector / predictor MLPs shared by the heads."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    last_norm: bool = False,
) -> nn.Sequential:
    """Linear-BN-ReLU blocks followed by a final Linear (optionally with affine-free BN).

    Args:
        in_dim: input dimension (the backbone's ``embed_dim``).
        hidden_dim: width of the hidden layers.
        out_dim: output dimension.
        num_layers: number of Linear layers (>= 1).
        last_norm: add ``BatchNorm1d(affine=False)`` after the last layer (SimCLR v2 style).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_norm))
    if last_norm:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
