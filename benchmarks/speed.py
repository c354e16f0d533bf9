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

A fourth measurement, ``backbone``, is the backbone alone at the same input: one forward
over the head's augmented views, a dummy loss (mean square of the pooled features),
backward, ``AdamW.step`` and ``zero_grad``. The "head cost" table divides each head's bare
step by it: what the head adds on top of the network it trains (a denoising decoder that
decoded 224 px for 64 px images showed as ~3x here). ``--head-cost`` measures only that
table (bare and backbone, interleaved) and keeps the stored throughput table.

Implementations are measured alternately (ours, bare, lightly, ours, bare, lightly, ...)
for several rounds so that load changes on a shared machine hit all of them alike; each
block discards its warm-up steps. Per step we record wall-clock and process CPU time;
the table reports medians and throughput ratios. Writes the "Training speed" section of
docs/benchmarks.md (prose: benchmarks/templates/speed.md), its numbers (docs/speed.json) and
docs/img/speed.png.

    python benchmarks/speed.py --quick     # about 2 minutes
    python benchmarks/speed.py             # about 10 minutes
    python benchmarks/speed.py --heads SimCLR --rounds 1 --steps 1 --no-lightly --md /tmp/s.md
    python benchmarks/speed.py --report-only   # re-render the section from the JSON
    python benchmarks/speed.py --head-cost --backbone resnet10t --in-chans 1 --batch-size 64
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import lightning as L
import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from lit_ssl import SSLModule, heads
from lit_ssl.backbone import Backbone
from lit_ssl.optim import decay_groups

LIGHTLY_REQUIREMENT = "lightly>=1.6"
LR, WEIGHT_DECAY = 1e-3, 0.05


# ----------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class HeadSpec:
    """How to build one method: our head, whether it needs a ViT, its lightly twin."""

    make: Callable[[int], heads.SSLHead]  # image size -> head
    vit: bool = False
    lightly: str | None = None  # key of LIGHTLY_BUILDERS


HEADS: dict[str, HeadSpec] = {
    "SimCLR": HeadSpec(lambda s: heads.SimCLR(), lightly="SimCLR"),
    "BYOL": HeadSpec(lambda s: heads.BYOL(), lightly="BYOL"),
    "VICReg": HeadSpec(lambda s: heads.VICReg(), lightly="VICReg"),
    "BarlowTwins": HeadSpec(lambda s: heads.BarlowTwins(), lightly="BarlowTwins"),
    "MAE": HeadSpec(lambda s: heads.MAE(), vit=True, lightly="MAE"),
    "MaskedReconstruction": HeadSpec(lambda s: heads.MaskedReconstruction()),
    # Sized from the data as SSLModule.setup does (configure_image_size), not by hand.
    "DenoisingAutoencoder": HeadSpec(lambda s: heads.DenoisingAutoencoder()),
    "LatentPrediction": HeadSpec(lambda s: heads.LatentPrediction()),
    "Hybrid": HeadSpec(lambda s: heads.Hybrid(heads.MaskedReconstruction(), heads.VICReg())),
    # The recipe's teacher (random weights: the cost is the same) at its 224 px input.
    "Distillation": HeadSpec(
        lambda s: heads.Distillation("vit_small_patch14_dinov2", teacher_image_size=224)
    ),
}
QUICK_HEADS = ("SimCLR", "BYOL", "VICReg", "BarlowTwins")
# Head-cost reference rows (``--head-cost`` only): the decoder the old default built.
REFERENCE_HEADS: dict[str, HeadSpec] = {
    "DenoisingAutoencoder, 224 px decoder (old default)": HeadSpec(
        lambda s: heads.DenoisingAutoencoder(image_size=224)
    ),
}
ALL_HEADS = {**HEADS, **REFERENCE_HEADS}


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
        if vit:
            return common.seeded_backbone(
                self.vit_backbone, self.seed, self.in_chans, self.image_size
            )
        return common.seeded_backbone(self.backbone, self.seed, self.in_chans)

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


def _num_views(head: heads.SSLHead) -> int:
    return head.num_views + int(head.clean_view)


def make_head(spec: HeadSpec, cfg: Config) -> heads.SSLHead:
    """The head of ``spec`` for ``cfg``'s images (sized as ``SSLModule.setup`` sizes it)."""
    return spec.make(cfg.image_size)


def size_for_data(head: heads.SSLHead, cfg: Config) -> None:
    """What ``SSLModule.setup`` does with a datamodule of ``cfg.image_size`` px images."""
    head.configure_image_size(cfg.image_size)


# ----------------------------------------------------------------------------- runners
class Runner:
    """One implementation of one method; ``run`` trains a block of steps and times them."""

    name = ""

    def run(self, warmup: int, steps: int) -> list[common.Sample]:
        """Train ``warmup + steps`` steps; return (wall, cpu) seconds of the last ``steps``."""
        raise NotImplementedError


class OursRunner(Runner):
    """``SSLModule`` trained by ``lightning.Trainer`` (one short ``fit`` per block)."""

    name = "ours"

    def __init__(self, spec: HeadSpec, cfg: Config, precision: str) -> None:
        self.module = SSLModule(
            cfg.make_backbone(spec.vit), head=make_head(spec, cfg), lr=LR,
            weight_decay=WEIGHT_DECAY,
        )  # fmt: skip
        size_for_data(self.module.head, cfg)  # no datamodule here to do it in setup
        self.batches = cfg.batches(_num_views(self.module.head))
        self.precision = precision

    def trainer(self, max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
        """The Trainer of one block: CPU, nothing but training."""
        return common.cpu_trainer(
            callbacks, max_steps=max_steps, precision=self.precision, limit_val_batches=0
        )

    def run(self, warmup: int, steps: int) -> list[common.Sample]:  # noqa: D102
        stamps = common.BatchClock()  # step = one batch start to the next (the last: to epoch end)
        total = warmup + steps
        self.trainer(total, [stamps]).fit(self.module, common.CycleBatches(self.batches, total))
        return common.durations(stamps.starts + stamps.epoch_ends, steps)


class BareRunner(Runner):
    """The same head module called directly: forward, loss, backward, step, EMA."""

    name = "bare"

    def __init__(self, spec: HeadSpec, cfg: Config, precision: str) -> None:
        self.backbone = cfg.make_backbone(spec.vit)
        self.head = make_head(spec, cfg)
        self.head.check_backbone(self.backbone)
        self.head.build(self.backbone)
        size_for_data(self.head, cfg)
        self.backbone.train()
        self.head.train()
        params = list(self.backbone.named_parameters()) + list(self.head.named_parameters())
        no_decay = set(getattr(self.backbone.model, "no_weight_decay", set)())
        self.opt = torch.optim.AdamW(decay_groups(params, WEIGHT_DECAY, no_decay), lr=LR)
        self.batches = cfg.batches(_num_views(self.head))
        self.autocast = precision.startswith("bf16")
        self.done = 0

    def run(self, warmup: int, steps: int) -> list[common.Sample]:  # noqa: D102
        backbone, head, opt = self.backbone, self.head, self.opt
        stamps = []
        gc.collect()  # as before ours' timed steps
        for views, _labels in common.CycleBatches(self.batches, warmup + steps):
            stamps.append(common.clock())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                out = head(backbone, views)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.done += 1
            head.on_optimizer_step(backbone, min(1.0, self.done / 10_000))
        stamps.append(common.clock())
        return common.durations(stamps, steps)


class BackboneRunner(Runner):
    """The backbone alone at the head's input: forward over its views, backward, step."""

    name = "backbone"

    def __init__(self, spec: HeadSpec, cfg: Config, precision: str) -> None:
        self.backbone = cfg.make_backbone(spec.vit)
        self.backbone.train()
        head = make_head(spec, cfg)
        params = list(self.backbone.named_parameters())
        no_decay = set(getattr(self.backbone.model, "no_weight_decay", set)())
        self.opt = torch.optim.AdamW(decay_groups(params, WEIGHT_DECAY, no_decay), lr=LR)
        self.batches = cfg.batches(head.num_views)  # the augmented views it encodes
        self.autocast = precision.startswith("bf16")

    def run(self, warmup: int, steps: int) -> list[common.Sample]:  # noqa: D102
        stamps = []
        gc.collect()  # as before ours' timed steps
        for views, _labels in common.CycleBatches(self.batches, warmup + steps):
            stamps.append(common.clock())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss = self.backbone(torch.cat(views)).float().square().mean()
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        stamps.append(common.clock())
        return common.durations(stamps, steps)


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

    def run(self, warmup: int, steps: int) -> list[common.Sample]:  # noqa: D102
        stamps = []
        gc.collect()  # as before ours' timed steps
        for views, _labels in common.CycleBatches(self.batches, warmup + steps):
            stamps.append(common.clock())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss = self.step_fn(self.model, views, min(1.0, self.done / 10_000))
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.done += 1
        stamps.append(common.clock())
        return common.durations(stamps, steps)


# ----------------------------------------------------------------------------- lightly
StepFn = Callable[[nn.Module, list[Tensor], float], Tensor]


def _two_view_step(criterion: nn.Module) -> StepFn:
    """lightly's examples: ``head(backbone(view))`` per view, ``criterion(z0, z1)``."""

    def step(m: nn.Module, views: list[Tensor], progress: float) -> Tensor:
        z0 = m["head"](m["backbone"](views[0]))
        z1 = m["head"](m["backbone"](views[1]))
        return criterion(z0, z1)

    return step


def _lightly_simclr(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    model = nn.ModuleDict(
        {"backbone": backbone, "head": SimCLRProjectionHead(backbone.embed_dim, 2048, 128)}
    )
    return model, _two_view_step(NTXentLoss(temperature=0.1))


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
    return model, _two_view_step(VICRegLoss())


def _lightly_barlow(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules import BarlowTwinsProjectionHead

    head = BarlowTwinsProjectionHead(backbone.embed_dim, 2048, 2048)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    return model, _two_view_step(BarlowTwinsLoss(lambda_param=5e-3))


def _lightly_mae(backbone: Backbone) -> tuple[nn.Module, StepFn]:
    from lightly.models import utils
    from lightly.models.modules import (
        MaskedVisionTransformerDecoderTIMM,
        MaskedVisionTransformerTIMM,
    )

    vit = backbone.model
    patch = int(vit.patch_embed.patch_size[0])
    ref = heads.MAE()  # same decoder size and mask ratio as our default head
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


# ----------------------------------------------------------------------------- measure
@dataclass
class Result:
    """Timed steps of one head: ``samples[impl][round]`` lists (wall, cpu) per step."""

    head: str
    samples: dict[str, list[list[common.Sample]]]

    def median(self, impl: str, cpu: bool = False) -> float:
        """Median step time (seconds) over all timed steps of all rounds."""
        return statistics.median(s[int(cpu)] for block in self.samples[impl] for s in block)

    def ratio(self, impl: str, cpu: bool = False, base: str = "ours") -> float:
        """Throughput of ``base`` relative to ``impl`` (> 1: ``base`` is faster)."""
        return self.median(impl, cpu) / self.median(base, cpu)

    def round_ratios(self, impl: str, cpu: bool = False, base: str = "ours") -> list[float]:
        """Per-round paired throughput ratios ``base``/``impl`` (the spread of the estimate)."""
        out = []
        for ours, other in zip(self.samples[base], self.samples[impl], strict=True):
            out.append(
                statistics.median(s[int(cpu)] for s in other)
                / statistics.median(s[int(cpu)] for s in ours)
            )
        return out


def measure_head(name: str, cfg: Config, args: argparse.Namespace, use_lightly: bool) -> Result:
    """Build the implementations of one head and time them alternately."""
    spec = ALL_HEADS[name]
    kinds: list[type[Runner]] = [BareRunner, BackboneRunner]
    if not args.head_cost:
        kinds.insert(0, OursRunner)
        if use_lightly and spec.lightly:
            kinds.append(LightlyRunner)
    runners = [kind(spec, cfg, args.precision) for kind in kinds]
    samples: dict[str, list[list[common.Sample]]] = {r.name: [] for r in runners}
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
def summary(result: Result, batch_size: int) -> dict:
    """The numbers the docs show for one head: images/s, throughput ratios, CPU overhead.

    ``ratios[impl]``: ours/``impl`` wall-clock ratio, its per-round interquartile range
    (``lo``, ``hi``) and the CPU-time ratio.
    """
    ratios = {}
    for impl in ("bare", "lightly"):
        if impl in result.samples:
            rr = sorted(result.round_ratios(impl))
            ratios[impl] = {
                "wall": result.ratio(impl),
                "lo": rr[len(rr) // 4],
                "hi": rr[-1 - len(rr) // 4],
                "cpu": result.ratio(impl, cpu=True),
            }
    return {
        "head": result.head,
        "ips": {k: batch_size / result.median(k) for k in result.samples},
        "ratios": ratios,
        "overhead_ms": 1000 * (result.median("ours", cpu=True) - result.median("bare", cpu=True)),
    }


def head_cost(result: Result, batch_size: int) -> dict:
    """One head's bare step over the backbone-alone step (wall, its IQR, CPU) and images/s."""
    rr = sorted(result.round_ratios("bare", base="backbone"))  # bare / backbone step times
    return {
        "head": result.head,
        "bare_ips": batch_size / result.median("bare"),
        "backbone_ips": batch_size / result.median("backbone"),
        "wall": result.median("bare") / result.median("backbone"),
        "lo": rr[len(rr) // 4],
        "hi": rr[-1 - len(rr) // 4],
        "cpu": result.median("bare", cpu=True) / result.median("backbone", cpu=True),
    }


def head_cost_table(cost: dict | None) -> str:
    """Markdown table of the head-cost rows (or a line saying it was not measured)."""
    if not cost:
        return "(not measured yet: `python benchmarks/speed.py --head-cost`)"
    header = ["head", "head step img/s", "backbone step img/s", "step / backbone (wall)",
              "step / backbone (CPU)"]  # fmt: skip
    cells = [
        [
            r["head"],
            f"{r['bare_ips']:.1f}",
            f"{r['backbone_ips']:.1f}",
            f"{r['wall']:.2f} ({r['lo']:.2f}–{r['hi']:.2f})",
            f"{r['cpu']:.2f}",
        ]
        for r in cost["rows"]
    ]
    return common.markdown_table(header, ["---", *["---:"] * 4], cells)


def table(rows: list[dict]) -> str:
    """Markdown table of medians and ratios (rows from :func:`summary`)."""
    header = [
        "head", "ours img/s", "bare img/s", "lightly img/s", "ours/bare wall", "ours/bare CPU",
        "ours/lightly wall", "ours/lightly CPU", "overhead vs bare, CPU ms/step",
    ]  # fmt: skip
    cells = []
    for r in rows:
        ips, ratio = r["ips"], r["ratios"]
        wall = {k: f"{v['wall']:.2f} ({v['lo']:.2f}–{v['hi']:.2f})" for k, v in ratio.items()}
        cpu = {k: f"{v['cpu']:.2f}" for k, v in ratio.items()}
        cells.append(
            [
                r["head"],
                f"{ips['ours']:.1f}",
                f"{ips['bare']:.1f}",
                f"{ips['lightly']:.1f}" if "lightly" in ips else "—",
                *(d.get(impl, "—") for impl in ("bare", "lightly") for d in (wall, cpu)),
                f"{r['overhead_ms']:+.1f}",
            ]
        )
    return common.markdown_table(header, ["---", *["---:"] * 8], cells)


def plot(results: dict, path: Path) -> None:
    """Grouped bars of median images/s per head and implementation."""
    rows = results["rows"]
    impls = [("ours", "#1f77b4"), ("bare", "#7f7f7f"), ("lightly", "#ff7f0e")]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2))
    width = 0.27
    for j, (impl, colour) in enumerate(impls):
        xs, ys = [], []
        for i, r in enumerate(rows):
            if impl in r["ips"]:
                xs.append(i + (j - 1) * width)
                ys.append(r["ips"][impl])
        ax.bar(xs, ys, width, label=impl, color=colour)
    for i, r in enumerate(rows):
        top = max(r["ips"].values())
        ax.text(i, top * 1.02, f"{r['ratios']['bare']['wall']:.2f}x", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["head"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("training images / s (median)")
    ax.set_title(
        f"Training throughput, CPU, {results['threads']} thread(s), batch "
        f"{results['batch_size']}, {results['image_size']} px\n"
        "(label: ours/bare throughput ratio)",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    common.save_figure(fig, path)


MALLOC = {
    True: "with fixed mmap/trim thresholds (`tune_malloc`: with the default dynamic ones the "
    "bare loop took 3x the page faults of the Trainer run for the same head, ~7% of its "
    "CPU time, purely from the order of allocations)",
    False: "with its default settings",
}


def head_cost_note(cost: dict | None) -> str:
    """The settings line of the head-cost table."""
    if not cost:
        return "not measured yet"
    return (
        f"`{cost['command']}` ({cost['elapsed_s'] / 60:.1f} min): `{cost['backbone']}` "
        f"(`{cost['vit_backbone']}` for MAE), {cost['image_size']} px, {cost['in_chans']} "
        f"channel(s), batch {cost['batch_size']}, precision `{cost['precision']}`, "
        f"{cost['threads']} torch thread(s), {cost['rounds']} interleaved rounds x "
        f"{cost['steps']} timed steps; machine: {cost['machine']}"
    )


def section_text(results: dict) -> str:
    """The markdown section for docs/benchmarks.md, from the stored numbers."""
    cost = results.get("head_cost")
    return common.render(
        "speed",
        results,
        head_cost_table=head_cost_table(cost),
        head_cost_note=head_cost_note(cost),
        lightly=results["lightly"] or "(not installed)",
        lr=f"{results['lr']:g}",
        weight_decay=f"{results['weight_decay']:g}",
        minutes=f"{results['elapsed_s'] / 60:.1f}",
        malloc=MALLOC[results["malloc_tuned"]],
        table=table(results["rows"]),
    )


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks rounds and heads)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="joint-embedding heads, 3 rounds")
    p.add_argument("--heads", nargs="+", choices=list(ALL_HEADS), help="default: all")
    p.add_argument(
        "--head-cost",
        action="store_true",
        help="measure only each head's step over the backbone-alone step (keeps the rest)",
    )
    p.add_argument("--in-chans", type=int, default=3)
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
    common.add_output_options(p, "speed")
    args = common.parse_output_options(p, argv, "speed")
    default = list(ALL_HEADS) if args.head_cost else list(QUICK_HEADS if args.quick else HEADS)
    args.heads = args.heads or default
    args.rounds = args.rounds or (3 if args.quick else 6)
    args.steps = args.steps or (2 if args.quick else 3)
    return args


def measure_all(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Measure every requested head; the numbers the docs section is rendered from."""
    torch.set_num_threads(args.threads)
    malloc_tuned = not args.default_malloc and tune_malloc()
    common.quiet()
    cfg = Config(args.backbone, args.vit_backbone, args.image_size, args.batch_size, args.in_chans)
    use_lightly = not args.no_lightly and common.lightly_version() is not None
    if not args.no_lightly and not use_lightly:
        print(f"lightly not installed (pip install '{LIGHTLY_REQUIREMENT}'): skipping it")
    t0 = time.perf_counter()
    results = [measure_head(name, cfg, args, use_lightly) for name in args.heads]
    cost = {
        "command": common.command("speed", argv),
        "elapsed_s": time.perf_counter() - t0,
        "precision": args.precision,
        "backbone": cfg.backbone,
        "vit_backbone": cfg.vit_backbone,
        "image_size": cfg.image_size,
        "in_chans": cfg.in_chans,
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "steps": args.steps,
        "machine": common.machine_note(),
        "rows": [head_cost(r, cfg.batch_size) for r in results],
    }
    if args.head_cost:  # the stored throughput table stays as it was measured
        stored = common.load_json(args.json) if args.json.is_file() else {}
        return {**stored, "head_cost": cost}
    return {
        "command": common.command("speed", argv),
        "elapsed_s": time.perf_counter() - t0,
        "lightly": common.lightly_version(),
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "precision": args.precision,
        "backbone": cfg.backbone,
        "vit_backbone": cfg.vit_backbone,
        "image_size": cfg.image_size,
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "malloc_tuned": malloc_tuned,
        "machine": common.machine_note(),
        "img": str(Path("img") / args.img.name),
        "rows": [summary(r, cfg.batch_size) for r in results if r.head in HEADS],
        "head_cost": cost,
    }


def main(argv: list[str] | None = None) -> None:
    """Measure every requested head (unless ``--report-only``), write the table and chart."""
    args = parse_args(argv)
    results = common.load_json(args.json) if args.report_only else measure_all(args, argv)
    print(table(results["rows"]) if "rows" in results else "(no throughput table stored)")
    print(head_cost_table(results.get("head_cost")))
    print(f"done in {results.get('head_cost', results)['elapsed_s'] / 60:.1f} min")
    draw = None if args.head_cost else (lambda: plot(results, args.img))  # keep the stored chart
    common.publish(args, results, lambda: section_text(results), draw)


if __name__ == "__main__":
    main()
