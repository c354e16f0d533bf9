"""Two-view loader throughput of FactoryDataModule (source images per second).

Runs the ``surface`` policy with two views at 128 and 224 px, with 0, 1 and 2 DataLoader
workers, over a synthetic factory dataset of 256-px RGB PNGs (or ``--root``), decoding from disk
every epoch (no in-memory cache unless ``--cache``). One untimed warm-up epoch starts the
(persistent) workers; the next epoch is timed. Writes a markdown table.

Usage:
    python benchmarks/loader_throughput.py --out docs/loader_throughput.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations  # noqa: E402
import torch  # noqa: E402

from lit_ssl.data import FactoryDataModule, write_synthetic_dataset  # noqa: E402


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="image folder (default: a generated synthetic set)")
    parser.add_argument("--images", type=int, default=320, help="synthetic images to generate")
    parser.add_argument("--source-size", type=int, default=256, help="synthetic image side")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", action="store_true", help="keep decoded images in memory")
    parser.add_argument("--out", default="docs/loader_throughput.md")
    return parser.parse_args()


def _dataset(args: argparse.Namespace, scratch: Path) -> Path:
    if args.root:
        return Path(args.root)
    return write_synthetic_dataset(
        scratch / "data",
        image_size=args.source_size,
        n_train=args.images,
        n_test_good=0,
        n_per_defect=0,
        nuisance=0.5,
    )


def _epoch(loader: torch.utils.data.DataLoader) -> int:
    count = 0
    for views, _ in loader:
        assert len(views) == 2
        count += views[0].shape[0]
    return count


def measure(root: Path, size: int, workers: int, args: argparse.Namespace) -> float:
    """Images per second (each image yields two views) over one timed epoch."""
    dm = FactoryDataModule(
        root=str(root),
        image_size=size,
        batch_size=args.batch_size,
        num_workers=workers,
        val_fraction=0.0,
        test_fraction=0.0,
        cache_images=args.cache,
        pin_memory=False,
    )
    dm.setup("fit")
    dm.configure_views(2)
    loader = dm.train_dataloader()
    _epoch(loader)  # warm-up: worker start, page cache
    start = time.perf_counter()
    count = _epoch(loader)
    return count / (time.perf_counter() - start)


def _markdown(results: dict[tuple[int, int], float], args: argparse.Namespace) -> str:
    command = "python " + " ".join(sys.argv)
    source = args.root or f"{args.images} synthetic {args.source_size}-px RGB PNGs"
    lines = [
        "# Loader throughput",
        "",
        "Two-view `surface` policy, `FactoryDataModule(task='ssl')`, images/s (source images;",
        f"each yields two views), batch size {args.batch_size}, {source}, "
        f"{'in-memory cache' if args.cache else 'decoded from disk every epoch'}.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"albumentations {albumentations.__version__}; load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run (other jobs share the cores when it "
        "exceeds the core count, so treat the numbers as lower bounds).",
        "",
        "| image size | " + " | ".join(f"{w} workers" for w in args.workers) + " |",
        "|---|" + "---|" * len(args.workers),
    ]
    for size in args.sizes:
        row = " | ".join(f"{results[size, w]:.0f}" for w in args.workers)
        lines.append(f"| {size} px | {row} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every configuration and write the table."""
    args = _parse()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        root = _dataset(args, Path(scratch))
        results = {}
        for size in args.sizes:
            for workers in args.workers:
                results[size, workers] = measure(root, size, workers, args)
                print(f"{size} px, {workers} workers: {results[size, workers]:.0f} images/s")
    table = _markdown(results, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
