"""Joint-embedding losses as pure functions, computed in float32 and DDP-aware.

Each function follows its paper's definition; batch statistics and negatives are taken
over all DDP ranks (see ``lit_ssl.distributed.gather``). Autocast is disabled inside, so
the losses are computed in float32 under ``bf16-mixed``/``16-mixed`` precision.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ssl.distributed import gather, rank

__all__ = ["barlow_twins", "info_nce", "negative_cosine", "vicreg", "vicreg_terms"]


def _float32(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run ``fn`` with autocast off and its tensor arguments cast to float32."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(a.float() if isinstance(a, Tensor) else a for a in args)
        kwargs = {k: v.float() if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def _check_pair(z1: Tensor, z2: Tensor) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"Expected two embeddings of the same shape (B, D), got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}."
        )


@_float32
def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's NT-Xent loss over both directions (Chen et al. 2020, Eq. 1).

    For 2N embeddings (the N pairs of this batch, gathered over all ranks), each anchor's
    positive is its pair and its negatives are the other 2N - 2 embeddings; the loss is the
    mean over all 2N anchors of ``-log softmax(cos / temperature)`` at the positive.

    Args:
        z1: embeddings of the first views, ``(B, D)``.
        z2: embeddings of the second views, ``(B, D)``.
        temperature: softmax temperature.
    """
    _check_pair(z1, z2)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    local = F.normalize(torch.cat([z1, z2]), dim=1)
    g1, g2 = gather(F.normalize(z1, dim=1)), gather(F.normalize(z2, dim=1))
    candidates = torch.cat([g1, g2])
    batch, total = z1.shape[0], g1.shape[0]
    offset = rank() * batch
    own = torch.arange(batch, device=z1.device) + offset
    self_index = torch.cat([own, own + total])
    positive_index = torch.cat([own + total, own])
    logits = local @ candidates.T / temperature
    logits = logits.masked_fill(F.one_hot(self_index, 2 * total).bool(), float("-inf"))
    return F.cross_entropy(logits, positive_index)


@_float32
def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean negative cosine similarity ``-cos(p_i, z_i)`` (SimSiam's D, BYOL up to 2 - 2x).

    No stop-gradient is applied here: pass ``z.detach()`` (or a teacher output) as target.
    """
    _check_pair(p, z)
    return -F.cosine_similarity(p, z, dim=1).mean()


def _off_diagonal(m: Tensor) -> Tensor:
    return m.flatten()[:-1].view(m.shape[0] - 1, m.shape[0] + 1)[:, 1:].flatten()


def _off_diagonal_sq_sum(a: Tensor, b: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of ``a.T @ b`` for ``a, b`` of shape (n, d).

    With fewer samples than dimensions (the usual case: projectors are 2048-8192 wide) it
    never forms the d x d matrix: ``||a'b||_F^2 = <a a', b b'>_F`` uses the n x n Gram
    matrices, minus the squared diagonal ``sum_k a_ki b_ki``. Same value (no cancellation
    issue: a rank-n d x d matrix with n < d keeps most of its energy off the diagonal),
    O(n^2 d) instead of O(n d^2) work and memory.
    """
    n, d = a.shape
    if n >= d:
        return _off_diagonal(a.T @ b).pow(2).sum()
    diagonal = (a * b).sum(dim=0)
    return ((a @ a.T) * (b @ b.T)).sum() - diagonal.pow(2).sum()


def _variance_covariance(z: Tensor, eps: float = 1e-4) -> tuple[Tensor, Tensor]:
    """VICReg's v(Z) and c(Z) on the batch gathered over all ranks."""
    z = gather(z)
    n, d = z.shape
    if n < 2:
        raise ValueError("VICReg needs at least 2 samples in the (global) batch.")
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + eps)
    variance = F.relu(1.0 - std).mean()
    covariance = _off_diagonal_sq_sum(z, z) / (n - 1) ** 2 / d  # Cov = z'z / (n - 1)
    return variance, covariance


@_float32
def vicreg_terms(z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
    """Unweighted VICReg terms: invariance, variance and covariance (both branches summed)."""
    _check_pair(z1, z2)
    v1, c1 = _variance_covariance(z1)
    v2, c2 = _variance_covariance(z2)
    return {"invariance": F.mse_loss(z1, z2), "variance": v1 + v2, "covariance": c1 + c2}


def vicreg(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> Tensor:
    """VICReg loss as in Bardes et al. 2022, Algorithm 1.

    ``sim_weight * mse(z1, z2) + var_weight * (v(z1) + v(z2)) + cov_weight * (c(z1) + c(z2))``
    with ``mse`` averaged over batch and dimensions, ``v(Z) = mean_j relu(1 - sqrt(Var(z_j)
    + 1e-4))`` and ``c(Z) = sum_{i != j} Cov(Z)_ij^2 / d`` (unbiased covariance).
    Variance and covariance use the batch gathered over all ranks.
    """
    terms = vicreg_terms(z1, z2)
    return (
        sim_weight * terms["invariance"]
        + var_weight * terms["variance"]
        + cov_weight * terms["covariance"]
    )


@_float32
def barlow_twins(z1: Tensor, z2: Tensor, lambd: float = 5e-3) -> Tensor:
    """Barlow Twins loss (Zbontar et al. 2021, Eq. 1 and Algorithm 1).

    Each dimension is standardised over the batch (global over ranks, unbiased std as in
    the paper's pseudo-code), ``C = z1n' z2n / N`` and the loss is
    ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``.
    """
    _check_pair(z1, z2)
    g1, g2 = gather(z1), gather(z2)
    n = g1.shape[0]
    if n < 2:
        raise ValueError("Barlow Twins needs at least 2 samples in the (global) batch.")
    z1n = (g1 - g1.mean(dim=0)) / g1.std(dim=0)
    z2n = (g2 - g2.mean(dim=0)) / g2.std(dim=0)
    c_diagonal = (z1n * z2n).sum(dim=0) / n  # diagonal of C = z1n' z2n / N
    on_diag = (1.0 - c_diagonal).pow(2).sum()
    return on_diag + lambd * _off_diagonal_sq_sum(z1n, z2n) / n**2
