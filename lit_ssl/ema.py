"""EMA teacher: a frozen copy of student modules updated by exponential moving average."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["EMATeacher", "cosine_momentum"]


def cosine_momentum(progress: float, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * progress) + 1) / 2``.

    Args:
        progress: fraction of optimizer steps done, clipped to [0, 1].
        base: momentum at the start.
        final: momentum at the end.
    """
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class EMATeacher(nn.Module):
    """Frozen deep copy of a student module, updated in place with ``update``.

    Being an ``nn.Module`` attribute of its head, the teacher is saved in checkpoints.

    Args:
        student: the module to copy (e.g. ``nn.Sequential(backbone, projector)``).
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student``; buffers are copied."""
        teacher_params = list(self.module.parameters())
        student_params = [p.detach() for p in student.parameters()]
        if len(teacher_params) != len(student_params):
            raise RuntimeError("EMA teacher and student have different parameter lists.")
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        for t_buf, s_buf in zip(self.module.buffers(), student.buffers(), strict=True):
            t_buf.copy_(s_buf)

    def forward(self, *args, **kwargs):
        """Run the teacher without gradients."""
        with torch.no_grad():
            return self.module(*args, **kwargs)
