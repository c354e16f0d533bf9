"""Autograd-aware gathering across DDP ranks (no-ops on a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["gather", "gather_rows", "rank", "world_size"]


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
    return torch.cat(_AllGather.apply(x), dim=0)


@torch.no_grad()
def gather_rows(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``(N_rank, ...)`` from all ranks along dim 0, without gradients;
    ranks may hold different numbers of rows (e.g. an anomaly detector's memory bank)."""
    if world_size() == 1:
        return x
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([x.shape[0]], device=x.device))
    most = int(max(c.item() for c in counts))  # once per bank, not in a training step
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts, strict=True)])


class _AllGather(torch.autograd.Function):
    """``all_gather`` whose backward sums the gradients of all ranks and keeps this rank's.

    Written on the public ``torch.distributed`` API (the autograd collectives in
    ``torch.distributed.nn`` are deprecated in favour of private functional ones).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:
        gathered = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, x.contiguous())
        return tuple(gathered)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return stacked[dist.get_rank()]
