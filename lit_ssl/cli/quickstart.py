"""``lit-ssl quickstart``: the end-to-end main job on the embedded synthetic factory data.

Per seed:

1. generate (once, cached) the synthetic MVTec-style factory dataset;
2. pretrain a small backbone with a joint-embedding head (VICReg) on it, labels unused;
3. defect classification on a small labelled subset, one ``DefectClassifier`` per row, same
   labels, augmentation and stopping rule (train until the validation AUROC has not improved
   for ``patience`` epochs, at most ``finetune_epochs``; test at the best validation epoch's
   weights and threshold): fine-tuned from the SSL backbone (``DefectFinetuning``),
   supervised from scratch (whole network from epoch 0 at the full LR, BatchNorm in train
   mode), a frozen random backbone with a linear head (the floor) and, with ``--weights``,
   continued from the user's existing (e.g. ImageNet) weights;
4. anomaly detection from the good images only (``AnomalyDetector``) on the SSL backbone and
   on the random one.

Then one table: median [min, max] over seeds, and the differences to the SSL row paired per
seed, with which of them are larger than the seed spread.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_ssl.anomaly import AnomalyDetector
from lit_ssl.backbone import Backbone
from lit_ssl.callbacks.finetune import DefectFinetuning
from lit_ssl.callbacks.monitors import CollapseMonitor, EmbeddingPlot, FiniteLossGuard
from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.data import FactoryDataModule
from lit_ssl.data.synthetic import default_dataset
from lit_ssl.heads import Hybrid, MaskedReconstruction, VICReg
from lit_ssl.heads.base import SSLHead
from lit_ssl.module import SSLModule
from lit_ssl.per_type import MIN_RECALL

__all__ = ["QuickstartConfig", "main", "run_quickstart"]

METRICS = ("auroc", "average_precision", "defect_f1", "defect_recall", "defect_precision")
# test-time keys of DefectClassifier: decisions use the threshold chosen on validation
TEST_KEYS = {
    "auroc": "test/auroc",
    "average_precision": "test/average_precision",
    "defect_f1": "test/defect_f1_at_threshold",
    "defect_recall": "test/defect_recall_at_threshold",
    "defect_precision": "test/defect_precision_at_threshold",
}
ANOMALY_KEYS = {"image_auroc": "test/image_auroc", "pixel_auroc": "test/pixel_auroc"}
SSL = "self-supervised (VICReg)"
SCRATCH = "supervised from scratch"
FLOOR = "random frozen + linear head"
CONTINUED = "continued from existing weights"
ANOMALY_SSL = "anomaly: SSL backbone"
ANOMALY_RANDOM = "anomaly: random backbone"
LABELS = {
    "auroc": "AUROC",
    "average_precision": "AP",
    "defect_f1": "defect F1",
    "defect_recall": "defect recall",
    "defect_precision": "defect precision",
    "threshold": "threshold",
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "best_epoch": "best epoch",
}
MONITOR = "val/auroc"  # the stopping rule of every classifier row
DIFF_METRICS = ("auroc", "defect_f1")  # differences to the SSL row reported for these


@dataclass
class QuickstartConfig:
    """Budget of the quickstart; ``fast()`` is the sub-minute smoke version.

    Attributes:
        finetune_epochs: Most epochs of a classifier row; each row stops earlier once its
            validation AUROC has not improved for ``patience`` epochs (the same rule for the
            SSL row and the baselines, so none is starved or over-trained by a fixed count).
        patience: Epochs without a better validation AUROC before a classifier row stops.
        seeds: Number of seeds (``seed``, ``seed + 1``, ...); every row is rerun per seed.
        weights: Existing weights file for the backbone (timm/ImageNet checkpoint or an
            export); adds the "continued from existing weights" row. No network access.
        coreset_fraction: Memory-bank coreset fraction of the anomaly detectors.
        root: An MVTec-style dataset folder to run on instead of the embedded synthetic data
            (its test split needs defect masks for the pixel AUROC).
        policy: Augmentation preset name or policy YAML of pretraining and fine-tuning.
        head: Pretraining head: ``"vicreg"``, ``"masked_reconstruction"`` (SimMIM-style,
            ``mask_patch`` px patches) or ``"hybrid"`` (both on one backbone, weights 1:1).
        mask_patch: Side of the masked patches of the reconstruction heads, in pixels.
        detector_layers: Feature stages of the anomaly detectors' memory bank.
    """

    backbone: str = "resnet10t"
    image_size: int = 64
    nuisance: float = 0.5
    ssl_epochs: int = 25
    finetune_epochs: int = 40
    patience: int = 10
    frozen_epochs: int = 3
    label_fraction: float = 0.25
    batch_size: int = 64
    projector_dim: int = 1024
    output: str = "runs/quickstart"
    seed: int = 0
    seeds: int = 1
    weights: str | None = None
    coreset_fraction: float = 0.1
    root: str | None = None
    policy: str = "surface"
    head: Literal["vicreg", "masked_reconstruction", "hybrid"] = "vicreg"
    mask_patch: int = 8
    detector_layers: tuple[int, ...] = (1, 2)
    metrics: dict = field(default_factory=dict)

    @classmethod
    def fast(cls, **kwargs) -> QuickstartConfig:
        """A sub-minute version for smoke tests: tiny backbone, 32 px, few epochs."""
        base = dict(
            backbone="test_resnet",
            image_size=32,
            ssl_epochs=2,
            finetune_epochs=2,
            frozen_epochs=1,
            projector_dim=64,
            batch_size=32,
            coreset_fraction=0.05,
        )
        return cls(**(base | kwargs))


class BestValidation(L.Callback):
    """Keep the weights (and buffers: the threshold) of the best validation epoch in memory.

    At the end of ``fit`` the module gets them back, so ``test``, ONNX export and the table use
    the epoch the stopping rule picked; nothing is read back from a file.
    """

    def __init__(self, monitor: str = MONITOR) -> None:
        self.monitor, self.best, self.best_epoch, self.state = monitor, float("-inf"), -1, None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        if float(value) > self.best:
            self.best, self.best_epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def _trainer(folder: Path, name: str, epochs: int, callbacks: list, seed: int) -> L.Trainer:
    L.seed_everything(seed, workers=True, verbose=False)
    return L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        logger=CSVLogger(save_dir=str(folder), name=name, version=""),
        callbacks=[ModelCheckpoint(save_last=True), FiniteLossGuard(), *callbacks],
        log_every_n_steps=1,
        enable_model_summary=False,
        deterministic=False,
    )


def _data(cfg: QuickstartConfig, root: Path, task: str, seed: int) -> FactoryDataModule:
    return FactoryDataModule(
        root=str(root),
        task=task,
        policy=cfg.policy,
        image_size=cfg.image_size,
        in_chans=3,
        batch_size=cfg.batch_size if task == "ssl" else 32,
        label_fraction=cfg.label_fraction if task == "classify" else 1.0,
        seed=seed,
    )


HEADS = ("vicreg", "masked_reconstruction", "hybrid")


def ssl_head(cfg: QuickstartConfig) -> SSLHead:
    """The pretraining head ``cfg.head`` names, sized by ``cfg``."""
    if cfg.head not in HEADS:
        raise ValueError(f"head={cfg.head!r}; use one of {HEADS}")
    vicreg = VICReg(hidden_dim=cfg.projector_dim, out_dim=cfg.projector_dim)
    if cfg.head == "vicreg":
        return vicreg
    masked = MaskedReconstruction(mask_ratio=0.6, mask_patch_size=cfg.mask_patch)
    return masked if cfg.head == "masked_reconstruction" else Hybrid(masked, vicreg)


def pretrain(cfg: QuickstartConfig, root: Path, folder: Path, seed: int) -> Path:
    """Pretrain ``cfg.head`` on the unlabeled images; returns the exported backbone file."""
    L.seed_everything(seed, workers=True, verbose=False)
    head = ssl_head(cfg)
    module = SSLModule(Backbone(cfg.backbone, image_size=cfg.image_size), head, lr=2e-3)
    callbacks = [CollapseMonitor(), EmbeddingPlot()]
    trainer = _trainer(folder, "pretrain", cfg.ssl_epochs, callbacks, seed)
    trainer.fit(module, datamodule=_data(cfg, root, "ssl", seed))
    return module.export_backbone(folder / "pretrain" / "backbone.safetensors")


def _recipe_callbacks(cfg: QuickstartConfig, recipe: str) -> list[L.Callback]:
    """``finetune``: frozen then fine-tuned at 0.1x; ``frozen``: never unfrozen; ``scratch``:
    no callback (the whole network trains from epoch 0 at the full LR, BatchNorm in train mode).
    """
    if recipe == "finetune":
        return [DefectFinetuning(unfreeze_at_epoch=cfg.frozen_epochs, backbone_lr_factor=0.1)]
    if recipe == "frozen":
        return [DefectFinetuning(unfreeze_at_epoch=cfg.finetune_epochs + 1)]
    return []


def finetune(
    cfg: QuickstartConfig,
    root: Path,
    folder: Path,
    name: str,
    backbone: Backbone | None,
    recipe: str,
    seed: int,
    export: bool = False,
) -> dict[str, float]:
    """Train one DefectClassifier row (``backbone`` None: random init); its test metrics."""
    L.seed_everything(seed, workers=True, verbose=False)
    data = _data(cfg, root, "classify", seed)
    data.setup("fit")
    classifier = DefectClassifier(
        backbone=backbone or Backbone(cfg.backbone, image_size=cfg.image_size),
        class_names=data.class_names,
        lr=3e-3,
        threshold_mode="f1",
    )
    best = BestValidation()
    stop = EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.patience)
    callbacks = [*_recipe_callbacks(cfg, recipe), best, stop]
    trainer = _trainer(folder, name, cfg.finetune_epochs, callbacks, seed)
    trainer.fit(classifier, datamodule=data)
    results = trainer.test(classifier, datamodule=data, verbose=False)[0]
    metrics = {key: float(results[TEST_KEYS[key]]) for key in METRICS}
    metrics |= _per_type(results, "test/defect_recall_at_threshold/", "recall/")
    metrics["best_epoch"] = float(best.best_epoch)
    metrics["threshold"] = float(classifier.threshold)
    if export:
        metrics["onnx"] = str(classifier.to_onnx(folder / name / "classifier.onnx"))
    return metrics


def anomaly_detector(cfg: QuickstartConfig, weights: Path | None, **options) -> AnomalyDetector:
    """The quickstart's detector on ``weights`` (None: a random backbone); ``options`` are
    further ``AnomalyDetector`` arguments."""
    return AnomalyDetector(
        backbone=cfg.backbone,
        weights=str(weights) if weights else None,
        image_size=cfg.image_size,
        layers=tuple(cfg.detector_layers),
        coreset_fraction=cfg.coreset_fraction,
        **options,
    )


def anomaly(
    cfg: QuickstartConfig, root: Path, folder: Path, name: str, weights: Path | None, seed: int
) -> dict[str, float]:
    """Memory-bank anomaly detection from the good training images; image/pixel AUROC."""
    L.seed_everything(seed, workers=True, verbose=False)
    detector = anomaly_detector(cfg, weights)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="auto",
        devices=1,
        logger=CSVLogger(save_dir=str(folder), name=name, version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    data = _data(cfg, root, "anomaly", seed)
    trainer.fit(detector, datamodule=data)
    results = trainer.test(detector, datamodule=data, verbose=False)[0]
    metrics = {key: float(results[k]) for key, k in ANOMALY_KEYS.items() if k in results}
    return metrics | _per_type(results, "test/auroc_vs_good/", "auroc/")


def _per_type(results: dict[str, float], prefix: str, key: str) -> dict[str, float]:
    """``{key + type: value}`` of the per-defect-type test metrics named ``prefix + type``."""
    return {key + k[len(prefix) :]: float(v) for k, v in results.items() if k.startswith(prefix)}


def run_seed(cfg: QuickstartConfig, root: Path, folder: Path, seed: int) -> dict[str, dict]:
    """Every row of the table for one seed."""
    print(
        f"[seed {seed}] self-supervised pretraining ({cfg.backbone}, VICReg, {cfg.ssl_epochs} ep)"
    )
    weights = pretrain(cfg, root, folder, seed)
    ssl_backbone = Backbone(cfg.backbone, image_size=cfg.image_size, weights=str(weights))
    print(f"[seed {seed}] defect classification ({cfg.label_fraction:.0%} of labels): {SSL}")
    rows = {SSL: finetune(cfg, root, folder, "finetune_ssl", ssl_backbone, "finetune", seed, True)}
    print(f"[seed {seed}] {SCRATCH}, {FLOOR}")
    rows[SCRATCH] = finetune(cfg, root, folder, "supervised_scratch", None, "scratch", seed)
    rows[FLOOR] = finetune(cfg, root, folder, "random_frozen", None, "frozen", seed)
    if cfg.weights:
        print(f"[seed {seed}] {CONTINUED} ({cfg.weights})")
        existing = Backbone(cfg.backbone, image_size=cfg.image_size, weights=cfg.weights)
        rows[CONTINUED] = finetune(cfg, root, folder, "continued", existing, "finetune", seed)
    print(f"[seed {seed}] anomaly detection from the good images only")
    rows[ANOMALY_SSL] = anomaly(cfg, root, folder, "anomaly_ssl", weights, seed)
    rows[ANOMALY_RANDOM] = anomaly(cfg, root, folder, "anomaly_random", None, seed)
    return rows


# ----------------------------------------------------------------------------- statistics
def spread(values: Sequence[float], signed: bool = False, fmt: str = ".3f") -> str:
    """``median`` for one value, ``median [min, max]`` for several."""
    fmt = "+" + fmt if signed else fmt
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:{fmt}}"
    return f"{med:{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def beyond_spread(row: Sequence[float], ref: Sequence[float]) -> str:
    """Whether the paired differences ``row - ref`` exceed the seed spread.

    ``yes`` when every seed's difference has the same sign and the median difference is larger
    than the range (max - min) of either row over the seeds; ``n/a`` with a single seed.
    """
    if len(row) < 2:
        return "n/a (1 seed)"
    diffs = [a - b for a, b in zip(row, ref, strict=True)]
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    seed_range = max(max(row) - min(row), max(ref) - min(ref))
    return "yes" if same_sign and abs(statistics.median(diffs)) > seed_range else "no"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _diff(row: Sequence[float], ref: Sequence[float]) -> list[str]:
    """Paired difference ``row - ref``: median [min, max], and whether beyond the spread."""
    diffs = [a - b for a, b in zip(row, ref, strict=True)]
    return [spread(diffs, signed=True), beyond_spread(row, ref)]


def tables(per_seed: list[dict[str, dict]]) -> str:
    """The three markdown tables: classification, paired differences, anomaly detection."""
    names = list(per_seed[0])
    values = {n: {k: [s[n][k] for s in per_seed] for k in per_seed[0][n]} for n in names}
    classify = [n for n in names if "auroc" in values[n]]
    detect = [n for n in names if "image_auroc" in values[n]]
    keys = [k for k in (*METRICS, "threshold", "best_epoch") if k in values[classify[0]]]
    rows = [
        [n, *(spread(values[n][k], fmt="g" if k == "best_epoch" else ".3f") for k in keys)]
        for n in classify
    ]
    out = [_markdown(["defect classification", *(LABELS[k] for k in keys)], rows)]
    header = ["difference to the SSL row"]
    for k in DIFF_METRICS:
        header += [f"Δ {LABELS[k]}", "beyond seed spread"]
    rows = [
        [f"{n} − SSL", *(c for k in DIFF_METRICS for c in _diff(values[n][k], values[SSL][k]))]
        for n in classify[1:]
    ]
    out.append(_markdown(header, rows))
    if detect:
        akeys = [k for k in ANOMALY_KEYS if k in values[detect[0]]]
        rows = [[n, *(spread(values[n][k]) for k in akeys)] for n in detect]
        ref, other = detect[0], detect[1:]
        for n in other:
            cells = [
                "{} (beyond seed spread: {})".format(*_diff(values[n][k], values[ref][k]))
                for k in akeys
            ]
            rows.append([f"{n} − SSL", *cells])
        out.append(
            _markdown(["anomaly detection (good images only)", *map(LABELS.get, akeys)], rows)
        )
    out += _per_type_tables(values, classify, detect)
    return "\n\n".join(out)


def _per_type_tables(values: dict, classify: list[str], detect: list[str]) -> list[str]:
    """Per defect type: each classifier's recall at its threshold, each detector's AUROC
    against good; then one line per type a row catches less than half the time."""
    out, short = [], []
    for rows, key, title in (
        (classify, "recall/", "recall at the threshold, per defect type"),
        (detect, "auroc/", "anomaly image AUROC against good, per defect type"),
    ):
        types = [k[len(key) :] for k in (values[rows[0]] if rows else {}) if k.startswith(key)]
        if not types:
            continue
        cells = [[n, *(spread(values[n][key + t]) for t in types)] for n in rows]
        out.append(_markdown([title, *types], cells))
        if key == "recall/":
            short += [
                f"{n}: catches {t!r} in {statistics.median(values[n][key + t]):.0%} of test "
                "images at its threshold (less than half)"
                for n in rows
                if n in (SSL, CONTINUED)  # the pretrained rows; the baselines are references
                for t in types
                if statistics.median(values[n][key + t]) < MIN_RECALL
            ]
    if short:
        out.append("\n".join(short))
    return out


# ----------------------------------------------------------------------------- job
def _report(cfg: QuickstartConfig, root: Path, folder: Path, table: str, minutes: float) -> str:
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    over = f"median [min, max] over seeds {seeds}" if cfg.seeds > 1 else f"seed {cfg.seed}"
    return (
        f"Test split of {root} ({cfg.backbone}, {cfg.image_size} px; {over}). Classification: "
        f"{cfg.label_fraction:.0%} of the training labels; every row trains until its "
        f"validation AUROC has not improved for {cfg.patience} epochs (at most "
        f"{cfg.finetune_epochs}) and is tested at its best epoch, with the threshold chosen "
        f"there. Differences are paired per seed; 'beyond seed "
        f"spread' = same sign on every seed and larger than either row's range.\n\n{table}\n\n"
        f"Run folder: {folder.resolve()} ({minutes:.1f} min)\n"
        f"  pretrain/backbone.safetensors  exported backbone (timm loads it)\n"
        f"  finetune_ssl/classifier.onnx   deployable classifier (threshold in metadata)\n"
        f"  */figures/                     confusion matrices, ROC curves, embeddings\n"
        f"  seed_N/                        the same for the other seeds\n"
    )


def run_quickstart(cfg: QuickstartConfig) -> dict[str, list[dict[str, float]]]:
    """Run the whole job; returns each row's test metrics per seed and writes ``results.md``."""
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}.")
    if cfg.weights and not Path(cfg.weights).is_file():
        raise FileNotFoundError(f"--weights {cfg.weights}: no such file.")
    start = time.perf_counter()
    folder = Path(cfg.output)
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.root is None:
        root = default_dataset(nuisance=cfg.nuisance, image_size=max(64, cfg.image_size))
    else:
        root = Path(cfg.root)
    print(f"factory data: {root}")
    per_seed = []
    per_type_log = logging.getLogger("lit_ssl.per_type")
    level = per_type_log.level
    per_type_log.setLevel(logging.ERROR)  # the per-type table below calls the misses out
    try:
        for i, seed in enumerate(range(cfg.seed, cfg.seed + cfg.seeds)):
            run_folder = folder if i == 0 else folder / f"seed_{seed}"
            per_seed.append(run_seed(cfg, root, run_folder, seed))
    finally:
        per_type_log.setLevel(level)
    table = tables(per_seed)
    report = _report(cfg, root, folder, table, (time.perf_counter() - start) / 60)
    (folder / "results.md").write_text(report)
    print("\n" + report)
    return {name: [s[name] for s in per_seed] for name in per_seed[0]}


def main(argv: list[str] | None = None) -> int:
    """``lit-ssl quickstart [--fast] [--seeds N] [--weights FILE] [--output DIR] [--backbone]
    [--root DIR]``."""
    parser = argparse.ArgumentParser(prog="lit-ssl quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="sub-minute smoke run")
    parser.add_argument("--output", default="runs/quickstart", help="run folder")
    parser.add_argument("--backbone", default=None, help="timm architecture name")
    parser.add_argument(
        "--root", default=None, help="an MVTec-style tree to run on (default: embedded data)"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (e.g. 3)")
    parser.add_argument(
        "--weights", default=None, help="existing (ImageNet/timm) weights: adds a row"
    )
    args = parser.parse_args(argv)
    overrides = {"output": args.output, "seed": args.seed, "seeds": args.seeds}
    overrides["weights"] = args.weights
    if args.root:
        overrides["root"] = args.root
    if args.backbone:
        overrides["backbone"] = args.backbone
    cfg = QuickstartConfig.fast(**overrides) if args.fast else QuickstartConfig(**overrides)
    run_quickstart(cfg)
    return 0
