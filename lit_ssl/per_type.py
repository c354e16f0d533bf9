"""Per-defect-type evidence: how each defect type fares, not only defects as a whole.

A headline AUROC over all defects can hide a type the model never catches (a classifier at
0.93 AUROC that passes every scratch). ``PerTypeEvidence`` accumulates, over a test epoch,
each image's score, its decision at the stored threshold and its defect type, and reports per
type: the share caught at the threshold (recall) and the AUROC of that type against the good
images. ``callouts`` turns a type caught less than half the time into one line a user reads.

It is a torchmetrics ``Metric`` (states concatenated across DDP ranks at ``compute``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

from lit_ssl.data.table import good_index

__all__ = [
    "MIN_RECALL",
    "PerTypeEvidence",
    "TypeEvidence",
    "callouts",
    "data_type_names",
    "log_per_type",
    "name_types",
]

log = logging.getLogger(__name__)

MIN_RECALL = 0.5  # a type caught less often than this is called out


class TypeEvidence(NamedTuple):
    """One defect type's figures on a test set.

    Attributes:
        images: test images of this type.
        caught: how many of them were flagged at the stored threshold.
        auroc: AUROC of this type's scores against the good images' (None without goods).
    """

    images: int
    caught: int
    auroc: float | None

    @property
    def recall(self) -> float:
        """Share of this type's images flagged at the threshold."""
        return self.caught / self.images


class PerTypeEvidence(Metric):
    """Recall at the threshold and AUROC against good, per defect type.

    Args:
        type_names: defect type names in type-index order (the data's class names before
            any merge into "defect"), the good class among them.
        good_index: index of the good (defect-free) class in ``type_names``.

    Example:
        >>> evidence = PerTypeEvidence(["good", "crack", "scratch"])
        >>> scores = torch.tensor([0.1, 0.2, 0.9, 0.8, 0.3, 0.15])
        >>> evidence.update(scores, scores > 0.5, torch.tensor([0, 0, 1, 1, 2, 2]))
        >>> result = evidence.compute()
        >>> result["crack"].recall, result["scratch"].recall, result["scratch"].auroc
        (1.0, 0.0, 0.75)
    """

    full_state_update = False

    def __init__(self, type_names: Sequence[str] = (), good_index: int = 0) -> None:
        super().__init__()
        self.name_types(type_names, good_index)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("flagged", default=[], dist_reduce_fx="cat")
        self.add_state("types", default=[], dist_reduce_fx="cat")

    def name_types(self, type_names: Sequence[str], good_index: int = 0) -> None:
        """Set the type names (e.g. at test start, from the data module) and the good one.

        Args:
            type_names: names in type-index order; empty: nothing is reported.
            good_index: index of the good (defect-free) class in ``type_names``.
        """
        if type_names and not 0 <= good_index < len(type_names):
            raise ValueError(f"good_index={good_index} is not an index of {list(type_names)}.")
        self.type_names = list(type_names)
        self.good_index = good_index

    def update(self, scores: Tensor, flagged: Tensor, types: Tensor) -> None:
        """Add a batch: scores ``(B,)``, decisions ``(B,)`` (True: defect), type indices
        ``(B,)`` (-1: unknown, left out). No host sync."""
        known = types >= 0
        self.scores.append(scores.detach().float()[known])
        self.flagged.append(flagged.detach().bool()[known])
        self.types.append(types.detach().long()[known])

    def compute(self) -> dict[str, TypeEvidence]:
        """``{type name: TypeEvidence}`` for every defect type with test images."""
        if len(self.scores) == 0 or not self.type_names:  # a list, or a tensor once synced
            return {}
        scores, flagged = dim_zero_cat(self.scores), dim_zero_cat(self.flagged)
        types = dim_zero_cat(self.types)
        inside = types < len(self.type_names)  # indices the names do not cover: left out
        scores, flagged, types = scores[inside], flagged[inside], types[inside]
        good = scores[types == self.good_index]
        counts = torch.bincount(types, minlength=len(self.type_names)).tolist()
        caught = torch.bincount(types[flagged], minlength=len(self.type_names)).tolist()
        result = {}
        for index, name in enumerate(self.type_names):  # one step per type, at epoch end
            if index == self.good_index or counts[index] == 0:
                continue
            result[name] = TypeEvidence(
                counts[index], caught[index], _auroc(good, scores[types == index])
            )
        return result


def _auroc(good: Tensor, defect: Tensor) -> float | None:
    if good.numel() == 0:
        return None
    target = torch.cat([torch.zeros_like(good), torch.ones_like(defect)]).long()
    return float(binary_auroc(torch.cat([good, defect]), target))


def callouts(evidence: dict[str, TypeEvidence], min_recall: float = MIN_RECALL) -> list[str]:
    """One line per defect type caught less than ``min_recall`` of the time.

    Example:
        >>> callouts({"scratch": TypeEvidence(images=8, caught=0, auroc=0.57)})[0][:46]
        "defect type 'scratch': caught in 0 of 8 test i"
    """
    lines = []
    for name, figures in evidence.items():
        if figures.recall < min_recall:
            auroc = "" if figures.auroc is None else f", AUROC against good {figures.auroc:.2f}"
            lines.append(
                f"defect type {name!r}: caught in {figures.caught} of {figures.images} test "
                f"images at the stored threshold (recall {figures.recall:.2f}{auroc}); the model "
                "misses this type: see docs/benchmarks.md, per-defect-type evidence."
            )
    return lines


def log_per_type(module, evidence: PerTypeEvidence, stage: str = "test") -> dict[str, TypeEvidence]:
    """Log ``<stage>/defect_recall_at_threshold/<type>`` (the share flagged as a defect, of
    any class) and ``<stage>/auroc_vs_good/<type>`` for every defect type, call out (one
    line each, rank 0) the types caught less than half the time, and reset ``evidence``.
    Call it on every rank (``compute`` gathers the ranks' states).

    Args:
        module: the LightningModule that logs.
        evidence: the epoch's accumulated evidence.
        stage: the metric prefix.

    Returns:
        The per-type figures.
    """
    result = evidence.compute() if evidence.update_count else {}
    for name, figures in result.items():
        module.log(f"{stage}/defect_recall_at_threshold/{name}", figures.recall)
        if figures.auroc is not None:
            module.log(f"{stage}/auroc_vs_good/{name}", figures.auroc)
    for line in callouts(result):
        rank_zero_only(log.warning)(line)
    evidence.reset()
    return result


def name_types(evidence: PerTypeEvidence, names: Sequence[str]) -> None:
    """Name ``evidence``'s types ``names`` when one of them is the good class (named
    good/ok/normal: the reference of "against good"); otherwise nothing is reported."""
    good = good_index(list(names))
    evidence.name_types(names if good is not None else [], good or 0)


def data_type_names(module, fallback: Sequence[str]) -> list[str]:
    """The defect type names of the module's data: the data module's ``type_names`` (class
    names before a binary merge), else its ``class_names``, else ``fallback``."""
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    for attribute in ("type_names", "class_names"):
        names = getattr(datamodule, attribute, None)
        if names:
            return list(names)
    return list(fallback)
