"""Joint-embedding losses: InfoNCE, negative cosine, BYOL, VICReg, Barlow Twins.

Each follows its paper's definition (VICReg and Barlow Twins: the papers' Algorithm 1;
``convention="released"``: the authors' released code, see :data:`lit_ssl.losses.Convention`);
batch statistics and negatives are taken over all DDP ranks (``lit_ssl.distributed.gather``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_ssl.distributed import gather, rank
from lit_ssl.losses.base import (
    BARLOW_BN_EPS,
    Convention,
    _check_convention,
    _check_pair,
    float32_loss,
)

__all__ = [
    "barlow_twins",
    "byol",
    "info_nce",
    "negative_cosine",
    "vicreg",
    "vicreg_terms",
    "vicreg_weighted",
]


@float32_loss
def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's NT-Xent loss over both directions (Chen et al. 2020, Eq. 1).

    Paper: https://arxiv.org/abs/2002.05709

    For 2N embeddings (the N pairs of this batch, gathered over all ranks), each anchor's
    positive is its pair and its negatives are the other 2N - 2 embeddings; the loss is the
    mean over all 2N anchors of ``-log softmax(cos / temperature)`` at the positive.

    Args:
        z1: embeddings of the first views, ``(B, D)``.
        z2: embeddings of the second views, ``(B, D)``.
        temperature: softmax temperature.

    Example:
        >>> z = torch.eye(4)  # four orthogonal pairs of identical views
        >>> info_nce(z, z, temperature=1.0)  # positive cos 1, six negatives cos 0
        tensor(1.1654)
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


@float32_loss
def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean negative cosine similarity ``-cos(p_i, z_i)`` (SimSiam's D, Chen & He 2021, Eq. 1).

    Paper: https://arxiv.org/abs/2011.10566

    No stop-gradient is applied here: pass ``z.detach()`` (or a teacher output) as target.

    Args:
        p: predictions, ``(B, D)``.
        z: targets, ``(B, D)``.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> negative_cosine(p, torch.tensor([[3.0, 0.0], [1.0, 0.0]]))  # -(1 + 0) / 2
        tensor(-0.5000)
    """
    _check_pair(p, z)
    return -F.cosine_similarity(p, z, dim=1).mean()


@float32_loss
def byol(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's loss of one direction: ``mean_i ||p_i/|p_i| - z_i/|z_i| ||^2 = 2 - 2 cos``.

    Grill et al. 2020, Eq. 2: https://arxiv.org/abs/2006.07733. The symmetric BYOL loss is
    ``byol(p1, z2) + byol(p2, z1)`` with ``z`` from the EMA teacher (no gradient).

    Args:
        p: online predictions, ``(B, D)``.
        z: teacher projections, ``(B, D)``.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> byol(p, torch.tensor([[3.0, 0.0], [1.0, 0.0]]))  # 2 - 2 * (1 + 0) / 2
        tensor(1.)
    """
    return 2.0 + 2.0 * negative_cosine(p, z)


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


@float32_loss
def vicreg_terms(z1: Tensor, z2: Tensor, convention: Convention = "paper") -> dict[str, Tensor]:
    """Unweighted VICReg terms: invariance, variance and covariance (both branches summed).

    Bardes et al. 2022, Algorithm 1: https://arxiv.org/abs/2105.04906. ``vicreg`` is
    ``vicreg_weighted(vicreg_terms(z1, z2), ...)``.

    Args:
        z1: embeddings of the first views, ``(B, D)``.
        z2: embeddings of the second views, ``(B, D)``.
        convention: ``"paper"`` (Algorithm 1) or ``"released"`` (the authors' code: the
            variance term halved, ``(v(z1) + v(z2)) / 2``); see :data:`Convention`.

    Returns:
        ``{"invariance": mse(z1, z2), "variance": v(z1) + v(z2), "covariance": c(z1) +
        c(z2)}`` (``"released"``: the variance halved).

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
        >>> {k: round(v.item(), 4) for k, v in vicreg_terms(z, z).items()}
        {'invariance': 0.0, 'variance': 0.99, 'covariance': 0.0}
    """
    _check_pair(z1, z2)
    _check_convention(convention)
    v1, c1 = _variance_covariance(z1)
    v2, c2 = _variance_covariance(z2)
    variance = (v1 + v2) / 2 if convention == "released" else v1 + v2
    return {"invariance": F.mse_loss(z1, z2), "variance": variance, "covariance": c1 + c2}


def vicreg_weighted(
    terms: dict[str, Tensor],
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> Tensor:
    """VICReg's weighted sum of the ``vicreg_terms`` (lambda, mu, nu of Bardes et al. 2022).

    Example:
        >>> terms = {k: torch.tensor(1.0) for k in ("invariance", "variance", "covariance")}
        >>> vicreg_weighted(terms)
        tensor(51.)
    """
    return (
        sim_weight * terms["invariance"]
        + var_weight * terms["variance"]
        + cov_weight * terms["covariance"]
    )


def vicreg(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    convention: Convention = "paper",
) -> Tensor:
    """VICReg loss as in Bardes et al. 2022, Algorithm 1.

    Paper: https://arxiv.org/abs/2105.04906

    ``sim_weight * mse(z1, z2) + var_weight * (v(z1) + v(z2)) + cov_weight * (c(z1) + c(z2))``
    with ``mse`` averaged over batch and dimensions, ``v(Z) = mean_j relu(1 - sqrt(Var(z_j)
    + 1e-4))`` and ``c(Z) = sum_{i != j} Cov(Z)_ij^2 / d`` (unbiased covariance).
    Variance and covariance use the batch gathered over all ranks.
    ``convention="released"``: the authors' code, whose variance term is half of this
    (:data:`Convention`; use it with hyperparameters copied from their repository).

    Args:
        z1: embeddings of the first views, ``(B, D)``.
        z2: embeddings of the second views, ``(B, D)``.
        sim_weight: invariance weight (lambda).
        var_weight: variance weight (mu).
        cov_weight: covariance weight (nu).
        convention: ``"paper"`` or ``"released"``.

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # second dimension collapsed
        >>> vicreg(z, z)  # 25 * 2 * mean(0, 1 - sqrt(0 + 1e-4))
        tensor(24.7500)
    """
    terms = vicreg_terms(z1, z2, convention=convention)
    return vicreg_weighted(terms, sim_weight, var_weight, cov_weight)


@float32_loss
def barlow_twins(
    z1: Tensor, z2: Tensor, lambd: float = 5e-3, convention: Convention = "paper"
) -> Tensor:
    """Barlow Twins loss (Zbontar et al. 2021, Eq. 1 and Algorithm 1).

    Paper: https://arxiv.org/abs/2103.03230

    Each dimension is standardised over the batch (global over ranks, unbiased std as in
    the paper's pseudo-code), ``C = z1n' z2n / N`` and the loss is
    ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``. ``convention="released"``
    standardises as the authors' code does (``BatchNorm1d(affine=False)``: biased variance
    plus 1e-5), see :data:`Convention`.

    Args:
        z1: embeddings of the first views, ``(B, D)``.
        z2: embeddings of the second views, ``(B, D)``.
        lambd: weight of the off-diagonal (redundancy reduction) term.
        convention: ``"paper"`` or ``"released"``.

    Example:
        >>> z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # two identical dimensions
        >>> barlow_twins(z, z, lambd=1.0).round(decimals=4)  # C = 1/2 everywhere: 2/4 + 2/4
        tensor(1.)
    """
    _check_pair(z1, z2)
    _check_convention(convention)
    g1, g2 = gather(z1), gather(z2)
    n = g1.shape[0]
    if n < 2:
        raise ValueError("Barlow Twins needs at least 2 samples in the (global) batch.")
    z1n, z2n = _standardise(g1, convention), _standardise(g2, convention)
    c_diagonal = (z1n * z2n).sum(dim=0) / n  # diagonal of C = z1n' z2n / N
    on_diag = (1.0 - c_diagonal).pow(2).sum()
    return on_diag + lambd * _off_diagonal_sq_sum(z1n, z2n) / n**2


def _standardise(z: Tensor, convention: Convention) -> Tensor:
    """Each dimension to zero mean, unit std over the batch (Barlow Twins' two spellings)."""
    centred = z - z.mean(dim=0)
    if convention == "released":  # BatchNorm1d(affine=False) in training mode
        return centred / (z.var(dim=0, unbiased=False) + BARLOW_BN_EPS).sqrt()
    return centred / z.std(dim=0)
