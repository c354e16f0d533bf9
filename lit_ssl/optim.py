"""Optimizer helpers: parameter groups without weight decay on norms/biases, LARS, schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["LARS", "decay_groups", "warmup_cosine"]


def decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float, no_decay: set[str]
) -> list[dict]:
    """Split trainable parameters into decayed and non-decayed groups.

    Biases, norm weights (any parameter with ``ndim <= 1``) and names in ``no_decay``
    (e.g. timm's ``no_weight_decay()``: position embeddings, class tokens) get no decay.
    """
    decay, plain = [], []
    for name, param in named_params:
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or any(name.endswith(n) for n in no_decay)
        (plain if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]


def warmup_cosine(step: int, total: int, warmup: int, final_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then cosine to ``final_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as used by SimCLR/BYOL/VICReg: SGD with momentum and a
    layer-wise trust ratio ``eta * ||w|| / ||g + wd * w||``.

    Groups with ``lars_exclude=True`` (biases and norms) use plain SGD with momentum.

    Args:
        params: parameters or groups.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: decoupled into the update before the trust ratio, as in the papers.
        eta: trust coefficient.
    """

    def __init__(
        self,
        params,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.02,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"LARS lr must be > 0, got {lr}.")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta)
        defaults["lars_exclude"] = False
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One LARS step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["lars_exclude"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0),
                        group["eta"] * p_norm / g_norm,
                        torch.ones_like(p_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
