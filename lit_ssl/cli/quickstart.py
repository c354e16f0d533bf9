"""``lit-ssl quickstart``: the end-to-end main job on the embedded synthetic factory data.

1. generate (once, cached) the synthetic MVTec-style factory dataset;
2. pretrain a small backbone with a joint-embedding head (VICReg) on it, labels unused;
3. fine-tune a ``DefectClassifier`` with ``DefectFinetuning`` on a small labelled subset;
4. train the same classifier from random initialisation with the same budget;
5. print defect AUROC / F1 / recall at the validation-chosen threshold for both.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_ssl.backbone import Backbone
from lit_ssl.callbacks.finetune import DefectFinetuning
from lit_ssl.callbacks.monitors import CollapseMonitor, EmbeddingPlot, FiniteLossGuard
from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.data import FactoryDataModule
from lit_ssl.data.synthetic import default_dataset
from lit_ssl.heads import VICReg
from lit_ssl.module import SSLModule

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


@dataclass
class QuickstartConfig:
    """Budget of the quickstart; ``fast()`` is the sub-minute smoke version."""

    backbone: str = "resnet10t"
    image_size: int = 64
    nuisance: float = 0.5
    ssl_epochs: int = 25
    finetune_epochs: int = 10
    frozen_epochs: int = 3
    label_fraction: float = 0.25
    batch_size: int = 64
    projector_dim: int = 1024
    output: str = "runs/quickstart"
    seed: int = 0
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
        )
        return cls(**(base | kwargs))


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


def _data(cfg: QuickstartConfig, root: Path, task: str) -> FactoryDataModule:
    return FactoryDataModule(
        root=str(root),
        task=task,
        policy="surface",
        image_size=cfg.image_size,
        in_chans=3,
        batch_size=cfg.batch_size if task == "ssl" else 32,
        label_fraction=1.0 if task == "ssl" else cfg.label_fraction,
        seed=cfg.seed,
    )


def pretrain(cfg: QuickstartConfig, root: Path, folder: Path) -> Path:
    """Pretrain with VICReg on the unlabeled images; returns the exported backbone file."""
    head = VICReg(hidden_dim=cfg.projector_dim, out_dim=cfg.projector_dim)
    module = SSLModule(Backbone(cfg.backbone, image_size=cfg.image_size), head, lr=2e-3)
    callbacks = [CollapseMonitor(), EmbeddingPlot()]
    trainer = _trainer(folder, "pretrain", cfg.ssl_epochs, callbacks, cfg.seed)
    trainer.fit(module, datamodule=_data(cfg, root, "ssl"))
    return module.export_backbone(folder / "pretrain" / "backbone.safetensors")


def finetune(
    cfg: QuickstartConfig, root: Path, folder: Path, name: str, weights: Path | None
) -> dict[str, float]:
    """Fine-tune a DefectClassifier (from ``weights`` or random init); test metrics."""
    data = _data(cfg, root, "classify")
    data.setup("fit")
    classifier = DefectClassifier(
        backbone=cfg.backbone,
        weights=str(weights) if weights else None,
        class_names=data.class_names,
        image_size=cfg.image_size,
        lr=3e-3,
        threshold_mode="f1",
    )
    finetuning = DefectFinetuning(unfreeze_at_epoch=cfg.frozen_epochs, backbone_lr_factor=0.1)
    trainer = _trainer(folder, name, cfg.finetune_epochs, [finetuning], cfg.seed)
    trainer.fit(classifier, datamodule=data)
    results = trainer.test(classifier, datamodule=data, verbose=False)[0]
    onnx_path = classifier.to_onnx(folder / name / "classifier.onnx")
    metrics = {key: float(results[TEST_KEYS[key]]) for key in METRICS}
    metrics["threshold"] = float(classifier.threshold)
    metrics["onnx"] = str(onnx_path)
    return metrics


def _table(rows: dict[str, dict[str, float]]) -> str:
    header = f"{'initialisation':<26}" + "".join(f"{m:>19}" for m in METRICS) + f"{'threshold':>11}"
    lines = [header, "-" * len(header)]
    for name, metrics in rows.items():
        values = "".join(f"{metrics[m]:>19.3f}" for m in METRICS)
        lines.append(f"{name:<26}{values}{metrics['threshold']:>11.3f}")
    return "\n".join(lines)


def run_quickstart(cfg: QuickstartConfig) -> dict[str, dict[str, float]]:
    """Run the whole job; returns test metrics per initialisation and writes ``results.md``."""
    start = time.perf_counter()
    folder = Path(cfg.output)
    folder.mkdir(parents=True, exist_ok=True)
    root = default_dataset(nuisance=cfg.nuisance, image_size=max(64, cfg.image_size))
    print(f"[1/4] synthetic factory data: {root}")
    print(f"[2/4] self-supervised pretraining ({cfg.backbone}, VICReg, {cfg.ssl_epochs} epochs)")
    weights = pretrain(cfg, root, folder)
    print(f"[3/4] fine-tuning from the pretrained backbone ({cfg.label_fraction:.0%} of labels)")
    rows = {"self-supervised (VICReg)": finetune(cfg, root, folder, "finetune_ssl", weights)}
    print("[4/4] same classifier from random initialisation, same budget")
    rows["random init"] = finetune(cfg, root, folder, "finetune_random", None)
    minutes = (time.perf_counter() - start) / 60
    table = _table(rows)
    report = (
        f"Test split of {root}, threshold chosen on validation ({cfg.label_fraction:.0%} of the "
        f"training labels, {cfg.finetune_epochs} fine-tuning epochs):\n\n{table}\n\n"
        f"Run folder: {folder.resolve()} ({minutes:.1f} min)\n"
        f"  pretrain/backbone.safetensors  exported backbone (timm loads it)\n"
        f"  finetune_ssl/classifier.onnx   deployable classifier (threshold in metadata)\n"
        f"  */figures/                     confusion matrices, ROC curves, embeddings\n"
    )
    (folder / "results.md").write_text(report)
    print("\n" + report)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``lit-ssl quickstart [--fast] [--output DIR] [--backbone NAME]``."""
    parser = argparse.ArgumentParser(prog="lit-ssl quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="sub-minute smoke run")
    parser.add_argument("--output", default="runs/quickstart", help="run folder")
    parser.add_argument("--backbone", default=None, help="timm architecture name")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    overrides = {"output": args.output, "seed": args.seed}
    if args.backbone:
        overrides["backbone"] = args.backbone
    cfg = QuickstartConfig.fast(**overrides) if args.fast else QuickstartConfig(**overrides)
    run_quickstart(cfg)
    return 0
