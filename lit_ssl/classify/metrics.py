"""Defect classification metrics (torchmetrics) and their figures (matplotlib).

``DefectMetrics`` accumulates over an epoch and syncs across processes like any
torchmetrics collection:

* threshold-free, on the defect score ``1 - p(good)`` vs "is defective":
  ``auroc``, ``average_precision`` (and the ROC curve for the figure);
* on class decisions supplied by the caller (argmax, or the thresholded rule):
  ``f1_macro``, ``recall/<class>``, ``defect_recall``, ``defect_precision``,
  ``defect_f1`` and the confusion matrix.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinaryROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

__all__ = ["DefectMetrics", "log_stage_metrics", "save_confusion_matrix", "save_roc_curve"]


class DefectMetrics(nn.Module):
    """Epoch metrics of a defect classifier.

    Args:
        class_names: class names in label order.
        good_index: label of the good class.
        suffix: appended to decision-dependent metric names, e.g. ``"_at_threshold"``.
    """

    def __init__(self, class_names: list[str], good_index: int, suffix: str = "") -> None:
        super().__init__()
        num_classes = len(class_names)
        self.class_names = list(class_names)
        self.good_index = good_index
        self.suffix = suffix
        self.auroc = BinaryAUROC()
        self.average_precision = BinaryAveragePrecision()
        self.roc = BinaryROC()
        self.f1_macro = MulticlassF1Score(num_classes, average="macro")
        self.recall = MulticlassRecall(num_classes, average="none")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.defect_recall = BinaryRecall()
        self.defect_precision = BinaryPrecision()
        self.defect_f1 = BinaryF1Score()

    def update(self, scores: Tensor, preds: Tensor, targets: Tensor) -> None:
        """Add a batch: defect scores ``(B,)``, predicted and true class indices ``(B,)``."""
        is_defect = (targets != self.good_index).long()
        predicted_defect = (preds != self.good_index).long()
        for metric in (self.auroc, self.average_precision, self.roc):
            metric.update(scores.float(), is_defect)
        for metric in (self.f1_macro, self.recall, self.confusion):
            metric.update(preds, targets)
        for metric in (self.defect_recall, self.defect_precision, self.defect_f1):
            metric.update(predicted_defect, is_defect)

    def compute(self) -> dict[str, Tensor]:
        """Scalar metrics by name (``recall/<class>`` per class)."""
        s = self.suffix
        values = {
            "auroc": self.auroc.compute(),
            "average_precision": self.average_precision.compute(),
            f"f1_macro{s}": self.f1_macro.compute(),
            f"defect_recall{s}": self.defect_recall.compute(),
            f"defect_precision{s}": self.defect_precision.compute(),
            f"defect_f1{s}": self.defect_f1.compute(),
        }
        for name, value in zip(self.class_names, self.recall.compute(), strict=True):
            values[f"recall{s}/{name}"] = value
        return values

    def confusion_matrix(self) -> Tensor:
        """Counts ``(C, C)``, rows = true class, columns = predicted class."""
        return self.confusion.compute()

    def roc_curve(self) -> tuple[Tensor, Tensor]:
        """``(fpr, tpr)`` of the defect score."""
        fpr, tpr, _ = self.roc.compute()
        return fpr, tpr

    def reset(self) -> None:
        for module in self.children():
            module.reset()

    def figure_data(self) -> dict[str, Tensor]:
        """Confusion matrix and ROC curve (collective under DDP: call on every rank)."""
        fpr, tpr = self.roc_curve()
        return {
            "confusion": self.confusion_matrix(),
            "fpr": fpr,
            "tpr": tpr,
            "auroc": self.auroc.compute(),
        }

    def save_figures(
        self, data: dict[str, Tensor], directory: str | Path, prefix: str
    ) -> list[Path]:
        """Write ``<prefix>_confusion_matrix.png`` and ``<prefix>_roc.png`` into ``directory``.

        Args:
            data: output of ``figure_data``.
            directory: target folder (created if needed).
            prefix: file name prefix, e.g. ``"val"`` or ``"test"``.
        """
        directory = Path(directory)
        return [
            save_confusion_matrix(
                data["confusion"], self.class_names, directory / f"{prefix}_confusion_matrix.png"
            ),
            save_roc_curve(
                data["fpr"], data["tpr"], float(data["auroc"]), directory / f"{prefix}_roc.png"
            ),
        ]


def log_stage_metrics(module: Any, stage: str, metrics: DefectMetrics, figures: bool) -> None:
    """Log ``metrics``' epoch values as ``<stage>/<name>`` on ``module``, then reset them.

    With ``figures``, rank zero also saves the confusion matrix and ROC PNGs into the run
    folder's ``figures/`` (``module.trainer``'s logger folder).
    """
    with warnings.catch_warnings():  # e.g. AUROC of a sanity batch with one class only
        warnings.simplefilter("ignore", UserWarning)
        values = metrics.compute()
        data = metrics.figure_data() if figures else None
    metrics.reset()
    for name, value in values.items():
        module.log(f"{stage}/{name}", value)
    if data is not None:
        rank_zero_only(_save_stage_figures)(module.trainer, metrics, data, stage)


def _save_stage_figures(trainer: Any, metrics: DefectMetrics, data: Any, stage: str) -> None:
    # run_dir reads the logger's folder locally: trainer.log_dir is a collective
    from lit_ssl.callbacks.run_folder import run_dir

    metrics.save_figures(data, run_dir(trainer) / "figures", stage)


def save_confusion_matrix(matrix: Tensor, class_names: list[str], path: str | Path) -> Path:
    """Save a confusion matrix (rows true, columns predicted) as a PNG with counts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    counts = matrix.detach().cpu().long().numpy()
    size = max(3.0, 0.6 * len(class_names) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    half = counts.max() / 2 if counts.size else 0
    for i in ticks:
        for j in ticks:
            color = "white" if counts[i, j] > half else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color)
    return _save(fig, path)


def save_roc_curve(fpr: Tensor, tpr: Tensor, auroc: float, path: str | Path) -> Path:
    """Save the defect-vs-good ROC curve as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr.detach().cpu().numpy(), tpr.detach().cpu().numpy(), label=f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("false positive rate (good flagged)")
    ax.set_ylabel("true positive rate (defect recall)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
