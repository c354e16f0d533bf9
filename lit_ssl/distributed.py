"""Autograd-aware gathering across DDP ranks (no-ops on a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_gather as _differentiable_all_gather

__all__ = ["gather", "rank", "world_size"]


def world_size() -> int:
    """Number of processes in the default group, 1 when not distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group, 0 when not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, with gradients flowing back.

    The backward pass sums the incoming gradients over ranks (reduce-scatter), so with a
    loss that every rank computes on the gathered batch and DDP's gradient averaging, the
    parameter gradients equal those of one process on the concatenated batch. Every rank
    must pass the same shape (``drop_last=True`` on the sampler).
    """
    if world_size() == 1:
        return x
    return torch.cat(_differentiable_all_gather(x), dim=0)
