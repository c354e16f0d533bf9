"""Real DDP path of the losses: 2 CPU processes (gloo) vs one process on the whole batch.

Each rank holds half of the batch, runs a small ``nn.Linear`` wrapped in
``DistributedDataParallel`` and computes the loss on its half (negatives / batch statistics
are gathered across ranks inside the loss). The mean of the per-rank losses must equal the
single-process loss on the concatenated batch, and the DDP-averaged gradients must equal
the single-process gradients.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _gloo import join_gloo
from torch import nn

from lit_ssl import losses

WORLD_SIZE = 2
BATCH = 8  # global batch; each rank holds BATCH // WORLD_SIZE
IN_DIM, OUT_DIM = 5, 4
LOSSES = {
    "info_nce": lambda z1, z2: losses.info_nce(z1, z2, temperature=0.3),
    "vicreg": losses.vicreg,
    "barlow_twins": losses.barlow_twins,
}


def _problem() -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    """Same data and initial weights in every process."""
    gen = torch.Generator().manual_seed(1234)
    x1 = torch.randn(BATCH, IN_DIM, generator=gen)
    x2 = x1 + 0.3 * torch.randn(BATCH, IN_DIM, generator=gen)
    torch.manual_seed(1234)
    return x1, x2, nn.Linear(IN_DIM, OUT_DIM)


def _loss_and_grads(model: nn.Module, fn, x1: torch.Tensor, x2: torch.Tensor, grads_of):
    # One forward per backward (DDP's contract): both views in one batch.
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = fn(z1, z2)
    loss.backward()
    return loss.detach(), {name: p.grad.detach().clone() for name, p in grads_of()}


def _worker(rank: int, store: str, out: str) -> None:
    join_gloo(rank, store, WORLD_SIZE)
    try:
        x1, x2, linear = _problem()
        model = nn.parallel.DistributedDataParallel(linear)
        half = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        results = {}
        for name, fn in LOSSES.items():
            model.zero_grad(set_to_none=True)
            loss, grads = _loss_and_grads(model, fn, x1[half], x2[half], linear.named_parameters)
            losses_all = [torch.zeros(()) for _ in range(WORLD_SIZE)]
            dist.all_gather(losses_all, loss)
            results[name] = {"losses": torch.stack(losses_all), "grads": grads}
            # DDP must have synchronised the gradients: every rank holds the same ones.
            for grad in grads.values():
                others = [torch.zeros_like(grad) for _ in range(WORLD_SIZE)]
                dist.all_gather(others, grad)
                results[name].setdefault("grad_spread", 0.0)
                results[name]["grad_spread"] = max(
                    results[name]["grad_spread"], (others[0] - others[1]).abs().max().item()
                )
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_ddp_losses_and_gradients_match_single_process(tmp_path: Path):
    out = tmp_path / "ddp_results.pt"
    # fork on Linux: the workers inherit the imported modules instead of re-importing
    # torch, lightning and timm (seconds per process); spawn elsewhere.
    mp.start_processes(
        _worker,
        args=(str(tmp_path / "store"), str(out)),
        nprocs=WORLD_SIZE,
        join=True,
        start_method="fork" if sys.platform == "linux" else "spawn",
    )
    results = torch.load(out, weights_only=True)

    assert set(results) == set(LOSSES)
    for name, fn in LOSSES.items():
        x1, x2, linear = _problem()
        loss, grads = _loss_and_grads(linear, fn, x1, x2, linear.named_parameters)
        got = results[name]
        # The per-rank losses differ (local anchors / local invariance term) but their
        # mean is the loss of the whole batch.
        torch.testing.assert_close(got["losses"].mean(), loss, atol=1e-5, rtol=1e-5, msg=name)
        assert got["grad_spread"] == 0.0, name
        assert set(got["grads"]) == set(grads)
        # Not a vacuous comparison (bias gradients are 0 for the translation-invariant
        # VICReg / Barlow Twins losses, weight gradients are not).
        assert grads["weight"].abs().max() > 1e-3, name
        for param, grad in grads.items():
            torch.testing.assert_close(
                got["grads"][param], grad, atol=1e-5, rtol=1e-5, msg=f"{name} {param}"
            )


def test_single_process_gather_is_identity():
    from lit_ssl.distributed import gather, rank, world_size

    x = torch.randn(3, 2)
    assert world_size() == 1 and rank() == 0
    assert gather(x) is x
