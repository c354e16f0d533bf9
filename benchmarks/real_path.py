"""The path a user runs, measured: the objects ``lit-ssl fit --config recipes/vicreg.yaml`` builds.

``LitSSLCLI(run=False)`` builds the shipped recipe's ``SSLModule``, ``FactoryDataModule`` and
``Trainer`` (its callbacks, precision and logger as a user gets them), with size overrides only;
``Trainer.fit`` then trains for ``warmup + steps`` steps and the rate of the timed steps is
reported next to the bare VICReg step (``gpu.head_step``) and the run's ``perf/data_wait``.
Folders: 2048 x 2048 16-bit TIFF frames (``crop_size`` windows; cached in memory and from
disk) and 3-channel 1024 x 1024 PNGs; augmentation in the CPU workers or on the device.

Used by ``benchmarks/gpu.py`` (its "Real path" section); ``--device cpu`` dry-runs it tiny.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch

__all__ = ["Case", "cases", "real_rate", "write_pngs"]


@dataclass(frozen=True)
class Case:
    """One real-path run: backbone, folder kind, cache and where the augmentation runs."""

    backbone: str
    data: str  # "tiff" (2048 x 2048 16-bit, crops) or "png" (1024 x 1024 RGB, crops)
    cache: bool
    augment_on: str  # "cpu" or "device"


def cases(backbones: list[str]) -> list[Case]:
    """The first backbone over every folder and augmentation; the others on cached TIFFs."""
    first, *others = backbones
    rows = [
        Case(first, data, cache, where)
        for data, cache in (("tiff", True), ("tiff", False), ("png", True))
        for where in ("cpu", "device")
    ]
    return rows + [Case(b, "tiff", True, w) for b in others for w in ("cpu", "device")]


def write_pngs(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` 3-channel ``size`` x ``size`` PNG textures (a line camera's colour frames)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = cv2.resize(rng.random((size // 16, size // 16, 3)), (size, size))
        noise = rng.normal(0.0, 0.05, (size, size, 3))
        image = np.clip((base + noise) * 255, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"part_{i:04d}.png"), image)
    return folder


class _Timer(L.Callback):
    """Wall time of the steps after ``warmup`` (synchronised at both ends)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_end(self, trainer: L.Trainer, *_: object) -> None:
        if trainer.global_step == self.warmup:
            _sync()
            self.start = time.perf_counter()
        elif trainer.global_step > self.warmup:
            _sync()
            self.end, self.steps = time.perf_counter(), trainer.global_step - self.warmup


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def real_rate(case: Case, root: Path, settings: dict, work: Path) -> dict:
    """Images/s and ``perf/data_wait`` of the CLI's own objects on ``root`` for ``case``.

    Args:
        case: what to run.
        root: the folder of frames.
        settings: ``image_size``, ``batch_size``, ``workers``, ``warmup``, ``steps``,
            ``in_chans``, ``accelerator``.
        work: a scratch folder (the run folder lands there).
    """
    from lit_ssl.cli.lightning_cli import LitSSLCLI
    from lit_ssl.cli.quiet import quiet_lightning

    quiet_lightning()
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "vicreg.yaml"
    s = settings
    args = [
        "--config", str(recipe), "--data.root", str(root),
        "--model.backbone", case.backbone, "--data.image_size", str(s["image_size"]),
        "--data.crop_size", str(s["image_size"]), "--data.in_chans", str(s["in_chans"]),
        "--model.in_chans", str(s["in_chans"]),
        "--data.batch_size", str(s["batch_size"]), "--data.num_workers", str(s["workers"]),
        "--data.cache_images", str(case.cache).lower(), "--data.verify_files", "false",
        "--data.augment_on", case.augment_on, "--trainer.accelerator", s["accelerator"],
        "--trainer.max_steps", str(s["warmup"] + s["steps"]), "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    with _chdir(work):
        cli = LitSSLCLI(args=args, run=False, recipe="real_path")
        timer = _Timer(s["warmup"])
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wait = cli.trainer.callback_metrics.get("perf/data_wait")
    elapsed = (timer.end or 0.0) - (timer.start or 0.0)
    ips = timer.steps * s["batch_size"] / elapsed if elapsed > 0 else None
    precision = str(cli.trainer.precision)
    return {"ips": ips, "data_wait": None if wait is None else float(wait), "precision": precision}


@contextlib.contextmanager
def _chdir(folder: Path):
    previous = Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
