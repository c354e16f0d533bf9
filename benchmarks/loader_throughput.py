"""Two-view loader throughput of FactoryDataModule (source images per second), and high-res crops.

Section ``views``: the ``surface`` policy with two views at 128 and 224 px, with 0, 1 and 2
DataLoader workers, over a synthetic factory dataset of 256-px RGB PNGs (or ``--root``),
decoding from disk every epoch (no in-memory cache unless ``--cache``). One untimed warm-up
epoch starts the (persistent) workers; the next epoch is timed.

Section ``highres``: 2048 x 2048 16-bit mono TIFF frames (smooth gradients and a few 10-20 px
defects, deflate with predictor; ``--hr-distinct`` distinct frames hard-linked to
``--hr-frames`` files), ``task="ssl"``, two ``surface`` views of ``crop_size=256`` windows at
``image_size=256``. For 1 and 2 workers, cached and read from disk: the loader alone (img/s),
a training step alone (``resnet10t``, 1 channel, SGD on the two views' embedding distance, on
one fixed batch; img/s), and the two together (share of the step time spent waiting for
data). Then the peak RSS of a fresh process that sets up all ``--hr-frames`` frames with the
cache budget ``--hr-cache-mb``.

Writes a markdown page (prose: benchmarks/templates/loader_throughput.md) and its numbers as
JSON beside it; a section not run keeps its stored numbers.

Usage:
    python benchmarks/loader_throughput.py --out docs/loader_throughput.md
    python benchmarks/loader_throughput.py --sections highres --out docs/loader_throughput.md
    python benchmarks/loader_throughput.py --images 32 --sizes 64 --workers 0 --out /tmp/lt.md
    python benchmarks/loader_throughput.py --report-only   # re-render from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import albumentations
import numpy as np
import tifffile
import torch

from lit_ssl.data import FactoryDataModule

HR_SIDE, HR_CROP, HR_BATCH, HR_MODEL = 2048, 256, 16, "test_resnet"


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
    parser.add_argument("--sections", nargs="+", choices=["views", "highres"], default=None)
    parser.add_argument("--hr-frames", type=int, default=1000, help="frames for the RSS probe")
    parser.add_argument("--hr-distinct", type=int, default=16, help="distinct frames written")
    parser.add_argument("--hr-loader-frames", type=int, default=64, help="frames for the loader")
    parser.add_argument("--hr-batches", type=int, default=6, help="timed batches per row")
    parser.add_argument("--hr-cache-mb", type=float, default=2048.0, help="RSS probe budget")
    parser.add_argument("--rss-probe", nargs=2, metavar=("ROOT", "MB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sections = args.sections or ["views", "highres"]
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
    workers, rates = results.get("workers", []), results.get("images_per_s", {})
    rows = [
        [f"{size} px", *(f"{rates[str(size)][str(w)]:.0f}" for w in workers)]
        for size in results.get("sizes", [])
    ]
    header = ["image size", *(f"{w} workers" for w in workers)]
    return common.render(
        "loader_throughput",
        {"command": "n/a", "batch_size": "n/a", "source": "n/a", "machine": "n/a", **results},
        cache="in-memory cache" if results.get("cache") else "decoded from disk every epoch",
        load=f"{results.get('load', float('nan')):.1f}",
        table=common.markdown_table(header, ["---"] * len(header), rows),
        **_highres_fields(results.get("highres")),
    )


_HR_KEYS = "command model batch_size crop side loader_frames distinct batches machine table load"
_RSS_KEYS = "rss_mb base_mb cached uncached budget_mb setup_s frames full_mb"


def _highres_fields(hr: dict | None) -> dict[str, object]:
    """The template's ``hr_*`` placeholders (``n/a`` before the section was measured)."""
    if hr is None:
        names = [f"hr_{k}" for k in _HR_KEYS.split()] + _RSS_KEYS.split()
        return dict.fromkeys(names, "n/a")
    header = ["cache", "workers", "loader img/s", "step img/s", "loader / step", "data wait"]
    rows = [
        [
            r["cache"],
            r["workers"],
            f"{r['loader_ips']:.0f}",
            f"{r['step_ips']:.1f}",
            f"{r['loader_ips'] / r['step_ips']:.1f}x",
            f"{100 * r['wait_share']:.0f} %",
        ]
        for r in hr["rows"]
    ]
    rss = hr["rss"]
    return {
        **{f"hr_{k}": v for k, v in hr.items() if k not in ("rows", "rss", "load")},
        "hr_table": common.markdown_table(header, ["---"] + ["---:"] * 5, rows),
        "hr_load": f"{hr['load']:.1f}",
        "rss_mb": f"{rss['peak_mb']:.0f}",
        "base_mb": f"{rss['base_mb']:.0f}",
        "cached": rss["cached"],
        "uncached": rss["uncached"],
        "budget_mb": f"{rss['budget_mb']:.0f}",
        "setup_s": f"{rss['setup_s']:.0f}",
        "frames": rss["frames"],
        "full_mb": f"{rss['frames'] * HR_SIDE * HR_SIDE * 2 / 2**20:.0f}",
    }


# ----------------------------------------------------------------------------- high-res
def _frame(rng: np.random.Generator) -> np.ndarray:
    """A 2048 x 2048 12-bit frame: smooth shading and waves, 3-6 defects of 10-20 px."""
    y, x = np.mgrid[0:HR_SIDE, 0:HR_SIDE].astype(np.float32) / HR_SIDE
    a, b, c, d = rng.uniform(0.5, 2.0, 4)
    image = 1500 + 600 * y * a + 400 * np.sin(6 * x * b + c) + 200 * np.cos(9 * (x + y) * d)
    for _ in range(int(rng.integers(3, 7))):
        top, left = rng.integers(0, HR_SIDE - 20, 2)
        side = int(rng.integers(10, 21))
        image[top : top + side, left : left + side] += rng.choice([-700.0, 700.0])
    return np.clip(image, 0, 4095).astype(np.uint16)


def write_frames(folder: Path, count: int, distinct: int, seed: int = 0) -> Path:
    """``count`` TIFF files (deflate + predictor), ``distinct`` different frames hard-linked."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    originals = []
    for i in range(min(distinct, count)):
        path = folder / f"frame_{i:04d}.tif"
        tifffile.imwrite(path, _frame(rng), compression="zlib", predictor=True)
        originals.append(path)
    for i in range(len(originals), count):
        target = folder / f"frame_{i:04d}.tif"
        try:
            os.link(originals[i % len(originals)], target)
        except OSError:
            shutil.copyfile(originals[i % len(originals)], target)
    return folder


def _highres_module(root: Path, workers: int, cache: bool) -> FactoryDataModule:
    dm = FactoryDataModule(
        root=str(root),
        crop_size=HR_CROP,
        image_size=HR_CROP,
        in_chans=1,
        batch_size=HR_BATCH,
        num_workers=workers,
        val_fraction=0.0,
        test_fraction=0.0,
        cache_images=None if cache else False,
        pin_memory=False,
    )
    dm.setup("fit")
    dm.configure_views(2)
    return dm


class _Step:
    """One SGD step of a small CNN on two views (a stand-in for an SSL training step)."""

    def __init__(self) -> None:
        self.model = common.seeded_backbone(HR_MODEL, 0, in_chans=1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)

    def __call__(self, batch) -> None:
        first, second = batch.views[0], batch.views[1]
        loss = (self.model(first) - self.model(second)).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def _forever(loader: torch.utils.data.DataLoader) -> Iterator:
    while True:
        yield from loader


def _highres_row(root: Path, workers: int, cache: bool, step: _Step, batches: int) -> dict:
    it = _forever(_highres_module(root, workers, cache).train_dataloader())
    fixed = next(it)  # also starts the workers
    start = time.perf_counter()
    for _ in range(batches):  # the loader alone (drop_last: every batch is full)
        next(it)
    loader_ips = batches * HR_BATCH / (time.perf_counter() - start)
    step(fixed)  # warm-up
    start = time.perf_counter()
    for _ in range(max(2, batches // 2)):
        step(fixed)
    step_ips = max(2, batches // 2) * HR_BATCH / (time.perf_counter() - start)
    wait = 0.0
    start = time.perf_counter()
    for _ in range(batches):  # both: time spent waiting for the next batch
        ready = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - ready
        step(batch)
    total = time.perf_counter() - start
    row = {"cache": "memory" if cache else "disk", "workers": workers}
    return {**row, "loader_ips": loader_ips, "step_ips": step_ips, "wait_share": wait / total}


def _peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` (Linux; reset by exec, unlike
    ``ru_maxrss``, which keeps the forking parent's peak), else ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_probe(root: str, budget_mb: float) -> dict:
    """In this (fresh) process: set up every frame under ``root`` with the budget; peak RSS."""
    base = _peak_rss_mb()
    start = time.perf_counter()
    dm = FactoryDataModule(
        root=root, crop_size=HR_CROP, image_size=HR_CROP, in_chans=1, cache_limit_mb=budget_mb
    )
    dm.setup("fit")
    store = dm._store
    cached = len(store.cache or {})
    return {
        "frames": len(store),
        "cached": cached,
        "uncached": len(store) - cached,
        "budget_mb": budget_mb,
        "base_mb": base,
        "peak_mb": _peak_rss_mb(),
        "setup_s": time.perf_counter() - start,
    }


def measure_highres(args: argparse.Namespace, argv: list[str] | None, scratch: Path) -> dict:
    """Loader vs step rows and the RSS probe, as stored in the JSON."""
    frames = write_frames(scratch / "frames", args.hr_frames, args.hr_distinct)
    subset = scratch / "loader"
    subset.mkdir()
    for path in sorted(frames.iterdir())[: args.hr_loader_frames]:
        os.link(path, subset / path.name)
    step, rows = _Step(), []
    for cache in (True, False):
        for workers in (1, 2):
            rows.append(_highres_row(subset, workers, cache, step, args.hr_batches))
            print(rows[-1])
    probe = [sys.executable, __file__, "--rss-probe", str(frames), str(args.hr_cache_mb)]
    rss = json.loads(subprocess.run(probe, check=True, capture_output=True, text=True).stdout)
    print(rss)
    return {
        "command": common.command("loader_throughput", argv),
        "model": HR_MODEL,
        "batch_size": HR_BATCH,
        "crop": HR_CROP,
        "side": HR_SIDE,
        "loader_frames": args.hr_loader_frames,
        "distinct": args.hr_distinct,
        "batches": args.hr_batches,
        "machine": f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
        "load": os.getloadavg()[0],
        "rows": rows,
        "rss": rss,
    }


def measure_views(args: argparse.Namespace, argv: list[str] | None, scratch: Path) -> dict:
    """The two-view sweep, as stored in the JSON."""
    rates: dict[str, dict[str, float]] = {}
    root = common.synthetic_root(args.root, args.images, args.source_size, scratch)
    for size in args.sizes:
        for workers in args.workers:
            ips = measure(root, size, workers, args.batch_size, args.cache)
            rates.setdefault(str(size), {})[str(workers)] = ips
            print(f"{size} px, {workers} workers: {ips:.0f} images/s")
    return {
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


def main(argv: list[str] | None = None) -> None:
    """Run the chosen sections (unless ``--report-only``) and write the page."""
    args = _parse(argv)
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe[0], float(args.rss_probe[1]))))
        return
    if args.report_only:
        results = common.load_json(args.json)
    else:
        torch.set_num_threads(1)
        results = common.load_json(args.json) if args.json.is_file() else {}
        with tempfile.TemporaryDirectory() as scratch:
            if "views" in args.sections:
                views = Path(scratch) / "views"
                results = {**results, **measure_views(args, argv, views)}
            if "highres" in args.sections:
                results["highres"] = measure_highres(args, argv, Path(scratch))
        common.save_json(args.json, results)
    page = _markdown(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(page)
    print(page)


if __name__ == "__main__":
    main()
