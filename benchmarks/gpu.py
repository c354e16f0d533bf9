"""GPU run: every head's training throughput and peak memory at 224 px against the backbone
alone, and the loader's rate from 2048 x 2048 16-bit TIFF crops. One CUDA GPU, < 5 minutes.

Per head (a bare loop: forward, loss, backward, fused ``AdamW.step``, EMA update), in
``bf16-mixed`` (``torch.autocast(bfloat16)``, float32 weights, losses in float32) with
CNN backbones and inputs in ``channels_last``: images/s (source images; each brings the
head's views) and peak GPU memory, eager and with ``torch.compile`` of the whole step's
forward (where compiling fails, or the time budget is spent, the row says so and the eager
row stands). Against it: the backbone's own step at the same batch and input (forward over
the head's augmented views, mean-square dummy loss, backward, the same optimizer), in the
same mode; the goal is a ratio >= 0.9.

Loader: ``FactoryDataModule(crop_size=224, image_size=224)`` over 2048 x 2048 16-bit TIFF
frames (deflate + predictor, as ``loader_throughput.py`` writes them), two ``surface`` views
per sample, ``--workers`` workers, from disk and from the in-memory cache: images/s,
against the fastest training rate above (the goal: the loader is faster).

Real path (``benchmarks/real_path.py``): the objects ``lit-ssl fit --config recipes/vicreg.yaml``
builds (``LitSSLCLI(run=False)``: the recipe's module, data module, trainer and callbacks, size
overrides only) on 2048 x 2048 16-bit TIFF frames (cached and from disk) and on 1024 x 1024 RGB
PNGs, with the augmentation in the CPU workers or on the device, against the bare VICReg step
of the same backbone; with the run's ``perf/data_wait``. Goal: >= 0.85 for resnet50 at 224 px.

Writes a markdown page (``--output``, default docs/gpu_run.md) and prints it. Without CUDA it
prints one line and exits with status 2 (``--device cpu`` runs the same code on the CPU with
tiny settings, to check the script itself: its numbers mean nothing).

    python benchmarks/gpu.py                              # docs/gpu_run.md, about 6 minutes
    python benchmarks/gpu.py --output /tmp/gpu.md --heads VICReg MAE --no-compile
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import torch
from torch import Tensor

from lit_ssl import heads
from lit_ssl.backbone import Backbone
from lit_ssl.data import FactoryDataModule
from lit_ssl.optim import decay_groups

LR, WEIGHT_DECAY, GOAL = 1e-3, 0.05, 0.9
NO_CUDA = (
    "benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False): nothing "
    "measured. Run it on a GPU machine (or --device cpu to check the script itself)."
)

HEADS: dict[str, tuple[Callable[[], heads.SSLHead], bool]] = {  # name -> (make, needs a ViT)
    "SimCLR": (lambda: heads.SimCLR(), False),
    "BYOL": (lambda: heads.BYOL(), False),
    "VICReg": (lambda: heads.VICReg(), False),
    "BarlowTwins": (lambda: heads.BarlowTwins(), False),
    "MAE": (lambda: heads.MAE(), True),
    "MaskedReconstruction": (lambda: heads.MaskedReconstruction(), False),
    "DenoisingAutoencoder": (lambda: heads.DenoisingAutoencoder(), False),
    "LatentPrediction": (lambda: heads.LatentPrediction(), False),
    "Hybrid": (lambda: heads.Hybrid(heads.MaskedReconstruction(), heads.VICReg()), False),
}


@dataclass
class Settings:
    """What every measurement shares."""

    device: torch.device
    backbone: str
    vit_backbone: str
    image_size: int
    in_chans: int
    batch_size: int
    warmup: int
    steps: int
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started


# ----------------------------------------------------------------------------- steps
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_backbone(cfg: Settings, vit: bool) -> Backbone:
    torch.manual_seed(0)
    if vit:
        backbone = Backbone(cfg.vit_backbone, cfg.in_chans, image_size=cfg.image_size)
    else:
        backbone = Backbone(cfg.backbone, cfg.in_chans)
        backbone.to(memory_format=torch.channels_last)
    return backbone.to(cfg.device).train()


def _views(cfg: Settings, count: int, channels_last: bool) -> list[Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (cfg.batch_size, cfg.in_chans, cfg.image_size, cfg.image_size)
    views = [torch.rand(shape, generator=gen).to(cfg.device) for _ in range(count)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [v.contiguous(memory_format=fmt) for v in views]


def _optimizer(modules: list[torch.nn.Module], device: torch.device) -> torch.optim.Optimizer:
    params = [(n, p) for m in modules for n, p in m.named_parameters()]
    groups = decay_groups(params, WEIGHT_DECAY, set())
    for group in groups:
        group.pop("lars_exclude", None)
    return torch.optim.AdamW(groups, lr=LR, fused=device.type == "cuda")


@dataclass
class Step:
    """One training step as a closure, and what it trains (for its optimizer)."""

    loss: Callable[[], Tensor]
    modules: list[torch.nn.Module]
    after: Callable[[], None] = lambda: None


def head_step(cfg: Settings, name: str) -> Step:
    """The bare training step of head ``name`` on fixed views (sized for the data)."""
    make, vit = HEADS[name]
    backbone, head = _fresh_backbone(cfg, vit), make()
    head.check_backbone(backbone)
    head.build(backbone)
    head.configure_image_size(cfg.image_size)  # what SSLModule.setup does with a datamodule
    head.to(cfg.device).train()
    views = _views(cfg, head.num_views + int(head.clean_view), channels_last=not vit)
    return Step(
        loss=lambda: head(backbone, views).loss,
        modules=[backbone, head],
        after=lambda: head.on_optimizer_step(backbone, 0.5),
    )


def backbone_step(cfg: Settings, name: str) -> Step:
    """The backbone alone at head ``name``'s input: its augmented views, a dummy loss."""
    make, vit = HEADS[name]
    backbone = _fresh_backbone(cfg, vit)
    views = _views(cfg, make().num_views, channels_last=not vit)
    return Step(loss=lambda: backbone(torch.cat(views)).float().square().mean(), modules=[backbone])


def _run(step: Step, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], Tensor]) -> None:
    with torch.autocast(optimizer_device(optimizer), dtype=torch.bfloat16):  # bf16-mixed
        loss = loss_fn()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step.after()


def optimizer_device(optimizer: torch.optim.Optimizer) -> str:
    """The device type of the optimizer's parameters (autocast's ``device_type``)."""
    return optimizer.param_groups[0]["params"][0].device.type


def measure(cfg: Settings, step: Step, compiled: bool) -> dict:
    """Images/s and peak memory of ``step`` (``compiled``: its forward through torch.compile).

    Raises whatever compiling raises (the caller reports it and keeps the eager row).
    """
    gc.collect()
    if cfg.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(cfg.device)
    optimizer = _optimizer(step.modules, cfg.device)
    loss_fn = torch.compile(step.loss) if compiled else step.loss
    for _ in range(cfg.warmup):  # compiles here (forward and backward graphs)
        _run(step, optimizer, loss_fn)
    _sync(cfg.device)
    times = []
    for _ in range(cfg.steps):
        start = time.perf_counter()
        _run(step, optimizer, loss_fn)
        _sync(cfg.device)  # per step: the median needs each step's time
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(cfg.device) if cfg.device.type == "cuda" else None
    if compiled:
        torch.compiler.reset()  # drop the graphs (and the modules they hold)
    return {"ips": cfg.batch_size / statistics.median(times), "peak_gib": _gib(peak)}


def _gib(value: int | None) -> float | None:
    return None if value is None else value / 2**30


# ----------------------------------------------------------------------------- heads
def head_rows(cfg: Settings, names: list[str], compile_: bool, budget_s: float) -> list[dict]:
    """Every head eager, then compiled while the budget lasts, each with its baseline."""
    baselines: dict[tuple, dict] = {}
    rows = []
    for mode in ["eager", "compiled"] if compile_ else ["eager"]:
        for name in names:
            row = {"head": name, "mode": mode, "note": ""}
            if cfg.elapsed() > budget_s:
                rows.append({**row, "note": "skipped: time budget (--budget-s)"})
                continue
            try:
                row.update(_head_row(cfg, name, mode == "compiled", baselines))
            except Exception as err:  # torch.compile's failures vary by version and model
                if mode == "eager":
                    raise
                torch.compiler.reset()
                text = str(err).strip()
                first = text.splitlines()[0][:120] if text else ""
                row["note"] = f"torch.compile failed ({type(err).__name__}: {first}); see eager"
            rows.append(row)
            print(_row_line(row), flush=True)
    return rows


def _head_row(cfg: Settings, name: str, compiled: bool, baselines: dict) -> dict:
    _, vit = HEADS[name]
    key = (vit, HEADS[name][0]().num_views, compiled)
    if key not in baselines:
        baselines[key] = measure(cfg, backbone_step(cfg, name), compiled)
    head = measure(cfg, head_step(cfg, name), compiled)
    base = baselines[key]
    return {
        "ips": head["ips"],
        "peak_gib": head["peak_gib"],
        "backbone_ips": base["ips"],
        "backbone_peak_gib": base["peak_gib"],
        "ratio": head["ips"] / base["ips"],
    }


def _row_line(row: dict) -> str:
    if "ips" not in row:
        return f"  {row['head']:<21} {row['mode']:<8} {row['note']}"
    return (
        f"  {row['head']:<21} {row['mode']:<8} {row['ips']:8.1f} img/s, backbone "
        f"{row['backbone_ips']:8.1f} img/s, ratio {row['ratio']:.2f}"
    )


# ----------------------------------------------------------------------------- loader
def loader_rows(cfg: Settings, workers: int, frames: int, batches: int, scratch: Path) -> list:
    """Two-view loader images/s from 2048 x 2048 16-bit TIFF crops, from disk and cached."""
    import loader_throughput  # its frame writer (2048 x 2048, 12 bits in 16, deflate)

    root = loader_throughput.write_frames(scratch / "frames", frames, distinct=min(frames, 8))
    rows = []
    for cache in (False, True):
        dm = FactoryDataModule(
            root=str(root),
            crop_size=cfg.image_size,
            image_size=cfg.image_size,
            in_chans=cfg.in_chans,
            batch_size=cfg.batch_size,
            num_workers=workers,
            val_fraction=0.0,
            test_fraction=0.0,
            cache_images=cache,
            cache_limit_mb=frames * 8.5 + 64,
            verify_files=False,
        )
        dm.setup("fit")
        dm.configure_views(2)
        rows.append({"cache": "memory" if cache else "disk", **_loader_rate(dm, batches)})
    return rows


def _loader_rate(dm: FactoryDataModule, batches: int) -> dict:
    loader = dm.train_dataloader()
    it = iter(_forever(loader))
    next(it)  # starts the workers
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return {"ips": batches * dm.hparams.batch_size / (time.perf_counter() - start)}


def _forever(loader):
    while True:
        yield from loader


# ----------------------------------------------------------------------------- real path
def real_rows(cfg: Settings, args: argparse.Namespace, scratch: Path) -> list[dict]:
    """Every ``real_path.cases`` run, with the bare VICReg step of its backbone."""
    import loader_throughput
    import real_path

    if not args.real_backbones:
        return []
    small = cfg.device.type == "cpu"  # the dry run: tiny frames, a few steps
    folders = {
        "tiff": loader_throughput.write_frames(scratch / "tiff", args.frames, min(args.frames, 8)),
        "png": real_path.write_pngs(scratch / "png", args.pngs, 128 if small else 1024),
    }
    settings = {
        "image_size": cfg.image_size, "batch_size": cfg.batch_size, "workers": args.workers,
        "warmup": cfg.warmup, "steps": args.real_steps, "in_chans": cfg.in_chans,
        "accelerator": "gpu" if cfg.device.type == "cuda" else "cpu",
    }  # fmt: skip
    bare = {b: _bare_vicreg(cfg, b) for b in args.real_backbones}
    rows = []
    for case in real_path.cases(args.real_backbones):
        measured = real_path.real_rate(case, folders[case.data], settings, scratch / "runs")
        row = {**vars(case), **measured, "bare_ips": bare[case.backbone]}
        rows.append(row)
        print(f"  real path {case}: {measured}", flush=True)
    return rows


def _bare_vicreg(cfg: Settings, backbone: str) -> float:
    same = Settings(
        cfg.device, backbone, cfg.vit_backbone, cfg.image_size, cfg.in_chans,
        cfg.batch_size, cfg.warmup, cfg.steps,
    )  # fmt: skip
    return measure(same, head_step(same, "VICReg"), compiled=False)["ips"]


def real_table(rows: list[dict]) -> str:
    """The real-path markdown table."""
    header = [
        "backbone", "frames", "cache", "augment_on", "precision", "images/s",
        "bare VICReg step images/s", "real / bare (goal >= 0.85)", "perf/data_wait",
    ]  # fmt: skip
    cells = []
    for r in rows:
        ratio = None if not r["ips"] else r["ips"] / r["bare_ips"]
        frames = "2048² 16-bit TIFF" if r["data"] == "tiff" else "1024² RGB PNG"
        cells.append(
            [
                r["backbone"], frames, "memory" if r["cache"] else "disk", r["augment_on"],
                r["precision"], _cell(r["ips"], ".0f"), _cell(r["bare_ips"], ".0f"),
                _cell(ratio, ".2f"), _cell(r["data_wait"], ".2f"),
            ]
        )  # fmt: skip
    return common.markdown_table(header, ["---"] * 5 + ["---:"] * 4, cells)


def real_section(rows: list[dict], cfg: Settings) -> str:
    """The "Real path" section of the page (empty without rows)."""
    if not rows:
        return ""
    return "\n".join(
        [
            "",
            "## Real path",
            "",
            "The objects `lit-ssl fit --config recipes/vicreg.yaml` builds (the recipe's "
            f"module, data module, trainer and callbacks), {cfg.image_size} px windows, batch "
            f"{cfg.batch_size}, against the bare VICReg step of the same backbone.",
            "",
            real_table(rows),
            "",
        ]
    )


# ----------------------------------------------------------------------------- report
def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def head_table(rows: list[dict]) -> str:
    """The per-head markdown table."""
    header = [
        "head", "mode", "images/s", "backbone images/s", "head / backbone (goal >= 0.9)",
        "peak memory GiB", "backbone peak GiB", "note",
    ]  # fmt: skip
    cells = []
    for r in rows:
        if "ips" not in r:
            cells.append([r["head"], r["mode"], "—", "—", "—", "—", "—", r["note"]])
            continue
        ok = "" if r["ratio"] >= GOAL else " (below)"
        cells.append(
            [
                r["head"],
                r["mode"],
                f"{r['ips']:.0f}",
                f"{r['backbone_ips']:.0f}",
                f"{r['ratio']:.2f}{ok}",
                _cell(r["peak_gib"], ".1f"),
                _cell(r["backbone_peak_gib"], ".1f"),
                r["note"],
            ]
        )
    return common.markdown_table(header, ["---", "---", *["---:"] * 5, "---"], cells)


def loader_table(rows: list[dict], training_ips: float | None, workers: int) -> str:
    """The loader markdown table, against the fastest training rate measured."""
    header = ["frames read from", "workers", "loader images/s", "fastest training images/s",
              "loader / training (goal > 1)"]  # fmt: skip
    cells = [
        [
            r["cache"],
            str(workers),
            f"{r['ips']:.0f}",
            _cell(training_ips, ".0f"),
            "—" if not training_ips else f"{r['ips'] / training_ips:.2f}",
        ]
        for r in rows
    ]
    return common.markdown_table(header, ["---", *["---:"] * 4], cells)


def page(cfg: Settings, args: argparse.Namespace, argv, heads_: list, loader: list) -> str:
    """The markdown page of one run."""
    device = (
        torch.cuda.get_device_name(cfg.device) if cfg.device.type == "cuda" else "CPU (dry run)"
    )
    fastest = max((r["ips"] for r in heads_ if "ips" in r), default=None)
    lines = [
        "# GPU run",
        "",
        f"* Command: `{common.command('gpu', argv)}` ({cfg.elapsed() / 60:.1f} min)",
        f"* Device: {device}; torch {torch.__version__}",
        f"* Backbones: `{cfg.backbone}` (CNN heads, channels_last), `{cfg.vit_backbone}` (MAE); "
        f"{cfg.image_size} px, {cfg.in_chans} channel(s), batch {cfg.batch_size} source "
        f"images; bf16 autocast; {cfg.warmup} warm-up + {cfg.steps} timed steps (median).",
        "",
        "## Heads",
        "",
        head_table(heads_),
        "",
        "## Loader",
        "",
        f"2048 x 2048 16-bit TIFF frames, `crop_size={cfg.image_size}`, two views per sample, "
        f"{args.frames} frames, {args.loader_batches} timed batches of {cfg.batch_size}.",
        "",
        loader_table(loader, fastest, args.workers),
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=common.DOCS / "gpu_run.md")
    p.add_argument("--heads", nargs="+", choices=list(HEADS), default=list(HEADS))
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--vit-backbone", default="vit_small_patch16_224")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--in-chans", type=int, default=1, help="1: mono factory images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="eager rows only")
    p.add_argument(
        "--budget-s", type=float, default=200.0, help="no new head row after this many seconds"
    )
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--frames", type=int, default=32, help="2048 x 2048 TIFF frames")
    p.add_argument("--loader-batches", type=int, default=8)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--real-backbones", nargs="*", default=["resnet50", "resnet18"])
    p.add_argument("--real-steps", type=int, default=30, help="timed steps of each real run")
    p.add_argument("--pngs", type=int, default=64, help="1024 x 1024 RGB PNG files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure and write the page; 2 (one line on stderr) when there is no CUDA GPU."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    common.quiet()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = Settings(
        torch.device(args.device), args.backbone, args.vit_backbone, args.image_size,
        args.in_chans, args.batch_size, args.warmup, args.steps,
    )  # fmt: skip
    rows = head_rows(cfg, args.heads, not args.no_compile, args.budget_s)
    with tempfile.TemporaryDirectory() as scratch:
        loader = loader_rows(cfg, args.workers, args.frames, args.loader_batches, Path(scratch))
        real = real_rows(cfg, args, Path(scratch))
    text = page(cfg, args, argv, rows, loader) + real_section(real, cfg)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"wrote {args.output} in {cfg.elapsed() / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
