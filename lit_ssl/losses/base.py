"""What every lit_ssl loss shares: float32 computation, VICReg/Barlow conventions, checks."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Literal

import torch
from torch import Tensor

__all__ = ["BARLOW_BN_EPS", "CONVENTIONS", "NORM_PIX_EPS", "Convention", "float32_loss"]

NORM_PIX_EPS = 1e-6
BARLOW_BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default eps (the released Barlow Twins code)

Convention = Literal["paper", "released"]
"""Which formula of VICReg / Barlow Twins to compute (the default numbers are ``"paper"``).

``"paper"``: the papers' Algorithm 1. ``"released"``: the authors' released training code,
where hyperparameters copied from their repositories were tuned:

* VICReg (https://arxiv.org/abs/2105.04906 Algorithm 1 vs ``VICReg.forward`` in
  https://github.com/facebookresearch/vicreg/blob/main/main_vicreg.py): the released code
  halves the variance term, ``std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 -
  std_y)) / 2``, where Algorithm 1 sums the two branches; so the same ``var_weight``
  (mu = 25) weighs the variance half as much there. Invariance and covariance are the same
  in both (the covariance divided by ``(N - 1)`` and its squared off-diagonal sum by the
  dimension ``D``; ``N`` the global batch, statistics over all GPUs).
* Barlow Twins (https://arxiv.org/abs/2103.03230 Algorithm 1 vs ``BarlowTwins.forward`` in
  https://github.com/facebookresearch/barlowtwins/blob/main/main.py): Algorithm 1
  standardises each dimension with ``z.std(0)`` (the unbiased std), the released code with
  ``BatchNorm1d(affine=False)`` in training mode (synchronised over GPUs), i.e. the biased
  variance plus ``eps = 1e-5``: ``(z - mean) / sqrt(var_biased + 1e-5)``. With
  ``C = z1n' z2n / N`` the diagonal of identical views is ``(N - 1) / N`` with the paper's
  standardisation and ``~1`` with the released one, so the paper's on-diagonal term keeps
  a floor of ``D / N^2`` (8 at N = 16, D = 2048). The released default ``lambd`` is 0.0051
  (the paper's 5e-3 here).
"""
CONVENTIONS: tuple[str, ...] = ("paper", "released")


def float32_loss(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorator: run the loss ``fn`` with autocast off and its tensor arguments in float32.

    Example:
        >>> @float32_loss
        ... def total(x):
        ...     return x.sum()
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     total(torch.ones(3, dtype=torch.bfloat16)).dtype
        torch.float32
    """

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


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
