"""Two real gloo processes for DDP tests: joining the process group from a spawned worker."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist


def join_gloo(rank: int, store: str, world_size: int = 2) -> None:
    """Join a gloo group through the file ``store``, one intra-op thread per process."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
