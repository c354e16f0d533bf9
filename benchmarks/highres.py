"""High-resolution frames: a tiled classifier on native pixels vs the whole frame resized.

Generated 1024 x 1024 mono frames (brushed texture, illumination tilt, sensor noise); defect
frames hold one scratch, 2 px wide and 10-20 px long, across the brushed texture. Both
classifiers get the same budget: the same backbone (``test_resnet``, random init), the same
number of training samples, steps and pixels per sample (``SIDE x SIDE``):

- ``resized``: the whole frame area-resized to ``SIDE`` px, untiled ``DefectClassifier``;
- ``tiles``: ``DefectClassifier(tile_size=SIDE)`` trained on native ``SIDE`` px windows (the
  window of a defect frame holds its spot, as ``FactoryDataModule(crop_size=...)`` draws them
  from a mask; a good frame's window is random), scored on whole native frames (max over
  the 8 x 8 tiles).

Defect AUROC on held-out frames, several seeds: median and range.

    python benchmarks/highres.py            # ~7 min on 2 shared CPU cores
    python benchmarks/highres.py --seeds 1 --test 8   # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend

# isort: split
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import binary_auroc

from lit_ssl import DefectClassifier

FRAME = 1024
SIDE = 128


def frame(rng: np.random.Generator, defect: bool, contrast: float) -> tuple[np.ndarray, tuple]:
    """One float32 frame in [0, 1] and its scratch ``(y, x, length)`` (``None`` when good)."""
    yy, xx = np.mgrid[0:FRAME, 0:FRAME].astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, size=2) / FRAME
    image = 0.45 + tilt[0] * yy + tilt[1] * xx
    image += 0.04 * np.repeat(rng.standard_normal((1, FRAME)), FRAME, axis=0)
    image += 0.02 * rng.standard_normal((FRAME, FRAME))
    spot = None
    if defect:
        size = int(rng.integers(10, 21))  # a 2 px wide scratch, 10-20 px long
        y, x = (int(v) for v in rng.integers(0, FRAME - size, size=2))
        image[y : y + 2, x : x + size] += rng.choice([-contrast, contrast])
        spot = (y, x, size)
    return np.clip(image, 0, 1).astype(np.float32), spot


class Windows(torch.utils.data.Dataset):
    """Native ``SIDE`` px training windows, drawn afresh at every access: a defect frame's holds
    its scratch (random offset), a good frame's lies anywhere (``crop_size`` does the same)."""

    def __init__(self, frames: torch.Tensor, labels: torch.Tensor, spots: list, seed: int):
        self.frames, self.labels, self.spots = frames, labels, spots
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        spot, rng = self.spots[i], self.rng
        if spot is None:
            y, x = (int(v) for v in rng.integers(0, FRAME - SIDE + 1, size=2))
        else:
            top, left, size = spot
            y = int(np.clip(top - rng.integers(0, SIDE - size + 1), 0, FRAME - SIDE))
            x = int(np.clip(left - rng.integers(0, SIDE - size + 1), 0, FRAME - SIDE))
        return self.frames[i, :, y : y + SIDE, x : x + SIDE], self.labels[i]


def data(n: int, seed: int, contrast: float) -> tuple[torch.Tensor, torch.Tensor, list]:
    rng = np.random.default_rng(seed)
    labels = torch.arange(n) % 2
    made = [frame(rng, bool(label), contrast) for label in labels]
    frames = torch.from_numpy(np.stack([m[0] for m in made]))[:, None]
    return frames, labels, [m[1] for m in made]


def fit(clf: DefectClassifier, dataset: torch.utils.data.Dataset, epochs: int) -> None:
    loader = DataLoader(dataset, batch_size=8, shuffle=True)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(clf, loader)


def scores(clf: DefectClassifier, frames: torch.Tensor) -> torch.Tensor:
    clf.eval()
    with torch.no_grad():
        return torch.cat([clf.predict_scores(b)[0] for b in frames.split(4)])


def run(seed: int, n_train: int, n_test: int, epochs: int, contrast: float) -> dict:
    train, train_labels, spots = data(n_train, 1000 + seed, contrast)
    test, test_labels, _ = data(n_test, 2000 + seed, contrast)
    windows = Windows(train, train_labels, spots, seed)
    resized = TensorDataset(F.interpolate(train, size=SIDE, mode="area"), train_labels)
    resized_test = F.interpolate(test, size=SIDE, mode="area")
    out = {"seed": seed}
    for name, kwargs, train_x, test_x in (
        ("resized", {}, resized, resized_test),
        ("tiles", {"tile_size": SIDE}, windows, test),
    ):
        L.seed_everything(seed, verbose=False)
        clf = DefectClassifier("test_resnet", in_chans=1, save_figures=False, **kwargs)
        start = time.perf_counter()
        fit(clf, train_x, epochs)
        auroc = float(binary_auroc(scores(clf, test_x), test_labels))
        out[name] = {"auroc": auroc, "seconds": time.perf_counter() - start}
        print(f"seed {seed} {name:8s} AUROC {auroc:.3f} ({out[name]['seconds']:.0f} s)")
    return out


def table(runs: list[dict]) -> str:
    lines = [
        "| input | defect AUROC, median | range | seeds |",
        "|---|---|---|---|",
    ]
    labels = {
        "resized": f"whole {FRAME} px frame resized to {SIDE} px",
        "tiles": f"tiles of {SIDE} px at native resolution (max over 64)",
    }
    for name, label in labels.items():
        values = [r[name]["auroc"] for r in runs]
        lines.append(
            f"| {label} | {statistics.median(values):.3f} | {min(values):.3f}–"
            f"{max(values):.3f} | {len(values)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train", type=int, default=64, help="training frames (half defect)")
    parser.add_argument("--test", type=int, default=24, help="test frames (half defect)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--contrast", type=float, default=0.25, help="scratch contrast (0..1)")
    parser.add_argument("--json", type=Path, default=common.DOCS / "highres.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    runs = [run(s, args.train, args.test, args.epochs, args.contrast) for s in range(args.seeds)]
    minutes = (time.perf_counter() - start) / 60
    args.json.write_text(
        json.dumps(
            {"args": vars(args) | {"json": args.json.name}, "runs": runs, "minutes": minutes},
            indent=2,
        )
    )
    print(table(runs))
    print(f"{minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
