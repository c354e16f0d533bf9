"""Two-view loader throughput of FactoryDataModule (source images per second).

Runs the ``surface`` policy with two views at 128 and 224 px, with 0, 1 and 2 DataLoader
workers, over a synthetic factory dataset of 256-px RGB PNGs (or ``--root``), decoding from disk
every epoch (no in-memory cache unless ``--cache``). One untimed warm-up epoch starts the
(persistent) workers; the next epoch is timed. Writes a markdown page (prose:
benchmarks/templates/loader_throughput.md) and its numbers as JSON beside it.

Usage:
    python benchmarks/loader_throughput.py --out docs/loader_throughput.md
    python benchmarks/loader_throughput.py --images 32 --sizes 64 --workers 0 --out /tmp/lt.md
    python benchmarks/loader_throughput.py --report-only   # re-render from the JSON
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import albumentations
import torch


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="image folder (default: a generated synthetic set)")
    parser.add_argument("--images", type=int, default=320, help="synthetic images to generate")
    parser.add_argument("--source-size", type=int, default=256, help="synthetic image side")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache", action="store_true", help="keep decoded images in memory")
    parser.add_argument("--out", default="docs/loader_throughput.md")
    parser.add_argument("--json", type=Path, help="default: --out with a .json suffix")
    parser.add_argument("--report-only", action="store_true", help="re-render --out from JSON")
    args = parser.parse_args(argv)
    args.json = args.json or Path(args.out).with_suffix(".json")
    return args


def _epoch(loader: torch.utils.data.DataLoader) -> int:
    count = 0
    for batch in loader:
        views = batch[0]  # the views of a ``Batch`` (or of a plain ``(views, labels)``)
        assert len(views) == 2
        count += views[0].shape[0]
    return count


def measure(root: Path, size: int, workers: int, batch_size: int, cache: bool | None) -> float:
    """Images per second (each image yields two views) over one timed epoch."""
    dm = common.factory_datamodule(root, size, batch_size, workers, cache)
    dm.setup("fit")
    dm.configure_views(2)
    loader = dm.train_dataloader()
    _epoch(loader)  # warm-up: worker start, page cache
    start = time.perf_counter()
    count = _epoch(loader)
    return count / (time.perf_counter() - start)


def _markdown(results: dict) -> str:
    """The page, from the stored numbers."""
    workers, rates = results["workers"], results["images_per_s"]
    rows = [
        [f"{size} px", *(f"{rates[str(size)][str(w)]:.0f}" for w in workers)]
        for size in results["sizes"]
    ]
    header = ["image size", *(f"{w} workers" for w in workers)]
    return common.render(
        "loader_throughput",
        results,
        cache="in-memory cache" if results["cache"] else "decoded from disk every epoch",
        load=f"{results['load']:.1f}",
        table=common.markdown_table(header, ["---"] * len(header), rows),
    )


def main(argv: list[str] | None = None) -> None:
    """Run every configuration (unless ``--report-only``) and write the page."""
    args = _parse(argv)
    if args.report_only:
        results = common.load_json(args.json)
    else:
        torch.set_num_threads(1)
        rates: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as scratch:
            root = common.synthetic_root(args.root, args.images, args.source_size, Path(scratch))
            for size in args.sizes:
                for workers in args.workers:
                    ips = measure(root, size, workers, args.batch_size, args.cache)
                    rates.setdefault(str(size), {})[str(workers)] = ips
                    print(f"{size} px, {workers} workers: {ips:.0f} images/s")
        results = {
            "command": common.command("loader_throughput", argv),
            "batch_size": args.batch_size,
            "source": args.root or f"{args.images} synthetic {args.source_size}-px RGB PNGs",
            "cache": args.cache,
            "machine": (
                f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
                f"Python {platform.python_version()}, torch {torch.__version__}, "
                f"albumentations {albumentations.__version__}"
            ),
            "load": os.getloadavg()[0],
            "sizes": args.sizes,
            "workers": args.workers,
            "images_per_s": rates,
        }
        common.save_json(args.json, results)
    page = _markdown(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(page)
    print(page)


if __name__ == "__main__":
    main()
