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
pipeline" section of docs/benchmarks.md (prose: benchmarks/templates/data_pipeline.md), its
numbers (docs/data_pipeline.json) and docs/img/data_pipeline.png.

    python benchmarks/data_pipeline.py --quick    # about 2 minutes
    python benchmarks/data_pipeline.py            # about 6 minutes
    python benchmarks/data_pipeline.py --report-only   # re-render from the JSON
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import lightning as L
import loader_throughput
import matplotlib.pyplot as plt
import torch

from lit_ssl import SSLModule
from lit_ssl.heads import VICReg

Split = tuple[list[float], list[float]]  # per-step (data waits, computes) in seconds


@dataclass
class Row:
    """One (image size, workers) configuration."""

    size: int
    workers: int | None  # None: pre-made in-memory batches (compute only)
    loader_ips: float | None  # loader-only images/s (None for in-memory)
    train_ips: float  # training images/s over the timed steps
    wait_fraction: float  # sum(data wait) / sum(step time)
    wait_ms: float  # median data wait per step
    compute_ms: float  # median compute per step


def _trainer(steps: int, clock: common.BatchClock) -> L.Trainer:
    return common.cpu_trainer([clock], max_steps=steps, limit_val_batches=0)


def _split(clock: common.BatchClock, warmup: int) -> Split:
    """Per-step (wait, compute) seconds after ``warmup`` steps; wait = end[i-1] -> start[i]."""
    waits, computes = [], []
    for i in range(max(1, warmup), len(clock.ends)):
        waits.append(clock.starts[i][0] - clock.ends[i - 1][0])
        computes.append(clock.ends[i][0] - clock.starts[i][0])
    return waits, computes


def _module(args: argparse.Namespace) -> SSLModule:
    common.seed(0)
    return SSLModule(args.backbone, head=VICReg())


def train_with_loader(root: Path, size: int, workers: int, args: argparse.Namespace) -> Split:
    """Real ``fit`` on FactoryDataModule; returns (waits, computes) of the timed steps."""
    clock = common.BatchClock()
    dm = common.factory_datamodule(root, size, args.batch_size, workers, args.cache)
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
    clock = common.BatchClock()
    _trainer(total, clock).fit(_module(args), train_dataloaders=common.CycleBatches(batches, total))
    return _split(clock, args.warmup)


def _row(size: int, workers: int | None, loader_ips: float | None, split: Split, bs: int) -> Row:
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
    for size in args.sizes:
        rows.append(_row(size, None, None, train_in_memory(size, args), args.batch_size))
        print(_fmt(rows[-1]), flush=True)
        for workers in args.workers:
            loader_ips = loader_throughput.measure(root, size, workers, args.batch_size, args.cache)
            split = train_with_loader(root, size, workers, args)
            rows.append(_row(size, workers, loader_ips, split, args.batch_size))
            print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(r: Row) -> str:
    src = "in-memory" if r.workers is None else f"{r.workers} workers"
    loader = "      —" if r.loader_ips is None else f"{r.loader_ips:7.1f}"
    return (
        f"{r.size:>4} px {src:<10} loader {loader} img/s | train {r.train_ips:6.1f} "
        f"img/s, data wait {100 * r.wait_fraction:5.1f}% (median wait {r.wait_ms:.1f} ms, "
        f"compute {r.compute_ms:.0f} ms)"
    )


def table(rows: list[Row]) -> str:
    """Markdown table of every configuration."""
    header = [
        "image size", "data", "loader-only img/s", "training img/s", "data wait / step time",
        "median wait ms", "median compute ms",
    ]  # fmt: skip
    cells = [
        [
            f"{r.size} px",
            "in-memory tensors" if r.workers is None else f"{r.workers} workers",
            "—" if r.workers is None else f"{r.loader_ips:.0f}",
            f"{r.train_ips:.1f}",
            f"{100 * r.wait_fraction:.1f}%",
            f"{r.wait_ms:.1f}",
            f"{r.compute_ms:.0f}",
        ]
        for r in rows
    ]
    return common.markdown_table(header, ["---:", "---", *["---:"] * 5], cells)


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
    common.save_figure(fig, path)


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


def section_text(results: dict, rows: list[Row]) -> str:
    """The markdown section for docs/benchmarks.md, from the stored numbers."""
    cache = {None: "automatic in-memory cache", True: "in-memory cache", False: "no cache"}
    return common.render(
        "data_pipeline",
        results,
        cache=cache[results["cache"]],
        minutes=f"{results['elapsed_s'] / 60:.1f}",
        table=table(rows),
        verdict=verdict(rows),
    )


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
    common.add_output_options(p, "data_pipeline")
    args = common.parse_output_options(p, argv, "data_pipeline")
    args.sizes = args.sizes or ([64] if args.quick else [64, 128])
    args.steps = args.steps or (8 if args.quick else 12)
    args.cache = {None: None, "yes": True, "no": False}[args.cache]
    return args


def measure_all(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Write a synthetic dataset (unless ``--root``) and measure: the section's numbers."""
    torch.set_num_threads(args.threads)
    common.quiet()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = common.synthetic_root(args.root, args.images, args.source_size, Path(scratch))
        rows = measure(root, args)
    synthetic = (
        f"{args.images} synthetic {args.source_size}-px RGB PNGs (`write_synthetic_dataset`)"
    )
    return {
        "command": common.command("data_pipeline", argv),
        "elapsed_s": time.perf_counter() - t0,
        "source": f"`{args.root}`" if args.root else synthetic,
        "cache": args.cache,
        "batch_size": args.batch_size,
        "backbone": args.backbone,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "machine": common.machine_note(),
        "img": str(Path("img") / args.img.name),
        "rows": [asdict(r) for r in rows],
    }


def main(argv: list[str] | None = None) -> None:
    """Measure (unless ``--report-only``), write the table, chart and numbers."""
    args = parse_args(argv)
    results = common.load_json(args.json) if args.report_only else measure_all(args, argv)
    rows = [Row(**r) for r in results["rows"]]
    print(table(rows))
    print(f"done in {results['elapsed_s'] / 60:.1f} min")
    common.publish(args, results, lambda: section_text(results, rows), lambda: plot(rows, args.img))


if __name__ == "__main__":
    main()
