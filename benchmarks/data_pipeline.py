"""Benchmark 4: does the two-view data pipeline keep up with the training step?

For each image size (64 and 128 px) and DataLoader worker count (0, 1, 2):

* loader only: two-view ``surface`` policy throughput of ``FactoryDataModule``
  (``benchmarks/loader_throughput.measure``: one untimed epoch, one timed epoch);
* compute only: the ``SSLModule`` training step on pre-made in-memory batches of the same
  shape (``Trainer.fit`` on a list of tensors);
* real training: ``Trainer.fit(SSLModule, datamodule=FactoryDataModule)`` with a callback
  timestamping ``on_train_batch_start`` / ``on_train_batch_end``: the time between the end
  of one batch and the start of the next is the data wait (the loader's ``next()`` plus
  Lightning's short bookkeeping, whose floor the in-memory run shows), the rest is compute.

Reported: data wait as a fraction of the step time (sum of waits / sum of step times over
the timed steps, so that bursty waits count in full), images/s of each. Writes the "Data
pipeline" section of docs/benchmarks.md and docs/img/data_pipeline.png.

    python benchmarks/data_pipeline.py --quick    # about 2 minutes
    python benchmarks/data_pipeline.py            # about 6 minutes
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import lightning as L  # noqa: E402
import loader_throughput  # noqa: E402
from docs_section import write_section  # noqa: E402
from speed import CycleBatches, machine_note  # noqa: E402

from lit_ssl import SSLModule  # noqa: E402
from lit_ssl.data import FactoryDataModule  # noqa: E402
from lit_ssl.heads import VICReg  # noqa: E402

SECTION = "## Data pipeline"
Split = tuple[list[float], list[float]]  # per-step (data waits, computes) in seconds


@dataclass
class Row:
    """One (image size, workers) configuration."""

    size: int
    workers: int | None  # None: pre-made in-memory batches (compute only)
    loader_ips: float  # loader-only images/s (nan for in-memory)
    train_ips: float  # training images/s over the timed steps
    wait_fraction: float  # sum(data wait) / sum(step time)
    wait_ms: float  # median data wait per step
    compute_ms: float  # median compute per step


class _BatchClock(L.Callback):
    """Wall-clock stamps of every batch start and end."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self.ends.append(time.perf_counter())


def _trainer(steps: int, clock: _BatchClock) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[clock],
    )


def _split(clock: _BatchClock, warmup: int) -> Split:
    """Per-step (wait, compute) seconds after ``warmup`` steps; wait = end[i-1] -> start[i]."""
    waits, computes = [], []
    for i in range(max(1, warmup), len(clock.ends)):
        waits.append(clock.starts[i] - clock.ends[i - 1])
        computes.append(clock.ends[i] - clock.starts[i])
    return waits, computes


def _module(args: argparse.Namespace) -> SSLModule:
    torch.manual_seed(0)
    return SSLModule(args.backbone, head=VICReg())


def _datamodule(root: Path, size: int, workers: int, args: argparse.Namespace) -> FactoryDataModule:
    return FactoryDataModule(
        root=str(root),
        image_size=size,
        batch_size=args.batch_size,
        num_workers=workers,
        val_fraction=0.0,
        test_fraction=0.0,
        cache_images=args.cache,
        pin_memory=False,
    )


def train_with_loader(root: Path, size: int, workers: int, args: argparse.Namespace) -> Split:
    """Real ``fit`` on FactoryDataModule; returns (waits, computes) of the timed steps."""
    clock = _BatchClock()
    dm = _datamodule(root, size, workers, args)
    _trainer(args.warmup + args.steps, clock).fit(_module(args), datamodule=dm)
    return _split(clock, args.warmup)


def train_in_memory(size: int, args: argparse.Namespace) -> Split:
    """The same fit on pre-made tensors: compute only (and Lightning's wait floor)."""
    shape = (args.batch_size, 3, size, size)
    batches = [
        ([torch.rand(shape), torch.rand(shape)], torch.full((args.batch_size,), -1))
        for _ in range(2)
    ]
    total = args.warmup + args.steps
    clock = _BatchClock()
    _trainer(total, clock).fit(_module(args), train_dataloaders=CycleBatches(batches, total))
    return _split(clock, args.warmup)


def _row(size: int, workers: int | None, loader_ips: float, split: Split, bs: int) -> Row:
    waits, computes = split
    total = sum(waits) + sum(computes)
    return Row(
        size=size,
        workers=workers,
        loader_ips=loader_ips,
        train_ips=bs * len(waits) / total,
        wait_fraction=sum(waits) / total,
        wait_ms=1000 * statistics.median(waits),
        compute_ms=1000 * statistics.median(computes),
    )


def measure(root: Path, args: argparse.Namespace) -> list[Row]:
    """Every configuration, in-memory first at each size."""
    rows = []
    loader_args = argparse.Namespace(batch_size=args.batch_size, cache=args.cache)
    for size in args.sizes:
        rows.append(_row(size, None, float("nan"), train_in_memory(size, args), args.batch_size))
        print(_fmt(rows[-1]), flush=True)
        for workers in args.workers:
            loader_ips = loader_throughput.measure(root, size, workers, loader_args)
            split = train_with_loader(root, size, workers, args)
            rows.append(_row(size, workers, loader_ips, split, args.batch_size))
            print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(r: Row) -> str:
    src = "in-memory" if r.workers is None else f"{r.workers} workers"
    return (
        f"{r.size:>4} px {src:<10} loader {r.loader_ips:7.1f} img/s | train {r.train_ips:6.1f} "
        f"img/s, data wait {100 * r.wait_fraction:5.1f}% (median wait {r.wait_ms:.1f} ms, "
        f"compute {r.compute_ms:.0f} ms)"
    )


def table(rows: list[Row]) -> str:
    """Markdown table of every configuration."""
    lines = [
        "| image size | data | loader-only img/s | training img/s | data wait / step time "
        "| median wait ms | median compute ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        src = "in-memory tensors" if r.workers is None else f"{r.workers} workers"
        loader = "—" if r.workers is None else f"{r.loader_ips:.0f}"
        lines.append(
            f"| {r.size} px | {src} | {loader} | {r.train_ips:.1f} | {100 * r.wait_fraction:.1f}% "
            f"| {r.wait_ms:.1f} | {r.compute_ms:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    """Stacked bars per configuration: mean compute and data wait per step (ms)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    labels, computes, waits = [], [], []
    for r in rows:
        src = "mem" if r.workers is None else f"{r.workers}w"
        labels.append(f"{r.size}px\n{src}")
        per_image_ms = 1000.0 / r.train_ips
        computes.append(per_image_ms * (1 - r.wait_fraction))
        waits.append(per_image_ms * r.wait_fraction)
    xs = range(len(rows))
    ax.bar(xs, computes, label="compute (training step)", color="#1f77b4")
    ax.bar(xs, waits, bottom=computes, label="data wait", color="#d62728")
    for x, r, c, w in zip(xs, rows, computes, waits, strict=True):
        ax.text(x, c + w, f"{100 * r.wait_fraction:.0f}%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("ms per training image (mean)")
    ax.set_title(
        "Data wait vs compute per training step (label: wait fraction)\n"
        "mem = pre-made in-memory batches, Nw = FactoryDataModule with N workers",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def verdict(rows: list[Row]) -> str:
    """One sentence summarising the measured wait fractions."""
    loaded = [r for r in rows if r.workers is not None]
    inline = [r for r in loaded if r.workers == 0]
    pooled = [r for r in loaded if r.workers]
    parts = []
    if inline:
        worst = max(inline, key=lambda r: r.wait_fraction)
        parts.append(
            f"with 0 workers the data wait is at most {100 * worst.wait_fraction:.1f}% of the "
            f"step ({worst.size} px)"
        )
    if pooled:
        worst = max(pooled, key=lambda r: r.wait_fraction)
        parts.append(
            f"with 1-2 workers at most {100 * worst.wait_fraction:.1f}% ({worst.size} px, "
            f"{worst.workers} workers)"
        )
    floor = max((r.wait_fraction for r in rows if r.workers is None), default=float("nan"))
    return (
        "Result: " + "; ".join(parts) + f", against a floor of {100 * floor:.1f}% with "
        "in-memory tensors. "
        + (
            "The loader keeps up: the training step, not the augmentation, sets the pace."
            if pooled and max(r.wait_fraction for r in pooled) < 0.05
            else "The loader does not fully keep up in some configurations (see the table)."
        )
    )


def section_text(
    tab: str, args: argparse.Namespace, source: str, cmd: str, elapsed: float, rows: list[Row]
) -> str:
    """The markdown section for docs/benchmarks.md."""
    img = Path("img") / args.img.name
    cache = {None: "automatic in-memory cache", True: "in-memory cache", False: "no cache"}
    return f"""{SECTION}

Does the two-view `surface` policy keep up with training? `FactoryDataModule(task="ssl")`
({cache[args.cache]}) on {source}, batch {args.batch_size}, feeding
`SSLModule("{args.backbone}", head=VICReg())` under `lightning.Trainer` on the CPU (torch
threads {torch.get_num_threads()} in the training process, one per worker). A callback
timestamps `on_train_batch_start`/`on_train_batch_end`: the gap between the end of one
batch and the start of the next is the data wait (the loader's `next()`, which with
workers only waits for batches not ready yet, plus Lightning's bookkeeping: the
"in-memory tensors" rows show that floor), the rest is compute. The first
{args.warmup} steps (worker start-up) are excluded, then {args.steps} steps are timed.
Loader-only throughput comes from `benchmarks/loader_throughput.py`'s `measure` (one
timed epoch after a warm-up epoch, no model).

* Command: `{cmd}` ({elapsed / 60:.1f} min)
* Machine: {machine_note()}.

![data pipeline]({img})

{tab}

{verdict(rows)}

How to read it: "data wait / step time" is the total wait over the total step time of the
timed steps (waits are bursty with workers, so a median would hide them). When the
loader-only rate is well above the training rate, workers hide the augmentation behind
the step and the wait falls to the in-memory floor; with 0 workers the augmentation runs
in the training process and adds its full cost to every step. On this 2-core machine
(shared with other jobs, so numbers vary run to run: compare the compute column, which
moves with the machine's load, not with the loader) workers also compete with the
training step for the same cores, so extra workers cannot make the sum of both faster
than the cores allow: on a GPU machine the step leaves the CPU to the workers, and the
step is much shorter, so there compare the loader-only rate with the GPU's images/s.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick``: 64 px only, fewer steps)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="64 px only, 8 timed steps")
    p.add_argument("--root", type=Path, help="image folder (default: written synthetic set)")
    p.add_argument("--images", type=int, default=256, help="synthetic images to write")
    p.add_argument("--source-size", type=int, default=256, help="synthetic image side")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="default 64 128")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (worker start-up)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 12, quick 8)")
    p.add_argument("--cache", default=None, choices=[None, "yes", "no"], help="default: auto")
    p.add_argument("--img", type=Path, default=ROOT / "docs/img/data_pipeline.png")
    p.add_argument("--md", type=Path, default=ROOT / "docs/benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ([64] if args.quick else [64, 128])
    args.steps = args.steps or (8 if args.quick else 12)
    args.cache = {None: None, "yes": True, "no": False}[args.cache]
    return args


def main(argv: list[str] | None = None) -> None:
    """Write a synthetic dataset (unless ``--root``), measure, write table and chart."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*(does not have many workers|LeafSpec).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        ns = argparse.Namespace(root=args.root, images=args.images, source_size=args.source_size)
        root = loader_throughput._dataset(ns, Path(scratch))
        rows = measure(root, args)
    elapsed = time.perf_counter() - t0
    source = (
        f"`{args.root}`"
        if args.root
        else f"{args.images} synthetic {args.source_size}-px RGB PNGs (`write_synthetic_dataset`)"
    )
    tab = table(rows)
    print(tab)
    print(f"done in {elapsed / 60:.1f} min")
    if args.no_write:
        return
    plot(rows, args.img)
    cmd = "python benchmarks/data_pipeline.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_section(args.md, section_text(tab, args, source, cmd.strip(), elapsed, rows), SECTION)
    print(f"wrote {args.img} and the '{SECTION}' section of {args.md}")


if __name__ == "__main__":
    main()
