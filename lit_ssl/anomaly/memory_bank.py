"""A memory bank of good patch features: greedy coreset selection and nearest-neighbour scores.

PatchCore (Roth et al. 2022, https://arxiv.org/abs/2106.08265) keeps a subset of the good
images' patch features chosen by greedy k-center selection (each new point is the one farthest
from those already kept), so the bank covers the good feature space with a fraction of the
points; a test patch's anomaly score is its distance to the nearest kept feature.

Both run on the device in blocks of rows (matrix products, no Python loop over patches); the
greedy selection is one loop over the points it keeps, each step a vector update, as in the
paper (it projects features to ``projection_dim`` first to make the distances cheap).

Long runs (a bank of millions of patches from large images): the selection shows a progress
bar on stderr once it has run for ``PROGRESS_DELAY`` seconds, and both loops stop
cooperatively: they call ``should_stop`` (a cheap host-side callable, e.g. "was SIGTERM
received") every ``STOP_CHECK_EVERY`` steps / every bank block and raise
:class:`StopRequested`, so the caller keeps nothing half-built.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["StopRequested", "greedy_coreset", "nearest_distances"]

STOP_CHECK_EVERY = 64  # coreset steps between two calls of should_stop (and bar updates)
PROGRESS_DELAY = 2.0  # seconds before the coreset progress bar appears (none in short runs)


class StopRequested(Exception):
    """Raised by the bank loops when their ``should_stop`` callable returned True."""


def _stop_check(should_stop: Callable[[], bool] | None, where: str) -> None:
    if should_stop is not None and should_stop():
        raise StopRequested(f"{where} stopped on request")


def greedy_coreset(
    features: Tensor,
    fraction: float,
    projection_dim: int | None = 128,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
) -> Tensor:
    """Indices of a greedy k-center coreset of ``features`` ``(N, D)``.

    Args:
        features: the good patch features, one row each.
        fraction: share of the rows to keep, in ``(0, 1]`` (at least one row is kept).
        projection_dim: distances are computed on a random Gaussian projection to this many
            dimensions (Johnson-Lindenstrauss, as PatchCore does); ``None``: on the features.
        seed: seed of the projection and of the first point.
        should_stop: called every ``STOP_CHECK_EVERY`` steps (host-side: no device sync);
            when it returns True the selection raises :class:`StopRequested`.
        progress: show a progress bar on stderr when the selection runs longer than
            ``PROGRESS_DELAY`` seconds.

    Returns:
        ``(k,)`` int64 indices into ``features``, in selection order.

    Raises:
        StopRequested: ``should_stop`` returned True (nothing is returned).

    Example:
        >>> points = torch.tensor([[0.0], [0.1], [5.0], [10.0]])
        >>> greedy_coreset(points, 0.75, projection_dim=None).tolist()
        [0, 3, 2]
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"coreset fraction must be in (0, 1], got {fraction}.")
    n = features.shape[0]
    k = max(1, round(fraction * n))
    if k >= n:
        return torch.arange(n, device=features.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    points = features.float()
    if projection_dim is not None and projection_dim < points.shape[1]:
        projection = torch.randn(points.shape[1], projection_dim, generator=generator)
        points = points @ projection.to(points.device)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = torch.empty(k, dtype=torch.long, device=features.device)
    chosen[0] = first
    norms = points.square().sum(1)  # ||p - c||^2 = ||p||^2 - 2 p.c + ||c||^2: one product a step
    columns = points.T.contiguous()  # (D, N): c @ columns is ~2.5x faster than points @ c on CPU

    def distances(index: Tensor) -> Tensor:
        return norms - 2.0 * (points[index] @ columns) + norms[index]

    nearest = distances(chosen[0])
    _stop_check(should_stop, "the coreset selection")
    bar = _progress_bar(k, progress)
    try:
        for i in range(1, k):  # one step per kept point, each a (N,) update on the device
            if i % STOP_CHECK_EVERY == 0:  # host-side bool and a counter: no device sync
                _stop_check(should_stop, "the coreset selection")
                if bar is not None:
                    bar.update(STOP_CHECK_EVERY)
            index = nearest.argmax()
            chosen[i] = index
            nearest = torch.minimum(nearest, distances(index))
        if bar is not None:
            bar.update(k - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return chosen


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr that only appears after ``PROGRESS_DELAY`` seconds (or None)."""
    if not enabled or total <= STOP_CHECK_EVERY:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=1,
        desc="anomaly: coreset of the memory bank",
        unit="pt",
        file=sys.stderr,
        delay=PROGRESS_DELAY,
        mininterval=1.0,
        dynamic_ncols=True,
    )


def nearest_distances(
    queries: Tensor,
    bank: Tensor,
    block: int = 4096,
    should_stop: Callable[[], bool] | None = None,
) -> Tensor:
    """Euclidean distance of each query row to its nearest bank row.

    Args:
        queries: ``(M, D)`` features to score.
        bank: ``(K, D)`` memory bank.
        block: bank rows per matrix product (bounds the ``(M, block)`` distance matrix).
        should_stop: called before each block (host-side); True raises :class:`StopRequested`.

    Returns:
        ``(M,)`` float32 distances.

    Example:
        >>> nearest_distances(torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, 0.0], [4.0, 3.0]]))
        tensor([3.])
    """
    queries = queries.float()
    best = torch.full((queries.shape[0],), float("inf"), device=queries.device)
    q2 = queries.square().sum(1, keepdim=True)
    for start in range(0, bank.shape[0], block):  # blocks of the bank, not of patches
        _stop_check(should_stop, "the nearest-neighbour scoring")
        rows = bank[start : start + block].float()
        d2 = q2 - 2.0 * queries @ rows.T + rows.square().sum(1)
        best = torch.minimum(best, d2.min(1).values)
    return best.clamp_min(0.0).sqrt()
