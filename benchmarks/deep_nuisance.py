"""Benchmark 2: deep SSL heads on synthetic factory data under growing nuisance.

Linear-probe defect-vs-good AUROC of every head family (reconstruction, joint-embedding,
hybrid), a frozen random backbone and supervised training, across nuisance strengths of the
synthetic factory generator, with the ``surface`` policy (its photometric transforms re-sample
the nuisance: "aligned") and with a geometry-only variant of it (no illumination, exposure,
gamma or noise transforms: alignment ``alpha = 0``). Van Assel et al. 2025 predict
joint-embedding roughly flat in nuisance when aligned, reconstruction falling, and both
falling without alignment.

For the aligned policy the CNN backbones are also fine-tuned (``DefectClassifier`` with the
``DefectFinetuning`` callback, same labelled split, fixed small budget): fine-tuned AUROC.

Every run is written to the JSON file as soon as it finishes; re-running the same command
resumes (runs already in the file with the same configuration are skipped; an aligned run
without a fine-tuned AUROC has its backbone retrained, deterministically, and fine-tuned).

The docs section's prose is benchmarks/templates/deep_nuisance.md (filled from the JSON);
the reading of the default run, written after looking at its numbers and not recomputed, is
benchmarks/templates/deep_nuisance_reading.md.

    python benchmarks/deep_nuisance.py --quick      # minutes: 2 levels, few steps
    python benchmarks/deep_nuisance.py              # full: ~6 min on 2 idle CPU cores
    python benchmarks/deep_nuisance.py --report-only   # table, plot, section from the JSON
    python benchmarks/deep_nuisance.py --budget long   # ~35 min on 2 idle cores: MR vs VICReg,
                                                       # 1000 steps, 3 seeds, 3 levels (resumes)

``--budget long`` writes its runs into the JSON's ``"long"`` record after each run and its own
section (template ``deep_nuisance_long.md``); ``--report-only`` re-renders both sections.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import albumentations as A
import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchmetrics.classification import BinaryAUROC

from lit_ssl.augment import MultiView, policy, save_policy
from lit_ssl.augment.transforms import (
    IlluminationGradient,
    PoissonGaussianNoise,
    Vignetting,
)
from lit_ssl.backbone import Backbone
from lit_ssl.callbacks import DefectFinetuning
from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.data import DEFECTS, MATERIALS, generate_image, measure_energy
from lit_ssl.heads import (
    BYOL,
    MAE,
    DenoisingAutoencoder,
    Hybrid,
    LatentPrediction,
    MaskedReconstruction,
    SimCLR,
    SSLHead,
    VICReg,
)
from lit_ssl.module import SSLModule
from lit_ssl.optim import decay_groups, warmup_cosine

POLICIES = ("aligned", "alpha0")
PHOTOMETRIC = (
    IlluminationGradient,
    Vignetting,
    PoissonGaussianNoise,
    A.RandomBrightnessContrast,
    A.RandomGamma,
)
IMAGE_SIZE = 32
CNN, VIT = "test_resnet", "test_vit"
PROJ = 512  # projector width of every joint-embedding head (library default 2048-4096)
# Fine-tuning (aligned policy only): same budget for every method; kept out of Config.key()
# so that adding it does not invalidate the stored linear-probe runs.
FINETUNE = {
    "epochs": 4,
    "lr": 3e-3,
    "backbone_lr_factor": 0.1,
    "unfreeze_at_epoch": 1,
    "val_fraction": 0.2,
    "batch_size": 32,
}


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: a backbone and how it is trained.

    Attributes:
        name: Row label.
        family: ``reconstruction``, ``joint_embedding``, ``hybrid`` or ``baseline``.
        backbone: timm architecture name.
        head: Factory of the SSL head; None for the baselines.
        kind: ``ssl``, ``random`` (no training) or ``supervised`` (labels of the probe split).
    """

    name: str
    family: str
    backbone: str
    head: Callable[[], SSLHead] | None = None
    kind: str = "ssl"


def _mr() -> MaskedReconstruction:
    return MaskedReconstruction(mask_ratio=0.6, mask_patch_size=8)


def _vicreg() -> VICReg:
    return VICReg(hidden_dim=PROJ, out_dim=PROJ)


METHODS = (
    Method(
        "DenoisingAutoencoder",
        "reconstruction",
        CNN,
        lambda: DenoisingAutoencoder(IMAGE_SIZE, decoder_channels=64),
    ),
    Method("MaskedReconstruction", "reconstruction", CNN, _mr),
    Method(
        "MAE (test_vit)",
        "reconstruction",
        VIT,
        lambda: MAE(mask_ratio=0.5, decoder_dim=64, decoder_depth=1, decoder_heads=4),
    ),
    Method("VICReg", "joint_embedding", CNN, _vicreg),
    Method("BYOL", "joint_embedding", CNN, lambda: BYOL(hidden_dim=PROJ, out_dim=128)),
    Method("SimCLR", "joint_embedding", CNN, lambda: SimCLR(hidden_dim=PROJ, out_dim=128)),
    Method(
        "LatentPrediction",
        "joint_embedding",
        CNN,
        lambda: LatentPrediction(mask_ratio=0.6, mask_patch_size=8, predictor_dim=128),
    ),
    Method(
        "Hybrid (MR+VICReg)",
        "hybrid",
        CNN,
        lambda: Hybrid(reconstruction=_mr(), joint_embedding=_vicreg()),
    ),
    Method("random frozen", "baseline", CNN, kind="random"),
    Method("random frozen (test_vit)", "baseline", VIT, kind="random"),
    Method("supervised", "baseline", CNN, kind="supervised"),
)


@dataclass
class Config:
    """Everything that defines a result (hashed for resuming)."""

    levels: list[float]
    steps: int
    n_pretrain: int
    n_probe: int
    batch_size: int
    lr: float
    seed: int
    material: str = "mixed"
    image_size: int = IMAGE_SIZE
    defect_fraction: float = 0.25
    methods: list[str] = field(default_factory=lambda: [m.name for m in METHODS])

    def key(self) -> str:
        """Short hash of the configuration, without the level and method lists."""
        d = asdict(self)
        d.pop("levels"), d.pop("methods")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- data
def make_images(
    n: int, level: float, defect_fraction: float, material: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images ``(n, H, W, 3)`` float32 and labels (1 = defective).

    Defective images cycle through all defect types; the order is shuffled (seeded).
    """
    rng = np.random.default_rng(seed)
    n_def = int(round(n * defect_fraction))
    kinds: list[str | None] = [DEFECTS[i % len(DEFECTS)] for i in range(n_def)]
    kinds += [None] * (n - n_def)
    kinds = [kinds[i] for i in rng.permutation(n)]
    images, labels = [], []
    for kind in kinds:
        mat = str(rng.choice(MATERIALS)) if material == "mixed" else material
        sample = generate_image(rng, mat, kind, IMAGE_SIZE, 3, level)
        images.append(sample.image)
        labels.append(int(kind is not None))
    return np.stack(images).astype(np.float32), np.asarray(labels, np.int64)


class ViewDataset(Dataset):
    """Images through a :class:`MultiView`: items ``(views, label)`` (SSLModule's contract)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, views: MultiView) -> None:
        self.images, self.labels, self.views = images, labels, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[list[Tensor], int]:
        out = self.views(self.images[i])
        return [torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1) for v in out], int(
            self.labels[i]
        )


def alpha0_policy(folder: Path) -> str:
    """The ``surface`` preset without its photometric (nuisance) transforms, as a YAML file.

    Returns:
        Path of the YAML policy (flips, rot90, small shift/scale only).
    """
    surface = policy("surface", IMAGE_SIZE, 3)
    kept = [t for t in surface.transforms if not isinstance(t, PHOTOMETRIC)]
    path = folder / "surface_alpha0.yaml"
    save_policy(A.Compose(kept, strict=True), path)
    return str(path)


def policy_name(which: str, folder: Path) -> str:
    """Policy name or YAML path for ``aligned`` / ``alpha0``."""
    return "surface" if which == "aligned" else alpha0_policy(folder)


def loader(images: np.ndarray, labels: np.ndarray, views: MultiView, cfg: Config) -> DataLoader:
    """Seeded shuffling loader, no workers (views are cheap at this size)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    ds = ViewDataset(images, labels, views)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen)


# ----------------------------------------------------------------------------- training
class Supervised(L.LightningModule):
    """Backbone + linear defect logit, BCE on labelled images; SSLModule's optimiser/schedule."""

    def __init__(self, backbone: Backbone, lr: float, weight_decay: float = 0.05) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.embed_dim, 1)
        self.lr, self.weight_decay = lr, weight_decay

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, labels = batch
        logits = self.fc(self.backbone(views[0])).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        self.log("train/loss", loss, on_step=True)
        return loss

    def configure_optimizers(self):
        groups = decay_groups(self.named_parameters(), self.weight_decay, set())
        for group in groups:
            group.pop("lars_exclude", None)
        opt = torch.optim.AdamW(groups, lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, total, int(0.1 * total), 0.01)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def trainer(steps: int) -> L.Trainer:
    """A quiet CPU trainer for exactly ``steps`` optimizer steps."""
    return common.cpu_trainer(max_steps=steps, max_epochs=-1)


def train_backbone(
    method: Method, data: dict[str, tuple[np.ndarray, np.ndarray]], pol: str, cfg: Config
) -> tuple[Backbone, dict[str, float]]:
    """Train (or not) the method's backbone; returns it and a few end-of-training metrics."""
    common.seed(cfg.seed)
    backbone = Backbone(method.backbone, in_chans=3, image_size=IMAGE_SIZE)
    if method.kind == "random":
        return backbone, {}
    if method.kind == "supervised":
        model: L.LightningModule = Supervised(backbone, cfg.lr)
        views = MultiView([policy(pol, IMAGE_SIZE, 3)], seed=cfg.seed)
        dl = loader(*data["probe_train"], views, cfg)
    else:
        head = method.head()
        model = SSLModule(backbone, head, lr=cfg.lr)
        clean = policy("minimal", IMAGE_SIZE, 3) if head.clean_view else None
        composes = [policy(pol, IMAGE_SIZE, 3) for _ in range(head.num_views)]
        views = MultiView(composes, clean, seed=cfg.seed)
        dl = loader(*data["pretrain"], views, cfg)
    tr = trainer(cfg.steps)
    tr.fit(model, train_dataloaders=dl)
    metrics = {
        k.replace("/", "_"): float(v)
        for k, v in tr.callback_metrics.items()
        if k.endswith(("loss_step", "embedding_std_step")) or k == "train/loss"
    }
    return model.backbone, metrics


# ----------------------------------------------------------------------------- probe
@torch.no_grad()
def features(backbone: Backbone, images: np.ndarray, batch: int = 256) -> Tensor:
    """Frozen pooled features of un-augmented images (eval mode)."""
    backbone.eval()
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return torch.cat([backbone(x[i : i + batch]) for i in range(0, len(x), batch)]).float()


def linear_probe(
    f_train: Tensor, y_train: Tensor, f_test: Tensor, y_test: Tensor, l2: float = 1e-3
) -> float:
    """Logistic regression on standardised features (LBFGS, small L2) -> test AUROC."""
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    a, b = (f_train - mean) / std, (f_test - mean) / std
    w = torch.zeros(a.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1.0, max_iter=300, line_search_fn="strong_wolfe")
    target = y_train.float()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a @ w + bias, target) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        scores = b @ w + bias
    return float(BinaryAUROC()(scores, y_test))


def split_validation(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (per label) train/validation indices, seeded."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def finetune(
    backbone: Backbone, data: dict[str, tuple[np.ndarray, np.ndarray]], seed: int
) -> float:
    """Fine-tune a copy of ``backbone`` into a ``DefectClassifier`` -> probe-test AUROC.

    Probe-train split minus a stratified validation part (threshold chosen there, F1),
    un-augmented images, ``DefectFinetuning``: head only in epoch 0, then the backbone at
    ``backbone_lr_factor`` of the head LR.
    """
    ft = FINETUNE
    common.seed(seed)
    (xtr, ytr), (xte, yte) = data["probe_train"], data["probe_test"]
    tr_idx, va_idx = split_validation(ytr, ft["val_fraction"], seed)

    def ds(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(
            torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
        )

    gen = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(
        ds(xtr[tr_idx], ytr[tr_idx]), batch_size=ft["batch_size"], shuffle=True, generator=gen
    )
    val_dl = DataLoader(ds(xtr[va_idx], ytr[va_idx]), batch_size=256)
    test_dl = DataLoader(ds(xte, yte), batch_size=256)
    model = DefectClassifier(
        backbone=copy.deepcopy(backbone),
        classes=["good", "defect"],
        threshold_mode="f1",
        save_figures=False,
        lr=ft["lr"],
    )
    callback = DefectFinetuning(
        unfreeze_at_epoch=ft["unfreeze_at_epoch"], backbone_lr_factor=ft["backbone_lr_factor"]
    )
    tr = common.cpu_trainer([callback], max_epochs=ft["epochs"])
    tr.fit(model, train_dataloaders=train_dl, val_dataloaders=val_dl)
    return float(tr.test(model, dataloaders=test_dl, verbose=False)[0]["test/auroc"])


def auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)
    return math.sqrt(max(var, 0.0) / (n_pos * n_neg))


# ----------------------------------------------------------------------------- results
def load_results(path: Path, cfg: Config) -> dict:
    """Results stored with the same configuration key, else a fresh record."""
    fresh = {"config_key": cfg.key(), "config": asdict(cfg), "energy": {}, "runs": {}}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("config_key") == cfg.key():
            return stored
        print(f"{path}: different configuration, starting afresh")
        if "long" in stored:  # the long-budget record is independent of this configuration
            fresh["long"] = stored["long"]
    return fresh


def run_key(method: str, level: float, pol: str) -> str:
    """Key of one run in the JSON file."""
    return f"{method}|{level:g}|{pol}"


def level_order(levels: list[float]) -> list[float]:
    """Extremes first, so partial results already span the range."""
    levels = sorted(levels)
    return [levels[0], levels[-1], *levels[1:-1]] if len(levels) > 2 else levels


def wants_finetune(method: Method) -> bool:
    """Fine-tuned for the aligned policy: every CNN row (the ViT rows are near chance)."""
    return method.backbone == CNN


def run_all(cfg: Config, results: dict, json_path: Path, methods: list[Method]) -> None:
    """Train and probe every (level, policy, method) missing from ``results``."""
    folder = Path(tempfile.mkdtemp(prefix="deep_nuisance_"))
    for level in level_order(cfg.levels):
        lk = f"{level:g}"
        if lk not in results["energy"]:
            results["energy"][lk] = measure_energy(
                level, n=128, image_size=IMAGE_SIZE, material=cfg.material, seed=cfg.seed
            )
            common.save_json(json_path, results)
        print(f"nuisance {level:g}: energy ratio {results['energy'][lk]['ratio']:.1f}x", flush=True)
        data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for pol_key in POLICIES:
            for method in methods:
                key = run_key(method.name, level, pol_key)
                run = results["runs"].get(key)
                ft_wanted = pol_key == "aligned" and wants_finetune(method)
                if run is not None and (not ft_wanted or "finetune_auroc" in run):
                    continue
                if method.kind == "random" and pol_key == "alpha0":  # no policy involved
                    results["runs"][key] = dict(
                        results["runs"][run_key(method.name, level, "aligned")]
                    )
                    common.save_json(json_path, results)
                    continue
                if not data:
                    data = {
                        "pretrain": make_images(
                            cfg.n_pretrain, level, cfg.defect_fraction, cfg.material, cfg.seed
                        ),
                        "probe_train": make_images(
                            cfg.n_probe, level, 0.5, cfg.material, cfg.seed + 1
                        ),
                        "probe_test": make_images(
                            cfg.n_probe, level, 0.5, cfg.material, cfg.seed + 2
                        ),
                    }
                t0 = time.perf_counter()
                backbone, metrics = train_backbone(method, data, policy_name(pol_key, folder), cfg)
                t_train = time.perf_counter() - t0
                xtr, ytr = data["probe_train"]
                xte, yte = data["probe_test"]
                auc = linear_probe(
                    features(backbone, xtr),
                    torch.from_numpy(ytr),
                    features(backbone, xte),
                    torch.from_numpy(yte),
                )
                if run is not None:  # probe stored, backbone not: retrained for fine-tuning
                    t1 = time.perf_counter()
                    run["finetune_auroc"] = finetune(backbone, data, cfg.seed)
                    run["finetune_s"] = round(time.perf_counter() - t1, 1)
                    run["retrain_probe_auroc"] = auc  # reproducibility check of the retrain
                    common.save_json(json_path, results)
                    print(
                        f"  {pol_key:7s} {method.name:22s} fine-tuned AUROC "
                        f"{run['finetune_auroc']:.3f} (probe {run['auroc']:.3f}, retrained "
                        f"{auc:.3f}; {t_train:.0f} s retrain, {run['finetune_s']:.0f} s ft)",
                        flush=True,
                    )
                    continue
                n_pos = int(yte.sum())
                results["runs"][key] = {
                    "method": method.name,
                    "family": method.family,
                    "backbone": method.backbone,
                    "level": level,
                    "policy": pol_key,
                    "auroc": auc,
                    "auroc_se": auroc_se(auc, n_pos, len(yte) - n_pos),
                    "train_s": round(t_train, 1),
                    "total_s": round(time.perf_counter() - t0, 1),
                    **metrics,
                }
                if ft_wanted:
                    t1 = time.perf_counter()
                    results["runs"][key]["finetune_auroc"] = finetune(backbone, data, cfg.seed)
                    results["runs"][key]["finetune_s"] = round(time.perf_counter() - t1, 1)
                common.save_json(json_path, results)
                print(
                    f"  {pol_key:7s} {method.name:22s} AUROC {auc:.3f} "
                    f"({t_train:.0f} s train) {metrics}",
                    flush=True,
                )


# ----------------------------------------------------------------------------- report
def level_label(results: dict, level: float) -> str:
    """Column label of a nuisance level: strength (measured energy ratio)."""
    ratio = results["energy"].get(f"{level:g}", {}).get("ratio", float("nan"))
    return f"{level:g} ({ratio:.0f}x)"


def table(results: dict) -> str:
    """Markdown table: rows = methods, columns = nuisance level (ratio) x policy."""
    cfg, runs = results["config"], results["runs"]
    levels = sorted(cfg["levels"])
    header = ["method", "family"]
    header += [f"{level_label(results, lv)} {p}" for lv in levels for p in ("al.", "α=0")]
    header += ["rel. change 0→max, al.", "rel. change 0→max, α=0"]
    rows = []
    names = [m.name for m in METHODS if m.name in cfg["methods"]]
    family = {m.name: m.family for m in METHODS}
    for name in names:
        cells, ends = [], {}
        for lv in levels:
            for p in POLICIES:
                r = runs.get(run_key(name, lv, p))
                cells.append("—" if r is None else f"{r['auroc']:.3f}")
        for p in POLICIES:
            lo, hi = runs.get(run_key(name, levels[0], p)), runs.get(run_key(name, levels[-1], p))
            ends[p] = (
                "—"
                if lo is None or hi is None
                else f"{(hi['auroc'] - lo['auroc']) / lo['auroc']:+.0%}"
            )
        rows.append([name, family[name], *cells, ends["aligned"], ends["alpha0"]])
    for fam, label in (
        ("reconstruction", "reconstruction, CNN"),
        ("joint_embedding", "joint_embedding"),
    ):
        members = [n for n in names if family[n] == fam and "MAE" not in n]
        cells = []
        for lv in levels:
            for p in POLICIES:
                vals = [runs[k]["auroc"] for n in members if (k := run_key(n, lv, p)) in runs]
                cells.append(f"{np.mean(vals):.3f}" if len(vals) == len(members) else "—")
        rows.append([f"*mean {label}*", "", *cells, "", ""])
    return common.markdown_table(header, ["---", "---", *["---:"] * (2 * len(levels) + 2)], rows)


def finetune_table(results: dict) -> str:
    """Markdown table of fine-tuned AUROC (aligned): rows = methods, columns = nuisance level."""
    cfg, runs = results["config"], results["runs"]
    levels = sorted(cfg["levels"])
    header = ["method", "family", *(level_label(results, lv) for lv in levels)]
    header += ["rel. change 0→max", "probe → fine-tuned, mean over levels"]
    rows = []
    for m in METHODS:
        if m.name not in cfg["methods"] or not wants_finetune(m):
            continue
        got = [runs.get(run_key(m.name, lv, "aligned"), {}) for lv in levels]
        cells = [f"{r['finetune_auroc']:.3f}" if "finetune_auroc" in r else "—" for r in got]
        ok = [r for r in got if "finetune_auroc" in r]
        change = gain = "—"
        if "finetune_auroc" in got[0] and "finetune_auroc" in got[-1]:
            lo, hi = got[0]["finetune_auroc"], got[-1]["finetune_auroc"]
            change = f"{(hi - lo) / lo:+.0%}"
        if ok:
            probe = np.mean([r["auroc"] for r in ok])
            gain = f"{probe:.3f} → {np.mean([r['finetune_auroc'] for r in ok]):.3f}"
        rows.append([m.name, m.family, *cells, change, gain])
    return common.markdown_table(header, ["---", "---", *["---:"] * (len(levels) + 2)], rows)


def summary(results: dict) -> str:
    """Factual sentences computed from the runs (family means, drops, alignment gaps)."""
    runs, levels = results["runs"], sorted(results["config"]["levels"])
    lo, hi = levels[0], levels[-1]
    family = {m.name: m.family for m in METHODS}

    def mean(names: list[str], level: float, pol: str) -> float:
        vals = [runs[k]["auroc"] for n in names if (k := run_key(n, level, pol)) in runs]
        return float(np.mean(vals)) if len(vals) == len(names) else float("nan")

    groups = {
        "reconstruction (CNN: DAE, MaskedReconstruction)": [
            n for n, f in family.items() if f == "reconstruction" and "MAE" not in n
        ],
        "joint-embedding (VICReg, BYOL, SimCLR, LatentPrediction)": [
            n for n, f in family.items() if f == "joint_embedding"
        ],
        "hybrid": ["Hybrid (MR+VICReg)"],
        "random frozen": ["random frozen"],
        "supervised": ["supervised"],
    }
    lines = []
    for label, names in groups.items():
        parts = []
        for pol, tag in (("aligned", "aligned"), ("alpha0", "α=0")):
            a, b = mean(names, lo, pol), mean(names, hi, pol)
            parts.append(f"{tag} {a:.3f} → {b:.3f} ({(b - a) / a:+.0%})")
        lines.append(f"- {label}: " + "; ".join(parts))
    return (
        f"Mean AUROC from nuisance {lo:g} to {hi:g} (summary computed from the table):\n\n"
        + "\n".join(lines)
    )


def plot(results: dict, path: Path) -> None:
    """AUROC vs measured nuisance/defect energy ratio; solid aligned, dashed alpha = 0."""
    runs, levels = results["runs"], sorted(results["config"]["levels"])
    ratios = {lv: results["energy"].get(f"{lv:g}", {}).get("ratio") for lv in levels}
    palette = [*plt.get_cmap("tab10").colors, (0.0, 0.0, 0.0)]
    fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    names = [m.name for m in METHODS if m.name in results["config"]["methods"]]
    for i, name in enumerate(names):
        for p, style in (("aligned", "-"), ("alpha0", "--")):
            pts = [
                (ratios[lv], runs[k]["auroc"])
                for lv in levels
                if (k := run_key(name, lv, p)) in runs and ratios[lv] is not None
            ]
            if not pts or (name.startswith("random") and p == "alpha0"):
                continue
            x, y = zip(*pts, strict=True)
            ax.plot(
                x,
                y,
                style,
                marker="o",
                ms=4,
                color=palette[i % len(palette)],
                label=name if p == "aligned" else None,
            )
    ax.plot([], [], "k-", label="aligned policy (surface)")
    ax.plot([], [], "k--", label="α = 0 (geometry only)")
    ax.set(
        xlabel="nuisance / defect energy ratio (measure_energy, per pixel)",
        ylabel="linear-probe defect AUROC",
        title="Synthetic factory data: AUROC vs nuisance strength",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    common.save_figure(fig, path)


def section_text(results: dict, tab: str, cmd: str, img: Path, reading: str) -> str:
    """The markdown section for docs/benchmarks.md."""
    cfg, runs = results["config"], results["runs"]
    total = sum(r.get("total_s", 0.0) + r.get("finetune_s", 0.0) for r in runs.values())
    se = [r["auroc_se"] for r in runs.values() if "auroc_se" in r] or [float("nan")]
    energy = ", ".join(
        f"{float(k):g} → {v['ratio']:.1f}x"
        for k, v in sorted(results["energy"].items(), key=lambda kv: float(kv[0]))
    )
    numbers = {**cfg, **{f"ft_{k}": v for k, v in FINETUNE.items()}}
    return common.render(
        "deep_nuisance",
        numbers,
        defect_fraction=f"{cfg['defect_fraction']:.0%}",
        lr=f"{cfg['lr']:g}",
        cnn=CNN,
        vit=VIT,
        proj=PROJ,
        se_lo=f"{min(se):.3f}",
        se_hi=f"{max(se):.3f}",
        energy=energy,
        table=tab,
        img=img,
        summary=summary(results),
        ft_lr=f"{FINETUNE['lr']:g}",
        ft_backbone_lr_factor=f"{FINETUNE['backbone_lr_factor']:g}",
        ft_val_fraction=f"{FINETUNE['val_fraction']:.0%}",
        finetune_table=finetune_table(results),
        reading=reading,
        runs=len(runs),
        minutes=f"{total / 60:.0f}",
        command=cmd,
    )


# ----------------------------------------------------------------------------- long budget
# ``--budget long``: fewer methods, thousands of steps, several seeds; the probe is also
# read at intermediate steps of the same run (same cosine schedule) to see the trend.
LONG = {
    "levels": [0.0, 1.0, 1.5],
    "seeds": [0, 1, 2],
    "steps": 1000,
    "probe_at": [64, 300],
    "methods": ["MaskedReconstruction", "VICReg", "random frozen"],
    "n_pretrain": 1024,
    "n_probe": 500,
    "batch_size": 32,
    "lr": 2e-3,
}
LONG_RECONSTRUCTION, LONG_JOINT = "MaskedReconstruction", "VICReg"


class ProbeAt(L.Callback):
    """Linear-probe AUROC of ``pl_module.backbone`` at given global steps (benchmark only)."""

    def __init__(self, steps: list[int], data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.steps, self.data, self.aurocs = set(steps), data, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if trainer.global_step in self.steps:
            self.aurocs[str(trainer.global_step)] = probe(pl_module.backbone, self.data)
            pl_module.backbone.train()


def probe(backbone: Backbone, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """Linear-probe AUROC of a backbone on the probe splits (eval mode)."""
    (xtr, ytr), (xte, yte) = data["probe_train"], data["probe_test"]
    return linear_probe(
        features(backbone, xtr),
        torch.from_numpy(ytr),
        features(backbone, xte),
        torch.from_numpy(yte),
    )


def long_key(method: str, level: float, pol: str, seed: int) -> str:
    """Key of one long-budget run."""
    return f"{method}|{level:g}|{pol}|{seed}"


def load_long(json_path: Path) -> dict:
    """The stored long-budget record (``"long"`` key of the JSON), fresh if its config changed."""
    stored = json.loads(json_path.read_text()).get("long", {}) if json_path.is_file() else {}
    if stored.get("config") == LONG:
        return stored
    if stored:
        print(f"{json_path}: different long-budget configuration, starting afresh")
    return {"config": dict(LONG), "runs": {}, "energy": {}}


def save_long(json_path: Path, long: dict) -> None:
    """Write ``long`` into the JSON's ``"long"`` key, leaving the rest of the file alone."""
    data = json.loads(json_path.read_text()) if json_path.is_file() else {}
    data["long"] = long
    common.save_json(json_path, data)


def long_data(level: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pretraining and probe splits of one level and seed (as in the default budget)."""
    n, n_probe = LONG["n_pretrain"], LONG["n_probe"]
    return {
        "pretrain": make_images(n, level, 0.25, "mixed", seed),
        "probe_train": make_images(n_probe, level, 0.5, "mixed", seed + 1),
        "probe_test": make_images(n_probe, level, 0.5, "mixed", seed + 2),
    }


def run_long(json_path: Path) -> None:
    """Train and probe every long-budget (seed, level, policy, method) missing from the JSON.

    Order: the aligned policy first (all seeds), then alpha = 0; within a seed the extreme
    levels first, so a partial run already answers the main question; every run is saved
    as soon as it finishes.
    """
    long, folder = load_long(json_path), Path(tempfile.mkdtemp(prefix="deep_long_"))
    by_name = {m.name: m for m in METHODS}
    t_start, base = time.perf_counter(), long.get("wall_s", 0.0)

    def save() -> None:
        long["wall_s"] = round(base + time.perf_counter() - t_start, 1)
        save_long(json_path, long)

    for pol in POLICIES:  # aligned first: the paper's ordering is about it
        for seed in LONG["seeds"]:
            cfg = Config(
                levels=LONG["levels"],
                steps=LONG["steps"],
                n_pretrain=LONG["n_pretrain"],
                n_probe=LONG["n_probe"],
                batch_size=LONG["batch_size"],
                lr=LONG["lr"],
                seed=seed,
            )
            for level in level_order(LONG["levels"]):
                if f"{level:g}" not in long["energy"]:
                    long["energy"][f"{level:g}"] = measure_energy(
                        level, n=128, image_size=IMAGE_SIZE, material="mixed", seed=0
                    )
                data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
                for name in LONG["methods"]:
                    key, method = long_key(name, level, pol, seed), by_name[name]
                    if key in long["runs"]:
                        continue
                    if method.kind == "random" and pol == "alpha0":  # no policy involved
                        long["runs"][key] = long["runs"][long_key(name, level, "aligned", seed)]
                        continue
                    data = data or long_data(level, seed)
                    long["runs"][key] = long_run(method, data, policy_name(pol, folder), cfg)
                    save()
                    r = long["runs"][key]
                    print(
                        f"{pol:7s} seed {seed} nuisance {level:g} {name:22s} AUROC "
                        f"{r['auroc']:.3f} at {r['probes']} ({r['train_s']:.0f} s)",
                        flush=True,
                    )
                save()


def long_run(
    method: Method, data: dict[str, tuple[np.ndarray, np.ndarray]], pol: str, cfg: Config
) -> dict:
    """One long-budget run: final probe AUROC, probes at ``LONG["probe_at"]``, timings."""
    t0 = time.perf_counter()
    common.seed(cfg.seed)
    backbone = Backbone(method.backbone, in_chans=3, image_size=IMAGE_SIZE)
    probes: dict[str, float] = {}
    metrics: dict[str, float] = {}
    if method.kind != "random":
        head = method.head()
        model = SSLModule(backbone, head, lr=cfg.lr)
        clean = policy("minimal", IMAGE_SIZE, 3) if head.clean_view else None
        composes = [policy(pol, IMAGE_SIZE, 3) for _ in range(head.num_views)]
        dl = loader(*data["pretrain"], MultiView(composes, clean, seed=cfg.seed), cfg)
        probe_cb = ProbeAt(LONG["probe_at"], data)
        tr = common.cpu_trainer([probe_cb], max_steps=cfg.steps, max_epochs=-1)
        tr.fit(model, train_dataloaders=dl)
        probes = probe_cb.aurocs
        backbone = model.backbone
        metrics = {
            k.replace("/", "_"): float(v)
            for k, v in tr.callback_metrics.items()
            if k.endswith(("loss_step", "embedding_std_step"))
        }
    t_train = time.perf_counter() - t0
    auc = probe(backbone, data)
    if method.kind != "random":
        probes[str(cfg.steps)] = auc
    return {
        "method": method.name,
        "family": method.family,
        "auroc": auc,
        "probes": probes,
        "train_s": round(t_train, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        **metrics,
    }


def _long_auc(long: dict, name: str, level: float, pol: str, seed: int, step: str | None):
    r = long["runs"].get(long_key(name, level, pol, seed))
    if r is None:
        return None
    return r["auroc"] if step is None or not r["probes"] else r["probes"].get(step)


def _spread(values: list[float], fmt: str = ".3f") -> str:
    if not values:
        return "—"
    med = float(np.median(values))
    if len(values) == 1:
        return f"{med:{fmt}} (1 seed)"
    return f"{med:{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def long_table(long: dict) -> str:
    """Final AUROC, median [min, max] over seeds: rows = methods, columns = level x policy."""
    levels, seeds = sorted(LONG["levels"]), LONG["seeds"]
    header = ["method", *(f"{lv:g} {p}" for lv in levels for p in ("al.", "α=0"))]
    rows = []
    for name in LONG["methods"]:
        cells = []
        for lv in levels:
            for pol in POLICIES:
                vals = [_long_auc(long, name, lv, pol, s, None) for s in seeds]
                cells.append(_spread([v for v in vals if v is not None]))
        rows.append([name, *cells])
    return common.markdown_table(header, ["---", *["---:"] * (2 * len(levels))], rows)


def long_gaps(long: dict, step: str | None) -> dict[str, list[float]]:
    """Per policy, per seed: drop(reconstruction) - drop(joint-embedding), 0 -> max nuisance.

    Positive = joint-embedding flatter (the paper's ordering). ``step`` None = final.
    """
    lo, hi = min(LONG["levels"]), max(LONG["levels"])
    out: dict[str, list[float]] = {}
    for pol in POLICIES:
        out[pol] = []
        for s in LONG["seeds"]:
            v = [
                _long_auc(long, n, lv, pol, s, step)
                for n in (LONG_RECONSTRUCTION, LONG_JOINT)
                for lv in (lo, hi)
            ]
            if None not in v:
                out[pol].append((v[0] - v[1]) - (v[2] - v[3]))
    return out


def long_gap_table(long: dict) -> str:
    """Paired per-seed gap drop(MR) - drop(VICReg) at each probe step, both policies."""
    steps = [*(str(s) for s in LONG["probe_at"]), str(LONG["steps"])]
    header = ["policy", *(f"step {s}" for s in steps), "per seed (final)"]
    rows = []
    for pol, tag in (("aligned", "aligned"), ("alpha0", "α = 0")):
        cells = [
            _spread(long_gaps(long, None if s == steps[-1] else s)[pol], "+.3f") for s in steps
        ]
        final = long_gaps(long, None)[pol]
        rows.append([tag, *cells, ", ".join(f"{g:+.3f}" for g in final) or "—"])
    return common.markdown_table(header, ["---", *["---:"] * (len(steps) + 1)], rows)


def long_verdict(long: dict) -> str:
    """Plain sentences, computed from the stored runs: does the paper's ordering appear?"""
    hi = max(LONG["levels"])
    final = long_gaps(long, None)
    aligned = final["aligned"]
    if not aligned:
        return (
            f"**Verdict (computed): not answered yet.** No seed has both heads at nuisance 0 "
            f"and {hi:g} with the aligned policy ({len(long['runs'])} runs stored); the "
            "ordering cannot be read from this run. Re-run the command: it resumes."
        )
    sign = "joint-embedding flatter" if np.median(aligned) > 0 else "reconstruction flatter"
    if len(aligned) == 1:
        holds = f"one seed only ({aligned[0]:+.3f}, {sign}): not separable from seed noise"
    elif all(g > 0 for g in aligned):
        holds = f"it appears on every one of {len(aligned)} seeds"
    else:
        holds = f"it does not hold on every seed ({sign} in the median)"
    steps = [*map(str, LONG["probe_at"]), None]
    medians = [float(np.median(long_gaps(long, st)["aligned"] or [np.nan])) for st in steps]
    trend = "median gap " + ", ".join(
        f"{m:+.3f} at step {st or LONG['steps']}" for m, st in zip(medians, steps, strict=True)
    )
    rising = all(b > a for a, b in zip(medians, medians[1:], strict=False))
    grows = "grows steadily" if rising else "does not grow steadily"
    alpha0 = final["alpha0"]
    control = (
        f"; at α = 0 the median gap is {np.median(alpha0):+.3f} ({len(alpha0)} seeds)"
        if alpha0
        else "; no α = 0 pair yet"
    )
    return (
        f"**Verdict (computed from the table).** Paper's ordering with the aligned policy: "
        f"{holds}. With budget it {grows} ({trend}){control}."
    )


def long_section(long: dict) -> str:
    """The long-budget markdown section (template ``deep_nuisance_long``)."""
    runs = long["runs"]
    trained = [r for r in runs.values() if r["probes"]]
    seconds = long.get("wall_s", 0.0)
    expected = len(LONG["seeds"]) * len(LONG["levels"]) * len(POLICIES) * len(LONG["methods"])
    energy = ", ".join(
        f"{float(k):g} → {v['ratio']:.0f}x"
        for k, v in sorted(long["energy"].items(), key=lambda kv: float(kv[0]))
    )
    return common.render(
        "deep_nuisance_long",
        LONG,
        levels=", ".join(f"{lv:g}" for lv in LONG["levels"]),
        seeds=len(LONG["seeds"]),
        probe_at=", ".join(str(s) for s in LONG["probe_at"]),
        epochs=f"{LONG['steps'] * LONG['batch_size'] / LONG['n_pretrain']:.0f}",
        energy=energy,
        table=long_table(long),
        gap_table=long_gap_table(long),
        done=len(runs),
        expected=expected,
        trained=len(trained),
        minutes=f"{seconds / 60:.0f}",
        verdict=long_verdict(long),
        reading=common.render("deep_nuisance_long_reading").rstrip("\n"),
        command="python benchmarks/deep_nuisance.py --budget long",
    )


def write_long_section(json_path: Path, md: Path) -> None:
    """Render the long-budget section from the JSON's ``"long"`` record into ``md``."""
    long = load_long(json_path)
    if not long["runs"]:
        raise SystemExit(f"{json_path}: no long-budget runs; run with --budget long first")
    common.write_section(md, long_section(long))
    print(long_table(long))
    print(long_gap_table(long))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 levels, few steps, small data")
    p.add_argument(
        "--budget",
        choices=("default", "long"),
        default="default",
        help="long: MaskedReconstruction vs VICReg, 1000 steps, 3 seeds (~35 min, 2 idle cores)",
    )
    p.add_argument("--levels", type=float, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per method")
    p.add_argument("--n-pretrain", type=int, default=None)
    p.add_argument("--n-probe", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=None, help="subset of method names")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--img", type=Path, default=None)
    p.add_argument("--md", type=Path, default=None)
    p.add_argument("--report-only", action="store_true", help="rewrite table/plot from JSON")
    return p.parse_args(argv)


def canonical_command(cfg: dict, quick: bool) -> str:
    """The command reproducing ``cfg`` (flags only where it differs from the mode's defaults)."""
    defaults = parse_args(["--quick"] if quick else [])
    flags = ["--quick"] if quick else []
    default_levels = [0.0, 1.5] if quick else [0.0, 0.5, 1.0, 1.5]
    if sorted(cfg["levels"]) != default_levels:
        flags += ["--levels", *(f"{lv:g}" for lv in sorted(cfg["levels"]))]
    for name, default in (
        ("steps", 8 if quick else 64),
        ("n_pretrain", 256 if quick else 1024),
        ("n_probe", 200 if quick else 500),
        ("batch_size", defaults.batch_size),
        ("lr", defaults.lr),
        ("seed", defaults.seed),
    ):
        if cfg[name] != default:
            flags += [f"--{name.replace('_', '-')}", f"{cfg[name]:g}"]
    return " ".join(["python benchmarks/deep_nuisance.py", *flags])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    common.quiet()
    quick = args.quick
    out = Path(tempfile.gettempdir()) / "deep_nuisance_quick" if quick else common.DOCS
    json_path = args.json or out / "deep_nuisance.json"
    img = args.img or out / "img" / "deep_nuisance.png"
    md = args.md or out / "benchmarks.md"
    if args.budget == "long":
        if not args.report_only:
            run_long(json_path)
        write_long_section(json_path, md)
        return
    cfg = Config(
        levels=args.levels or ([0.0, 1.5] if quick else [0.0, 0.5, 1.0, 1.5]),
        steps=args.steps or (8 if quick else 64),
        n_pretrain=args.n_pretrain or (256 if quick else 1024),
        n_probe=args.n_probe or (200 if quick else 500),
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    methods = [m for m in METHODS if args.methods is None or m.name in args.methods]
    cfg.methods = [m.name for m in methods]
    results = load_results(json_path, cfg)
    results["config"]["levels"] = sorted(set(results["config"]["levels"]) | set(cfg.levels))
    results["config"]["methods"] = [
        m.name for m in METHODS if m.name in set(results["config"]["methods"]) | set(cfg.methods)
    ]
    if results.get("finetune_config", FINETUNE) != FINETUNE:  # other budget: fine-tune again
        print(f"{json_path}: different fine-tuning configuration, dropping fine-tuned AUROCs")
        for run in results["runs"].values():
            for k in ("finetune_auroc", "finetune_s", "retrain_probe_auroc"):
                run.pop(k, None)
    t0 = time.perf_counter()
    if not args.report_only:
        run_all(cfg, results, json_path, methods)
    for level in results["config"]["levels"]:  # levels not reached yet (partial results)
        if f"{level:g}" not in results["energy"]:
            results["energy"][f"{level:g}"] = measure_energy(
                level, n=128, image_size=IMAGE_SIZE, material=cfg.material, seed=cfg.seed
            )
    tab = table(results)
    plot(results, img)
    # the reading of the default run (seed 0), written after looking at its numbers: static
    reading = "" if quick else common.render("deep_nuisance_reading").rstrip("\n")
    cmd = canonical_command(results["config"], quick)
    results["command"] = cmd
    results["finetune_config"] = FINETUNE
    common.save_json(json_path, results)
    try:
        rel_img = img.relative_to(md.parent)
    except ValueError:
        rel_img = img
    common.write_section(md, section_text(results, tab, cmd.strip(), rel_img, reading))
    if "long" in results and not quick:
        write_long_section(json_path, md)
    print(tab)
    print(f"done in {time.perf_counter() - t0:.0f} s -> {json_path}, {img}, {md}")


if __name__ == "__main__":
    main()
