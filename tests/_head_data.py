"""Fixed batches for head tests: texture-like gratings and the views a datamodule would give."""

from __future__ import annotations

import math

import torch

from lit_ssl.heads import SSLHead

SIZE = 32
BATCH = 8


def gratings(batch: int, chans: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Oriented sine gratings (a texture-like fixed batch) in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(batch, 1, 1, 1, generator=g) * math.pi
    freq = 1.0 / (6 + 10 * torch.rand(batch, 1, 1, 1, generator=g))
    phase = torch.rand(batch, chans, 1, 1, generator=g) * 2 * math.pi
    ys, xs = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    return 0.5 + 0.4 * torch.sin(2 * math.pi * freq * (xs * theta.cos() + ys * theta.sin()) + phase)


def make_views(head: SSLHead, x: torch.Tensor) -> list[torch.Tensor]:
    """What the datamodule provides: ``num_views`` augmented views (+ the clean view last)."""
    views = [(x * (0.8 + 0.1 * i) + 0.05 * i).clamp(0, 1) for i in range(head.num_views)]
    return views + ([x] if head.clean_view else [])
