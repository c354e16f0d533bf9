"""Counting the classifier's training labels, for its "balanced" class weights.

The counts come from ``datamodule.train_class_counts`` first, then the train dataset's own
``class_counts`` / ``labels`` / ``targets``, else one pass over the train dataloader (summed
over DDP ranks); never from validation or test labels. The weights themselves are
``lit_ssl.losses.balanced_class_weights``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lit_ssl.data.batch import as_batch

__all__ = ["counts_from", "log_weights", "train_class_counts"]

log = logging.getLogger(__name__)


def train_class_counts(trainer: L.Trainer, classes: list[str], device: torch.device) -> Tensor:
    """Counts ``(C,)`` of the training labels actually used (after ``label_fraction``).

    Args:
        trainer: the fitting trainer (its datamodule and train dataloader are read).
        classes: the classifier's class names, in label order.
        device: where the one-pass count is reduced across ranks.
    """
    datamodule = getattr(trainer, "datamodule", None)
    counts = getattr(datamodule, "train_class_counts", None)
    if callable(counts):
        counts = counts()
    if counts is not None:
        return _checked_counts(counts, classes)
    loader = trainer.train_dataloader
    dataset = loader.dataset if isinstance(loader, DataLoader) else None
    counts = counts_from(dataset, classes)
    if counts is not None:
        return counts
    rank_zero_warn(
        "DefectClassifier: neither the datamodule (train_class_counts) nor the train "
        "dataset (labels) tells the class counts; counting training labels with one pass "
        "over the train dataloader."
    )
    num = len(classes)
    counts = torch.zeros(num, dtype=torch.long)
    for batch in loader:
        labels = as_batch(batch).labels
        counts += torch.bincount(labels.flatten().cpu(), minlength=num)[:num]
    return trainer.strategy.reduce(counts.to(device), reduce_op="sum").cpu()


def _checked_counts(counts: Sequence[int], classes: list[str]) -> Tensor:
    counts = torch.as_tensor(list(counts)).long().flatten()
    if counts.numel() != len(classes):
        raise ValueError(
            f"datamodule.train_class_counts has {counts.numel()} entries for the classifier's "
            f"{len(classes)} classes {classes}; build the classifier with "
            "class_names=datamodule.class_names."
        )
    return counts


def counts_from(source: Any, classes: list[str]) -> Tensor | None:
    """Class counts from ``class_counts`` or a ``labels``/``targets`` list, if ``source`` has one.

    ``class_counts`` may be a sequence in label order or a ``{class_name: count}`` dict.
    """
    if source is None:
        return None
    num = len(classes)
    counts = getattr(source, "class_counts", None)
    if callable(counts):
        counts = counts()
    if counts is not None:
        if isinstance(counts, dict):
            counts = [counts.get(name, 0) for name in classes]
        return torch.as_tensor(counts).long().flatten()[:num]
    for attr in ("labels", "targets"):
        labels = getattr(source, attr, None)
        if labels is not None and not callable(labels):
            labels = torch.as_tensor(labels).long().flatten()
            return torch.bincount(labels[labels >= 0], minlength=num)[:num]
    return None


def log_weights(classes: list[str], counts: Tensor, weights: Tensor) -> None:
    """Log each class's count and weight (call on rank zero)."""
    parts = ", ".join(
        f"{c}: n={int(n)} w={float(w):.3f}"
        for c, n, w in zip(classes, counts.tolist(), weights.tolist(), strict=True)
    )
    log.info("DefectClassifier balanced class weights: %s", parts)
