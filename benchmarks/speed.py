"""Benchmark 3: training throughput of SSLModule vs a bare PyTorch loop vs lightly.

For every head, three implementations train on the same pre-made in-memory batches
(data loading excluded), with the same backbone, batch, optimizer (AdamW) and torch threads:

* ``ours``: ``SSLModule(backbone, head)`` under ``lightning.Trainer`` (CPU, no logger,
  progress bar, checkpointing or model summary);
* ``bare``: the same head module called directly in a plain loop
  (``out = head(backbone, views); out.loss.backward(); opt.step(); opt.zero_grad()`` plus
  the EMA update of BYOL/LatentPrediction): the physical floor of our overhead;
* ``lightly``: the same method assembled from the ``lightly`` package following its
  examples (SimCLR, BYOL, VICReg, Barlow Twins, MAE), in a plain PyTorch loop.

Implementations are measured alternately (ours, bare, lightly, ours, bare, lightly, ...)
for several rounds so that load changes on a shared machine hit all of them alike; each
block discards its warm-up steps. Per step we record wall-clock and process CPU time;
the table reports medians and throughput ratios. Writes the "Training speed" section of
docs/benchmarks.md and docs/img/speed.png.

    python benchmarks/speed.py --quick     # about 2 minutes
    python benchmarks/speed.py             # about 10 minutes
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
from docs_section import write_section  # noqa: E402

from lit_ssl import SSLModule  # noqa: E402
from lit_ssl.backbone import Backbone  # noqa: E402
from lit_ssl.heads import (  # noqa: E402
    BYOL,
    MAE,
    BarlowTwins,
    DenoisingAutoencoder,
    Hybrid,
    LatentPrediction,
    MaskedReconstruction,
    SimCLR,
    SSLHead,
    VICReg,
)
from lit_ssl.optim import decay_groups  # noqa: E402

SECTION = "## Training speed"
LIGHTLY_REQUIREMENT = "lightly>=1.6"
LR, WEIGHT_DECAY = 1e-3, 0.05
Sample = tuple[float, float]  # (wall seconds, CPU seconds) of one training step


# ----------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class HeadSpec:
    """How to build one method: our head, whether it needs a ViT, its lightly twin."""

    make: Callable[[int], SSLHead]  # image size -> head
    vit: bool = False
    lightly: str | None = None  # key of LIGHTLY_BUILDERS


HEADS: dict[str, HeadSpec] = {
    "SimCLR": HeadSpec(lambda s: SimCLR(), lightly="SimCLR"),
    "BYOL": HeadSpec(lambda s: BYOL(), lightly="BYOL"),
    "VICReg": HeadSpec(lambda s: VICReg(), lightly="VICReg"),
    "BarlowTwins": HeadSpec(lambda s: BarlowTwins(), lightly="BarlowTwins"),
    "MAE": HeadSpec(lambda s: MAE(), vit=True, lightly="MAE"),
    "MaskedReconstruction": HeadSpec(lambda s: MaskedReconstruction()),
    "DenoisingAutoencoder": HeadSpec(lambda s: DenoisingAutoencoder(image_size=s)),
    "LatentPrediction": HeadSpec(lambda s: LatentPrediction()),
    "Hybrid": HeadSpec(lambda s: Hybrid(MaskedReconstruction(), VICReg())),
}
QUICK_HEADS = ("SimCLR", "BYOL", "VICReg", "BarlowTwins")


@dataclass
class Config:
    """What every implementation shares."""

    backbone: str
    vit_backbone: str
    image_size: int
    batch_size: int
    in_chans: int = 3
    seed: int = 0

    def make_backbone(self, vit: bool) -> Backbone:
        """A fresh backbone (seeded) for one implementation."""
        torch.manual_seed(self.seed)
        if vit:
            return Backbone(self.vit_backbone, self.in_chans, img_size=self.image_size)
        return Backbone(self.backbone, self.in_chans)

    def batches(self, n_views: int, count: int = 2) -> list[tuple[list[Tensor], Tensor]]:
        """Pre-made batches ``(views, labels)`` following SSLModule's batch contract."""
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.batch_size, self.in_chans, self.image_size, self.image_size)
        return [
            (
                [torch.rand(shape, generator=gen) for _ in range(n_views)],
                torch.full((self.batch_size,), -1, dtype=torch.long),
            )
            for _ in range(count)
        ]


class CycleBatches:
    """A sized iterable of ``length`` batches cycling over pre-made ones (no loading)."""

    def __init__(self, batches: list, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator:
        return (self.batches[i % len(self.batches)] for i in range(self.length))


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap (no ``munmap``/trim between steps).

    With glibc's default dynamic thresholds, whether a step's large buffers are re-faulted
    from the OS depends on the order of allocations and frees, which differs between the
    implementations: measured 3x more page faults (and ~7% more CPU time) in the bare loop
    than under the Trainer for the same head. Fixed thresholds remove that confound for all
    three. Returns whether it applied (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(
            libc.mallopt(m_trim_threshold, 1 << 31)
        )
    except (OSError, AttributeError):
        return False


def _num_views(head: SSLHead) -> int:
    return head.num_views + int(head.clean_view)


def _clock() -> Sample:
    return time.perf_counter(), time.process_time()


def _steps(stamps: list[Sample], keep: int) -> list[Sample]:
    """Per-step (wall, cpu) durations from consecutive timestamps; the last ``keep``."""
    out = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:], strict=False)]
    return out[-keep:]


# ----------------------------------------------------------------------------- runners
class Runner:
    """One implementation of one method; ``run`` trains a block of steps and times them."""

    name = ""

    def run(self, warmup: int, steps: int) -> list[Sample]:
        """Train ``warmup + steps`` steps; return (wall, cpu) seconds of the last ``steps``."""
        raise NotImplementedError


class _StepClock(L.Callback):
    """Timestamps the start of every training batch and the end of the epoch."""

    def __init__(self) -> None:
        self.stamps: list[Sample] = []

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        gc.collect()  # the new Trainer's garbage is not the training step's cost

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self.stamps.append(_clock())

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        self.stamps.append(_clock())


class OursRunner(Runner):
    """``SSLModule`` trained by ``lightning.Trainer`` (one short ``fit`` per block)."""

    name = "ours"

    def __init__(self, spec: HeadSpec, cfg: Config, precision: str) -> None:
        self.module = SSLModule(
            cfg.make_backbone(spec.vit), head=spec.make(cfg.image_size), lr=LR,
            weight_decay=WEIGHT_DECAY,
        )  # fmt: skip
        self.batches = cfg.batches(_num_views(self.module.head))
        self.precision = precision

    def trainer(self, max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
        """The Trainer of one block: CPU, nothing but training."""
        return L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=max_steps,
            precision=self.precision,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=callbacks,
        )

    def run(self, warmup: int, steps: int) -> list[Sample]:  # noqa: D102
        clock = _StepClock()
        total = warmup + steps
        self.trainer(total, [clock]).fit(self.module, CycleBatches(self.batches, total))
        return _steps(clock.stamps, steps)


class BareRunner(Runner):
    """The same head module called directly: forward, loss, backward, step, EMA."""

    name = "bare"

    def __init__(self, spec: HeadSpec, cfg: Config, precision: str) -> None:
        self.backbone = cfg.make_backbone(spec.vit)
        self.head = spec.make(cfg.image_size)
        self.head.check_backbone(self.backbone)
        self.head.build(self.backbone)
        self.backbone.train()
        self.head.train()
        params = list(self.backbone.named_parameters()) + list(self.head.named_parameters())
        no_decay = set(getattr(self.backbone.model, "no_weight_decay", set)())
        self.opt = torch.optim.AdamW(decay_groups(params, WEIGHT_DECAY, no_decay), lr=LR)
        self.batches = cfg.batches(_num_views(self.head))
        self.autocast = precision.startswith("bf16")
        self.done = 0

    def run(self, warmup: int, steps: int) -> list[Sample]:  # noqa: D102
        backbone, head, opt = self.backbone, self.head, self.opt
        stamps = []
        gc.collect()  # as before ours' timed steps
        for views, _labels in CycleBatches(self.batches, warmup + steps):
            stamps.append(_clock())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                out = head(backbone, views)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.done += 1
            head.on_optimizer_step(backbone, min(1.0, self.done / 10_000))
        stamps.append(_clock())
        return _steps(stamps, steps)


class LightlyRunner(Runner):
    """The same method built from lightly's modules and losses, in a plain loop."""

    name = "lightly"

    def __init__(self, spec: HeadSpec, cfg: Config, precision: str) -> None:
        assert spec.lightly is not None
        self.model, self.step_fn = LIGHTLY_BUILDERS[spec.lightly](cfg.make_backbone(spec.vit))
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=WEIGHT_DECAY)
        self.batches = cfg.batches(1 if spec.vit else 2)
        self.autocast = precision.startswith("bf16")
        self.done = 0

    def run(self, warmup: int, steps: int) -> list[Sample]:  # noqa: D102
        stamps = []
        gc.collect()  # as before ours' timed steps
        for views, _labels in CycleBatches(self.batches, warmup + steps):
            stamps.append(_clock())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss = self.step_fn(self.model, views, min(1.0, self.done / 10_000))
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.done += 1
        stamps.append(_clock())
        return _steps(stamps, steps)


# ----------------------------------------------------------------------------- lightly
StepFn = Callable[[nn.Module, list[Tensor], float], Tensor]


def _lightly_simclr(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    model = nn.ModuleDict(
        {"backbone": backbone, "head": SimCLRProjectionHead(backbone.embed_dim, 2048, 128)}
    )
    criterion = NTXentLoss(temperature=0.1)

    def step(m: nn.Module, views: list[Tensor], progress: float) -> Tensor:
        z0 = m["head"](m["backbone"](views[0]))
        z1 = m["head"](m["backbone"](views[1]))
        return criterion(z0, z1)

    return model, step


def _lightly_byol(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    model = nn.ModuleDict(
        {
            "backbone": backbone,
            "projection": BYOLProjectionHead(backbone.embed_dim, 4096, 256),
            "prediction": BYOLPredictionHead(256, 4096, 256),
        }
    )
    model["backbone_momentum"] = copy.deepcopy(model["backbone"])
    model["projection_momentum"] = copy.deepcopy(model["projection"])
    deactivate_requires_grad(model["backbone_momentum"])
    deactivate_requires_grad(model["projection_momentum"])
    criterion = NegativeCosineSimilarity()

    def step(m: nn.Module, views: list[Tensor], progress: float) -> Tensor:
        momentum = cosine_schedule(int(progress * 10_000), 10_000, 0.996, 1.0)
        update_momentum(m["backbone"], m["backbone_momentum"], m=momentum)
        update_momentum(m["projection"], m["projection_momentum"], m=momentum)
        x0, x1 = views[0], views[1]
        p0 = m["prediction"](m["projection"](m["backbone"](x0)))
        p1 = m["prediction"](m["projection"](m["backbone"](x1)))
        with torch.no_grad():
            z0 = m["projection_momentum"](m["backbone_momentum"](x0)).detach()
            z1 = m["projection_momentum"](m["backbone_momentum"](x1)).detach()
        return 0.5 * (criterion(p0, z1) + criterion(p1, z0))

    return model, step


def _lightly_vicreg(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead

    head = VICRegProjectionHead(backbone.embed_dim, 2048, 2048, num_layers=3)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    criterion = VICRegLoss()

    def step(m: nn.Module, views: list[Tensor], progress: float) -> Tensor:
        z0 = m["head"](m["backbone"](views[0]))
        z1 = m["head"](m["backbone"](views[1]))
        return criterion(z0, z1)

    return model, step


def _lightly_barlow(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules import BarlowTwinsProjectionHead

    head = BarlowTwinsProjectionHead(backbone.embed_dim, 2048, 2048)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    criterion = BarlowTwinsLoss(lambda_param=5e-3)

    def step(m: nn.Module, views: list[Tensor], progress: float) -> Tensor:
        z0 = m["head"](m["backbone"](views[0]))
        z1 = m["head"](m["backbone"](views[1]))
        return criterion(z0, z1)

    return model, step


def _lightly_mae(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.models import utils
    from lightly.models.modules import (
        MaskedVisionTransformerDecoderTIMM,
        MaskedVisionTransformerTIMM,
    )

    vit = backbone.model
    patch = int(vit.patch_embed.patch_size[0])
    ref = MAE()  # same decoder size and mask ratio as our default head
    model = nn.ModuleDict(
        {
            "backbone": MaskedVisionTransformerTIMM(vit=vit),
            "embed": nn.Linear(vit.embed_dim, ref.decoder_dim),
            "decoder": MaskedVisionTransformerDecoderTIMM(
                num_patches=vit.patch_embed.num_patches,
                embed_dim=ref.decoder_dim,
                depth=ref.decoder_depth,
                num_heads=ref.decoder_heads,
                num_prefix_tokens=vit.num_prefix_tokens,
            ),
            "predict": nn.Linear(ref.decoder_dim, patch * patch * backbone.in_chans),
        }
    )
    criterion = nn.MSELoss()

    def step(m: nn.Module, views: list[Tensor], progress: float) -> Tensor:
        images = views[0]
        batch, seq_len = images.shape[0], m["backbone"].sequence_length
        idx_keep, idx_mask = utils.random_token_mask(
            size=(batch, seq_len), mask_ratio=ref.mask_ratio, device=images.device
        )
        visible = m["embed"](m["backbone"].encode(images=images, idx_keep=idx_keep))
        tokens = utils.repeat_token(m["decoder"].mask_token, (batch, seq_len))
        tokens = utils.set_at_index(tokens, idx_keep, visible.type_as(tokens))
        decoded = m["decoder"](tokens)
        pred = m["predict"](utils.get_at_index(decoded, idx_mask))
        target = utils.get_at_index(utils.patchify(images, patch), idx_mask - 1)
        return criterion(pred, target)

    return model, step


LIGHTLY_BUILDERS: dict[str, Callable[[Backbone], tuple[nn.Module, StepFn]]] = {
    "SimCLR": _lightly_simclr,
    "BYOL": _lightly_byol,
    "VICReg": _lightly_vicreg,
    "BarlowTwins": _lightly_barlow,
    "MAE": _lightly_mae,
}


def lightly_available() -> str | None:
    """lightly's version, or ``None`` when the benchmark extra is not installed."""
    try:
        import lightly
    except ImportError:
        return None
    return str(lightly.__version__)


# ----------------------------------------------------------------------------- measure
@dataclass
class Result:
    """Timed steps of one head: ``samples[impl][round]`` lists (wall, cpu) per step."""

    head: str
    samples: dict[str, list[list[Sample]]]

    def median(self, impl: str, cpu: bool = False) -> float:
        """Median step time (seconds) over all timed steps of all rounds."""
        return statistics.median(s[int(cpu)] for block in self.samples[impl] for s in block)

    def ratio(self, impl: str, cpu: bool = False) -> float:
        """Throughput of ours relative to ``impl`` (> 1: ours is faster)."""
        return self.median(impl, cpu) / self.median("ours", cpu)

    def round_ratios(self, impl: str, cpu: bool = False) -> list[float]:
        """Per-round paired throughput ratios ours/``impl`` (the spread of the estimate)."""
        out = []
        for ours, other in zip(self.samples["ours"], self.samples[impl], strict=True):
            out.append(
                statistics.median(s[int(cpu)] for s in other)
                / statistics.median(s[int(cpu)] for s in ours)
            )
        return out


def measure_head(name: str, cfg: Config, args: argparse.Namespace, use_lightly: bool) -> Result:
    """Build the implementations of one head and time them alternately."""
    spec = HEADS[name]
    kinds: list[type[Runner]] = [OursRunner, BareRunner]
    if use_lightly and spec.lightly:
        kinds.append(LightlyRunner)
    runners = [kind(spec, cfg, args.precision) for kind in kinds]
    samples: dict[str, list[list[Sample]]] = {r.name: [] for r in runners}
    for r in runners:  # untimed warm-up block (allocator, first AdamW state, lazy init)
        r.run(args.warmup, 1)
    for k in range(args.rounds):
        order = runners if k % 2 == 0 else runners[::-1]  # alternate who goes first
        for r in order:
            samples[r.name].append(r.run(args.warmup, args.steps))
        line = "  ".join(
            f"{n} {cfg.batch_size / statistics.median(s[0] for s in v[-1]):6.1f}"
            for n, v in samples.items()
        )
        print(f"  {name:<21} round {k + 1}/{args.rounds}: img/s {line}", flush=True)
    return Result(name, samples)


# ----------------------------------------------------------------------------- report
def _fmt_ratio(result: Result, impl: str) -> tuple[str, str]:
    if impl not in result.samples:
        return "—", "—"
    rr = sorted(result.round_ratios(impl))
    lo, hi = rr[len(rr) // 4], rr[-1 - len(rr) // 4]
    wall = f"{result.ratio(impl):.2f} ({lo:.2f}–{hi:.2f})"
    return wall, f"{result.ratio(impl, cpu=True):.2f}"


def table(results: list[Result], cfg: Config) -> str:
    """Markdown table of medians and ratios."""
    rows = [
        "| head | ours img/s | bare img/s | lightly img/s | ours/bare wall | ours/bare CPU "
        "| ours/lightly wall | ours/lightly CPU | overhead vs bare, CPU ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ips = {k: cfg.batch_size / r.median(k) for k in r.samples}
        lightly = f"{ips['lightly']:.1f}" if "lightly" in ips else "—"
        bare_w, bare_c = _fmt_ratio(r, "bare")
        li_w, li_c = _fmt_ratio(r, "lightly")
        overhead = 1000 * (r.median("ours", cpu=True) - r.median("bare", cpu=True))
        rows.append(
            f"| {r.head} | {ips['ours']:.1f} | {ips['bare']:.1f} | {lightly} | {bare_w} "
            f"| {bare_c} | {li_w} | {li_c} | {overhead:+.1f} |"
        )
    return "\n".join(rows)


def plot(results: list[Result], cfg: Config, path: Path) -> None:
    """Grouped bars of median images/s per head and implementation."""
    impls = [("ours", "#1f77b4"), ("bare", "#7f7f7f"), ("lightly", "#ff7f0e")]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(results) + 2), 4.2))
    width = 0.27
    for j, (impl, colour) in enumerate(impls):
        xs, ys = [], []
        for i, r in enumerate(results):
            if impl in r.samples:
                xs.append(i + (j - 1) * width)
                ys.append(cfg.batch_size / r.median(impl))
        ax.bar(xs, ys, width, label=impl, color=colour)
    for i, r in enumerate(results):
        top = max(cfg.batch_size / r.median(k) for k in r.samples)
        ax.text(i, top * 1.02, f"{r.ratio('bare'):.2f}x", ha="center", fontsize=8)
    ax.set_xticks(range(len(results)), [r.head for r in results], rotation=30, ha="right")
    ax.set_ylabel("training images / s (median)")
    ax.set_title(
        f"Training throughput, CPU, {torch.get_num_threads()} thread(s), batch "
        f"{cfg.batch_size}, {cfg.image_size} px\n(label: ours/bare throughput ratio)",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_note() -> str:
    """CPU, cores, load and versions, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu}, {os.cpu_count()} cores, load average at the end {load}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}, "
        f"lightly {lightly_available() or 'not installed'}"
    )


def section_text(tab: str, cfg: Config, args: argparse.Namespace, cmd: str, elapsed: float) -> str:
    """The markdown section for docs/benchmarks.md."""
    img = Path("img") / args.img.name
    malloc = (
        "with fixed mmap/trim thresholds (`tune_malloc`: with the default dynamic ones the "
        "bare loop took 3x the page faults of the Trainer run for the same head, ~7% of its "
        "CPU time, purely from the order of allocations)"
        if getattr(args, "malloc_tuned", False)
        else "with its default settings"
    )
    return f"""{SECTION}

Training throughput of `SSLModule` under `lightning.Trainer` ("ours": CPU, `logger=False`,
no progress bar, checkpointing or model summary) against the same head called in a bare
PyTorch loop (forward, loss, backward, `AdamW.step`, `zero_grad`, plus the EMA update for
BYOL/LatentPrediction: the floor of our overhead) and the same method assembled from
`lightly` {lightly_available() or "(not installed)"} modules and losses as in lightly's
examples (plain loop). Same backbone module, batch, optimizer (AdamW, lr {LR:g}, weight
decay {WEIGHT_DECAY:g}), precision `{args.precision}` and torch threads everywhere; pre-made
in-memory batches, so data loading is excluded (see "Data pipeline" for that).

* Command: `{cmd}` ({elapsed / 60:.1f} min)
* Backbones: `{cfg.backbone}` (CNN heads), `{cfg.vit_backbone}` with `img_size={cfg.image_size}`
  (MAE); {cfg.image_size} px RGB, batch {cfg.batch_size} source images (each with the
  head's views), default head settings; Hybrid = `Hybrid(MaskedReconstruction(), VICReg())`.
* torch threads: {torch.get_num_threads()}; {args.rounds} interleaved rounds x {args.steps}
  timed steps per implementation (plus {args.warmup} warm-up step(s) per block, excluded, and
  one untimed warm-up block); `gc.collect()` before every block (ours builds a Trainer per
  block, whose garbage would otherwise be collected inside the timed steps); glibc malloc
  {malloc}.
* Machine: {machine_note()}.

![training speed]({img})

{tab}

How to read it: images/s = batch size / median wall-clock step time over all timed steps.
Ratios are throughput ratios, ours/other (1.00 = as fast; < 1: ours slower): "wall" is the
ratio of the wall-clock medians, in brackets the interquartile range of the per-round
paired ratios (each round measures ours, bare and lightly back to back); "CPU" is the
same ratio on process CPU time per step, which is what the code costs independently of
how much of the cores the scheduler gave us. "Overhead" is ours minus bare in CPU ms per
step (Lightning's loop, hooks and `self.log`, our module's logging and checks).

Noise: this machine has 2 cores shared with other jobs (test suites ran concurrently),
so single steps vary by tens of percent. That is why the implementations are measured
alternately within each round, warm-up is excluded, medians are reported, and why the
benchmark runs with one torch thread: with 2 threads on 2 contended cores the
intra-op barriers made steps 3-4x slower and far more erratic. Ratios within a few
percent of 1.00 are within the noise; the CPU-time ratios are the steadier ones. On a
quiet multi-core machine expect higher absolute numbers; the per-step overhead (a few ms)
does not grow with model size, so its relative cost only shrinks with bigger models,
images or GPUs (there, host syncs would matter: `training_step` has none, and the
step-wise `train/lr` and EMA-momentum logs are CPU tensors, see below).

What the profiles showed (torch.profiler, cProfile, pyinstrument on ours vs bare):

* Our overhead is Lightning's loop plus `self.log`: about 0.26 ms per `self.log` call
  (2-6 per step: loss, the head's terms, `embedding_std`, `lr`, EMA momentum) and about
  1-2 ms of loop and hooks, 2-4 ms per step in all, flat in model size. MAE has the
  shortest step (about 110 CPU ms), so there it shows most: 0.93-0.99 over four full runs
  of this benchmark, and a longer interleaved check (48 steps each) measured 110.0 vs
  106.4 CPU ms per step (0.97); across runs the ratios move by about +-3%; `collapse_std`
  costs about 0.4 ms per step at 16 x 2048. No recomputation between loss and logging,
  one backbone forward per view group, losses in float32.
* Fixed: `SSLModule.on_train_batch_end` logged the learning rate and the EMA momentum as
  Python floats, which `LightningModule.log` turns into `torch.tensor(value,
  device=self.device)`: on a GPU a blocking host-to-device copy, i.e. a stream
  synchronisation every training step. They are now logged as CPU scalar tensors
  (`lit_ssl.module._host_scalar`), so no step-wise log moves data between host and
  device. No effect on these CPU numbers (a CPU has nothing to synchronise).
* Fixed: VICReg's covariance term and Barlow Twins' off-diagonal term formed the D x D
  matrix (D = 2048 by default, 8192 in the papers) although the batch N is usually
  smaller: `lit_ssl.losses._off_diagonal_sq_sum` now uses the N x N Gram matrices
  (`||a'b||_F^2 = <aa', bb'>_F` minus the diagonal) when N < D, the D x D product
  otherwise. Same value (float64 reference: relative error <= 2e-7 in loss and
  gradients), loss forward + backward on one thread at N = 16, D = 2048: VICReg 91 -> 3
  ms, Barlow Twins 62 -> 3 ms (N = 256: 240 -> 49 and 153 -> 35 ms). Whole training
  step under the Trainer, this benchmark's setting, old and new losses interleaved
  (5 rounds x 3 steps): VICReg 537 -> 503 CPU ms (1.07x), Barlow Twins 570 -> 494 CPU ms
  (1.15x).
* Lightly is slower here because its examples run the backbone once per view (two
  half-size forwards instead of one over both views: about 40% of the SimCLR gap) and,
  for VICReg, its covariance term forms the D x D matrix and selects its off-diagonal
  with a boolean mask (`cov[..., ~eye]`: 349 ms forward + backward at N = 16,
  D = 2048, and a host sync on a GPU).
* Remaining GPU note (not measurable here): `train/loss` is logged with `prog_bar=True`,
  so Lightning's progress bar reads it back (`.item()`) at every refresh; with the
  default `TQDMProgressBar(refresh_rate=1)` that is one sync per step. Use
  `TQDMProgressBar(refresh_rate=50)` (or no progress bar) for long GPU runs.
"""


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks rounds and heads)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="joint-embedding heads, 3 rounds")
    p.add_argument("--heads", nargs="+", choices=list(HEADS), help="default: all")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--vit-backbone", default="vit_tiny_patch16_224")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=None, help="default 6 (quick: 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per block (3; quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per block")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--no-lightly", action="store_true", help="skip the lightly comparison")
    p.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's dynamic malloc thresholds"
    )
    p.add_argument("--img", type=Path, default=ROOT / "docs/img/speed.png")
    p.add_argument("--md", type=Path, default=ROOT / "docs/benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.heads = args.heads or list(QUICK_HEADS if args.quick else HEADS)
    args.rounds = args.rounds or (3 if args.quick else 6)
    args.steps = args.steps or (2 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure every requested head and write the table and chart."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.malloc_tuned = not args.default_malloc and tune_malloc()
    warnings.filterwarnings("ignore", ".*(does not have many workers|smaller than the logging).*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cfg = Config(args.backbone, args.vit_backbone, args.image_size, args.batch_size)
    use_lightly = not args.no_lightly and lightly_available() is not None
    if not args.no_lightly and not use_lightly:
        print(f"lightly not installed (pip install '{LIGHTLY_REQUIREMENT}'): skipping it")
    t0 = time.perf_counter()
    results = [measure_head(name, cfg, args, use_lightly) for name in args.heads]
    elapsed = time.perf_counter() - t0
    tab = table(results, cfg)
    print(tab)
    print(f"done in {elapsed / 60:.1f} min")
    if args.no_write:
        return
    plot(results, cfg, args.img)
    cmd = "python benchmarks/speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_section(args.md, section_text(tab, cfg, args, cmd.strip(), elapsed), SECTION)
    print(f"wrote {args.img} and the '{SECTION}' section of {args.md}")


if __name__ == "__main__":
    main()
