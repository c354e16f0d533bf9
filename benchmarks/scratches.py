"""Benchmark: why the quickstart's SSL backbone misses scratches (issue 27), one change at a time.

On the embedded synthetic data (brushed metal, 64 px; defect types scratch, crack, spot, hole,
contamination), each variant changes ONE thing against the quickstart baseline (VICReg, 25
epochs, resnet10t at 64 px, the ``surface`` policy, detector layers [1, 2]): a policy
component dropped (flips/rot90, affine, noise, illumination/exposure), the head
(MaskedReconstruction, Hybrid of MaskedReconstruction + VICReg), the training length, the
input resolution (data generated at 96 px) or the detector's layers. Per variant and seed:

- the ``AnomalyDetector`` (bank from train/good, ``lit_ssl.cli.quickstart.anomaly``) on the
  pretrained backbone: image AUROC of each defect type against good, on every image of the
  test folder (40 per type; the quickstart's own 20% test split is stored beside it);
- with ``--classifier``: the quickstart's fine-tuned SSL classifier
  (``lit_ssl.cli.quickstart.finetune``): recall of each type at its stored threshold.

Random initialisations (``random`` variants) are the reference. Pretrained backbones are kept
under ``--work`` and every finished (variant, seed, metric) is stored in docs/scratches.json at
once, so a rerun resumes. Writes the "Scratches" section of docs/benchmarks.md (prose:
benchmarks/templates/scratches.md).

    python benchmarks/scratches.py --screen          # all variants, seeds 0 1, detector only
    python benchmarks/scratches.py --variants baseline no_flips --seeds 0 1 2 --classifier
    python benchmarks/scratches.py --smoke --no-write   # smoke run (< 1 min)
    python benchmarks/scratches.py --report-only     # re-render from the JSON
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import albumentations as A
import lightning as L
import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.classification import binary_auroc

from lit_ssl.augment.policies import policy, save_policy
from lit_ssl.backbone import Backbone
from lit_ssl.cli import quickstart as qs
from lit_ssl.data.synthetic import DEFECTS, default_dataset, generate_image

NAME = "scratches"
TYPES = DEFECTS
RANDOM_SEEDS = (0, 1, 2, 3, 4, 5)  # random initialisations of the reference row


@dataclass(frozen=True)
class Variant:
    """One change against the baseline.

    Attributes:
        label: What changed, as the table says it.
        config: QuickstartConfig overrides.
        drop: Transform class names removed from the ``surface`` preset.
        data_size: Side of the generated images (the quickstart's ``image_size`` follows).
        pretrained: False: the random initialisation (no pretraining).
    """

    label: str
    config: dict = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    data_size: int = 64
    pretrained: bool = True


ILLUMINATION = ("IlluminationGradient", "Vignetting", "RandomBrightnessContrast", "RandomGamma")
SAME_BANK = 0.025  # layers [0, 1]: 4x the patches of [1, 2]; a quarter of the fraction keeps
# the bank (and the coreset time) the size of the baseline's
VARIANTS: dict[str, Variant] = {
    "baseline": Variant("quickstart baseline (VICReg, surface, 25 ep, 64 px, layers [1, 2])"),
    "random": Variant("random initialisation, layers [1, 2]", pretrained=False),
    "layers_01": Variant(
        "detector layers [0, 1] (same bank size)",
        {"detector_layers": (0, 1), "coreset_fraction": SAME_BANK},
    ),
    "random_01": Variant(
        "random initialisation, layers [0, 1] (same bank size)",
        {"detector_layers": (0, 1), "coreset_fraction": SAME_BANK},
        pretrained=False,
    ),
    "layers_23": Variant("detector layers [2, 3]", {"detector_layers": (2, 3)}),
    "no_flips": Variant(
        "policy without flips/rot90", drop=("HorizontalFlip", "VerticalFlip", "RandomRotate90")
    ),
    "px96": Variant("data and input at 96 px", {"image_size": 96}, data_size=96),
    "random_px96": Variant(
        "random initialisation, 96 px", {"image_size": 96}, data_size=96, pretrained=False
    ),
    "up96": Variant("64 px data upsampled to a 96 px input", {"image_size": 96}),
    "random_up96": Variant(
        "random initialisation, 64 px data upsampled to 96 px", {"image_size": 96}, pretrained=False
    ),
    "masked": Variant(
        "head MaskedReconstruction (8 px patches)", {"head": "masked_reconstruction"}
    ),
    "hybrid": Variant("head Hybrid (MaskedReconstruction + VICReg)", {"head": "hybrid"}),
    "no_affine": Variant("policy without the affine (shift/scale)", drop=("Affine",)),
    "no_noise": Variant("policy without sensor noise", drop=("PoissonGaussianNoise",)),
    "no_illumination": Variant(
        "policy without illumination/exposure (gradient, vignetting, brightness, gamma)",
        drop=ILLUMINATION,
    ),
    "random_23": Variant(
        "random initialisation, layers [2, 3]", {"detector_layers": (2, 3)}, pretrained=False
    ),
    "epochs_50": Variant("50 pretraining epochs", {"ssl_epochs": 50}),
}
SCREEN = (  # in order of what the hypotheses need first
    "baseline",
    "random",
    "layers_01",
    "random_01",
    "random_px96",
    "random_up96",
    "no_flips",
    "up96",
    "masked",
    "px96",
    "hybrid",
    "no_affine",
    "no_noise",
    "no_illumination",
    "layers_23",
    "random_23",
    "epochs_50",
)
# random variants whose classifier row is the quickstart's "supervised from scratch"
SUPERVISED = ("random", "random_px96", "random_up96")
# variants that share the baseline's pretrained backbone (only the detector differs)
DETECTOR_ONLY = {"detector_layers", "coreset_fraction"}


def config(name: str, work: Path, smoke: bool = False) -> qs.QuickstartConfig:
    """The quickstart configuration of variant ``name`` (its policy YAML written to ``work``)."""
    variant = VARIANTS[name]
    cfg = qs.QuickstartConfig.fast() if smoke else qs.QuickstartConfig()
    overrides = dict(variant.config)
    if smoke and "image_size" in overrides:
        overrides["image_size"] = cfg.image_size
    cfg = replace(cfg, **overrides)
    if variant.drop:
        path = work / "policies" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        surface = policy("surface", cfg.image_size)
        kept = [t for t in surface.transforms if type(t).__name__ not in variant.drop]
        missing = set(variant.drop) - {type(t).__name__ for t in surface.transforms}
        if missing:
            raise ValueError(f"{name}: the surface preset has no {sorted(missing)}")
        save_policy(A.Compose(kept, strict=True), path)
        cfg = replace(cfg, policy=str(path))
    return cfg


def pretrain_key(name: str) -> str:
    """The variant whose pretrained backbone ``name`` uses (detector-only variants share)."""
    variant = VARIANTS[name]
    if set(variant.config) <= DETECTOR_ONLY and not variant.drop:
        return "baseline"
    return name


def dataset(name: str, smoke: bool) -> Path:
    """The embedded synthetic data the variant runs on (the smoke run: the 64 px default)."""
    return default_dataset(nuisance=0.5, image_size=64 if smoke else VARIANTS[name].data_size)


# ----------------------------------------------------------------------------- measuring
def survival(n: int = 40, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per defect type on 64 px metal: the defect's peak contrast, and the share of its peak
    and of its energy that the ``surface`` preset's Affine keeps (the warp is linear, so it is
    measured on the defect's own difference image). Seconds of CPU, no training."""
    rng = np.random.default_rng(seed)
    affine = next(t for t in policy("surface", 64).transforms if type(t).__name__ == "Affine")
    warp = A.Compose([replace_p(affine)], strict=True)
    warp.set_random_seed(seed)
    out = {}
    for kind in TYPES:
        peak, kept, energy = [], [], []
        for _ in range(n):
            sample = generate_image(rng, "metal", kind, 64, nuisance=0.0)
            delta = sample.defect_delta[:, :, 0]
            warped = warp(image=delta)["image"]
            peak.append(float(np.abs(delta).max()))
            kept.append(float(np.abs(warped).max() / np.abs(delta).max()))
            energy.append(float((warped**2).sum() / (delta**2).sum()))
        out[kind] = {
            "peak": statistics.median(peak),
            "affine_peak_kept": statistics.median(kept),
            "affine_energy_kept": statistics.median(energy),
        }
    return out


def replace_p(transform: A.BasicTransform) -> A.BasicTransform:
    """A copy of ``transform`` that always applies."""
    clone = A.from_dict({"transform": A.to_dict(transform)["transform"]})
    clone.p = 1.0
    return clone


def backbone_file(name: str, seed: int, args: argparse.Namespace) -> Path | None:
    """The pretrained backbone of (variant, seed), trained once and kept under ``--work``."""
    if not VARIANTS[name].pretrained:
        return None
    key = pretrain_key(name)
    folder = args.work / key / f"seed_{seed}"
    path = folder / "pretrain" / "backbone.safetensors"
    if not path.is_file():
        cfg = config(key, args.work, args.smoke)
        start = time.perf_counter()
        qs.pretrain(cfg, dataset(key, args.smoke), folder, seed)
        (folder / "pretrain_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return path


def _images(folder: Path, size: int) -> torch.Tensor:
    """Every PNG of ``folder`` as the detector sees it in fit and test: the ``minimal``
    policy (float in [0, 1], letterboxed to ``size``), ``N x 3 x size x size``."""
    resize = policy("minimal", size)
    arrays = [
        resize(image=np.asarray(Image.open(file).convert("RGB")))["image"]
        for file in sorted(folder.glob("*.png"))
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def detect(name: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """The detector on (variant, seed): per-type AUROC on the whole test folder and, as
    ``split/...``, the quickstart's own numbers on its test split."""
    cfg = config(name, args.work, args.smoke)
    root = dataset(name, args.smoke)
    weights = backbone_file(name, seed, args)
    # as lit_ssl.cli.quickstart.anomaly, with the detector kept in hand to score every image
    L.seed_everything(seed, workers=True, verbose=False)
    detector = qs.anomaly_detector(cfg, weights, save_figures=False, write_predictions=False)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    data = qs._data(cfg, root, "anomaly", seed)
    trainer.fit(detector, datamodule=data)
    (split,) = trainer.test(detector, datamodule=data, verbose=False)
    detector.eval()
    scores = {}
    with torch.no_grad():
        for kind in ("good", *TYPES):
            images = _images(root / "test" / kind, cfg.image_size)
            scores[kind] = torch.cat([detector(b)[1] for b in images.split(64)])
    prefix = "test/auroc_vs_good/"
    out = {
        f"split/auroc/{k[len(prefix) :]}": float(v)
        for k, v in split.items()
        if k.startswith(prefix)
    }
    for kind in TYPES:
        values = torch.cat([scores["good"], scores[kind]])
        labels = torch.cat([torch.zeros_like(scores["good"]), torch.ones_like(scores[kind])])
        out[f"auroc/{kind}"] = float(binary_auroc(values, labels.long()))
    return out


def classify(name: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """The quickstart's fine-tuned SSL classifier on (variant, seed): its test metrics. On a
    random variant: the quickstart's "supervised from scratch" row (same data, labels, rule)."""
    cfg = config(name, args.work, args.smoke)
    weights = backbone_file(name, seed, args)
    folder = args.work / name / f"seed_{seed}"
    root = dataset(name, args.smoke)
    if weights is None:
        return qs.finetune(cfg, root, folder, "supervised_scratch", None, "scratch", seed)
    backbone = Backbone(cfg.backbone, image_size=cfg.image_size, weights=str(weights))
    return qs.finetune(cfg, root, folder, "finetune_ssl", backbone, "finetune", seed)


def measure(args: argparse.Namespace, results: dict) -> dict:
    """Every missing (variant, seed, metric) of the request; stored after each one."""
    runs = results.setdefault("runs", {})
    if "survival" not in results:
        results["survival"] = survival()
    jobs = []  # seed-major: a cut-short run still has every variant on the first seed
    for seed in args.seeds:
        for name in args.variants:
            jobs.append((name, seed, "detector"))
            if args.classifier and (VARIANTS[name].pretrained or name in SUPERVISED):
                jobs.append((name, seed, "classifier"))
    if args.screen and "random" in args.variants:
        jobs += [("random", seed, "detector") for seed in RANDOM_SEEDS if seed not in args.seeds]
    for name, seed, metric in jobs:
        key = f"{name}|{seed}|{metric}"
        if key in runs:
            continue
        start = time.perf_counter()
        fn = detect if metric == "detector" else classify
        runs[key] = fn(name, seed, args) | {"seconds": time.perf_counter() - start}
        scratch = runs[key].get("auroc/scratch", runs[key].get("recall/scratch"))
        print(f"{key}: scratch {scratch:.3f} ({runs[key]['seconds']:.0f} s)", flush=True)
        if not args.no_write:
            results["machine"] = common.machine_note()
            common.save_json(args.json, results)
    return results


# ----------------------------------------------------------------------------- report
def spread(values: Sequence[float]) -> str:
    """``median [min, max]`` (one value: itself)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def _values(runs: dict, name: str, metric: str, key: str) -> list[float]:
    prefix = f"{name}|"
    return [
        r[key]
        for k, r in sorted(runs.items())
        if k.startswith(prefix) and k.endswith(f"|{metric}") and key in r
    ]


def _seeds(runs: dict, name: str, metric: str) -> list[int]:
    return sorted(
        int(k.split("|")[1]) for k in runs if k.startswith(f"{name}|") and k.endswith(metric)
    )


def detector_table(runs: dict, names: Sequence[str], prefix: str = "auroc/") -> str:
    """Per-type detector AUROC against good, one row per variant with results."""
    rows = []
    for name in names:
        seeds = _seeds(runs, name, "detector")
        if not seeds:
            continue
        cells = [spread(_values(runs, name, "detector", prefix + t)) for t in TYPES]
        rows.append([f"`{name}`: {VARIANTS[name].label}", ",".join(map(str, seeds)), *cells])
    return common.markdown_table(
        ["variant", "seeds", *TYPES], ["---", "---", *["---:"] * len(TYPES)], rows
    )


def classifier_table(runs: dict, names: Sequence[str]) -> str:
    """Per-type recall of the fine-tuned SSL classifier at its stored threshold."""
    rows = []
    for name in names:
        seeds = _seeds(runs, name, "classifier")
        if not seeds:
            continue
        cells = [spread(_values(runs, name, "classifier", f"recall/{t}")) for t in TYPES]
        cells.append(spread(_values(runs, name, "classifier", "auroc")))
        epochs = _values(runs, name, "classifier", "best_epoch")
        cells.append(",".join(f"{e:.0f}" for e in epochs))
        label = "supervised from scratch" if name in SUPERVISED else "SSL, fine-tuned"
        rows.append([f"`{name}` ({label})", ",".join(map(str, seeds)), *cells])
    header = ["variant", "seeds", *(f"recall {t}" for t in TYPES), "AUROC", "best epoch"]
    return common.markdown_table(header, ["---", "---", *["---:"] * (len(TYPES) + 2)], rows)


def survival_table(numbers: dict) -> str:
    """What the ``surface`` preset's Affine keeps of each defect type (from :func:`survival`)."""
    rows = [
        [t, f"{v['peak']:.2f}", f"{v['affine_peak_kept']:.2f}", f"{v['affine_energy_kept']:.2f}"]
        for t, v in numbers.items()
    ]
    header = ["defect", "peak contrast", "Affine keeps: peak", "Affine keeps: energy"]
    return common.markdown_table(header, ["---", "---:", "---:", "---:"], rows)


def verdict(runs: dict) -> str:
    """The numbers the written verdict rests on: scratch AUROC medians against the baseline
    and the random median, and the largest loss on another type."""
    base = {t: _values(runs, "baseline", "detector", f"auroc/{t}") for t in TYPES}
    rand = _values(runs, "random", "detector", "auroc/scratch")
    if not base["scratch"] or not rand:
        return "Not enough runs for a verdict yet."
    lines = [
        f"Baseline scratch AUROC {statistics.median(base['scratch']):.2f}; random "
        f"initialisations {statistics.median(rand):.2f} (median of {len(rand)})."
    ]
    for name in VARIANTS:
        if name in ("baseline", "random") or not VARIANTS[name].pretrained:
            continue
        values = {t: _values(runs, name, "detector", f"auroc/{t}") for t in TYPES}
        if not values["scratch"]:
            continue
        others = [
            statistics.median(values[t]) - statistics.median(base[t])
            for t in TYPES
            if t != "scratch" and values[t]
        ]
        gain = statistics.median(values["scratch"]) - statistics.median(base["scratch"])
        lines.append(
            f"- `{name}`: scratch {statistics.median(values['scratch']):.2f} "
            f"({gain:+.2f} vs baseline); worst other type {min(others):+.2f}"
        )
    return "\n".join(lines)


def section(results: dict) -> str:
    runs = results.get("runs", {})
    confirmed = [n for n in VARIANTS if _seeds(runs, n, "classifier")]
    return common.render(
        NAME,
        results,
        screen=detector_table(runs, list(VARIANTS)),
        screen_split=detector_table(runs, list(VARIANTS), "split/auroc/"),
        confirm_classifier=classifier_table(runs, confirmed) if confirmed else "(none yet)",
        confirm_detector=detector_table(runs, confirmed) if confirmed else "(none yet)",
        measured=verdict(runs),
        survival=survival_table(results["survival"]) if "survival" in results else "(not run)",
        verdict_text=results.get("verdict_text", "(no written verdict stored yet)"),
        commands="\n".join(results.get("commands", [])),
        machine=results.get("machine", "?"),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--variants", nargs="+", default=["baseline"], choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--screen", action="store_true", help="all variants, seeds 0 1, detector only"
    )
    parser.add_argument("--classifier", action="store_true", help="also the fine-tuned SSL row")
    parser.add_argument("--smoke", action="store_true", help="tiny backbone, 2 epochs, 1 seed")
    parser.add_argument("--work", type=Path, default=common.ROOT / "runs" / "scratches")
    parser.add_argument("--threads", type=int, default=2)
    common.add_output_options(parser, NAME)
    args = common.parse_output_options(parser, argv, NAME)
    common.quiet()
    if args.screen:
        args.variants, args.seeds = list(SCREEN), [0, 1]
    if args.smoke:
        args.variants, args.seeds = ["baseline", "random"], [0]
        args.work = args.work.with_name("scratches_smoke")
    if args.report_only:
        results = common.load_json(args.json)
    else:
        torch.set_num_threads(args.threads)
        stored = args.json.is_file() and not args.no_write and not args.smoke
        results = common.load_json(args.json) if stored else {}
        command = common.command(NAME, argv)
        if command not in results.setdefault("commands", []):
            results["commands"].append(command)
        results = measure(args, results)
    if args.smoke:
        print(section(results))
    common.publish(args, results, lambda: section(results))


if __name__ == "__main__":
    main()
