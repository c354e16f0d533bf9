"""Class names, integer labels and deterministic stratified splits for a list of samples.

Rules (documented in docs/data.md):

- Class index 0 is the defect-free class (``good``/``ok``/``normal``) when there is one; defect
  classes follow, sorted by name. Unknown labels are -1.
- A layout's own splits (MVTec/VisA train/test, a CSV's split column) are kept; ``resplit=True``
  drops them and re-splits the whole dataset (opt-in).
- Samples without a split are split per class (stratified) with a seeded RNG: ``test_fraction`` to
  test, ``val_fraction`` to val, the rest to train. Unlabeled samples never go to test.
- If no validation samples result (a layout with train/test only), ``val_fraction`` of train moves
  to val, stratified (logged once); test is never touched.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from lit_ssl.data.layouts import GOOD_NAMES, Sample

__all__ = [
    "Labelling",
    "assign_splits",
    "class_names_of",
    "encode_labels",
    "good_index",
    "hide_labels",
    "label_samples",
    "merge_defect_types",
    "train_classes_message",
]

log = logging.getLogger("lit_ssl.data")


def class_names_of(samples: list[Sample]) -> list[str]:
    """Class names with the defect-free class first and defect classes sorted after it.

    Args:
        samples: The dataset's samples.

    Returns:
        Class names; empty when no sample has a label.
    """
    names = sorted({s.label for s in samples if s.label is not None})
    for good in GOOD_NAMES:
        match = [n for n in names if n.lower() == good]
        if match:
            names.remove(match[0])
            return [match[0], *names]
    return names


def good_index(class_names: list[str]) -> int | None:
    """Index of the defect-free class, or None if no class is named good/ok/normal."""
    if class_names and class_names[0].lower() in GOOD_NAMES:
        return 0
    return None


def encode_labels(samples: list[Sample], class_names: list[str]) -> np.ndarray:
    """Integer labels (int64), -1 where unknown."""
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index.get(s.label, -1) for s in samples], dtype=np.int64)


def _take(n: int, fraction: float) -> int:
    count = int(round(fraction * n))
    if fraction > 0 and count == 0 and n >= 3:
        count = 1
    return min(count, n)


def _stratified(
    indices: np.ndarray, labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[int, str]:
    rng = np.random.default_rng(seed)
    chosen: dict[int, str] = {}
    for label in np.unique(labels[indices]):
        group = rng.permutation(indices[labels[indices] == label])
        start = 0
        for split, fraction in fractions.items():
            if split == "test" and label < 0:
                continue
            count = _take(len(group), fraction)
            chosen.update({int(i): split for i in group[start : start + count]})
            start += count
        chosen.update({int(i): "train" for i in group[start:]})
    return chosen


def _layout_splits(samples: list[Sample], resplit: bool) -> np.ndarray:
    splits = np.array([s.split for s in samples], dtype=object)
    if resplit and (splits != None).any():  # noqa: E711 (element-wise comparison)
        log.info("resplit=True: the layout's own splits are replaced by a stratified re-split")
        splits[:] = None
    return splits


def assign_splits(
    samples: list[Sample],
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    resplit: bool = False,
) -> np.ndarray:
    """Give every sample a split, deterministically (see the module docstring).

    Args:
        samples: The dataset's samples.
        labels: Their integer labels (-1 unknown).
        val_fraction: Fraction of each class for validation.
        test_fraction: Fraction of each labeled class for test.
        seed: Seed of the split.
        resplit: Drop the layout's own splits and split the whole dataset.

    Returns:
        Array of ``"train"``/``"val"``/``"test"`` strings, one per sample.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and sum to less than 1"
        )
    splits = _layout_splits(samples, resplit)
    free = np.flatnonzero(splits == None)  # noqa: E711 (element-wise comparison)
    fractions = {"test": test_fraction, "val": val_fraction}
    for i, split in _stratified(free, labels, fractions, seed).items():
        splits[i] = split
    if not (splits == "val").any() and val_fraction > 0:
        train = np.flatnonzero(splits == "train")
        if len(free) < len(splits):
            log.info(
                "the layout has no val split: val_fraction=%s of train moves to val", val_fraction
            )
        for i, split in _stratified(train, labels, {"val": val_fraction}, seed + 1).items():
            splits[i] = split
    return splits.astype(str)


def train_classes_message(labels: np.ndarray, splits: np.ndarray) -> str | None:
    """Why a classifier cannot train on these splits, or None when it can.

    Args:
        labels: Integer labels (-1 unknown).
        splits: Split of every sample.

    Returns:
        An error message when train holds fewer than two known classes while the dataset has
        more (an MVTec/VisA train split is defect-free), else None.
    """
    train = set(labels[(splits == "train") & (labels >= 0)].tolist())
    every = set(labels[labels >= 0].tolist())
    if len(train) >= 2 or len(every) < 2:
        return None
    return (
        f"the layout's train split holds {len(train)} class(es) but the dataset has {len(every)}: "
        "task='classify' needs defects in training; pass resplit=True (--data.resplit true) "
        "to re-split the whole dataset, stratified"
    )


def hide_labels(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep only ``fraction`` of the known labels among ``indices`` (at least one per class).

    Args:
        labels: All labels (-1 unknown); not modified.
        indices: The samples concerned (usually the train split).
        fraction: Fraction of labels to keep per class, in (0, 1].
        seed: Seed of the choice.

    Returns:
        A copy of ``labels`` with the hidden ones set to -1.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction={fraction} must be in (0, 1]")
    out = labels.copy()
    rng = np.random.default_rng(seed)
    for label in np.unique(labels[indices]):
        if label < 0:
            continue
        group = rng.permutation(indices[labels[indices] == label])
        out[group[max(1, math.ceil(fraction * len(group))) :]] = -1
    return out


@dataclass(frozen=True)
class Labelling:
    """Every sample's class, defect type and split.

    Attributes:
        class_names: Names of the label indices (``[good, "defect"]`` after a binary merge).
        type_names: Class names before a binary merge (the defect types).
        labels: Integer labels (-1 unknown).
        types: Integer defect types (indices into ``type_names``, -1 unknown).
        splits: ``"train"``/``"val"``/``"test"``, one per sample.
        train_labels: ``labels`` with the labels hidden by ``label_fraction`` set to -1.
    """

    class_names: list[str]
    type_names: list[str]
    labels: np.ndarray
    types: np.ndarray
    splits: np.ndarray
    train_labels: np.ndarray


def label_samples(
    samples: list[Sample],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    resplit: bool,
    label_fraction: float = 1.0,
    binary: bool = False,
) -> Labelling:
    """Name the classes, encode the labels, split the samples and hide training labels.

    Args:
        samples: The dataset's samples.
        val_fraction: Fraction of each class for validation.
        test_fraction: Fraction of each labeled class for test.
        seed: Seed of the split and of the hidden labels.
        resplit: Drop the layout's own splits and split the whole dataset.
        label_fraction: Fraction of the training labels kept per class.
        binary: Merge every defect type into one ``"defect"`` class.

    Returns:
        The labelling; ``types`` and ``type_names`` keep the defect types whole.

    Raises:
        ValueError: ``binary=True`` without a class named good/ok/normal.
    """
    class_names = class_names_of(samples)
    labels = encode_labels(samples, class_names)
    splits = assign_splits(samples, labels, val_fraction, test_fraction, seed, resplit)
    train = np.flatnonzero(splits == "train")
    train_labels = hide_labels(labels, train, label_fraction, seed)
    whole = Labelling(class_names, list(class_names), labels, labels.copy(), splits, train_labels)
    return merge_defect_types(whole) if binary and class_names else whole


def merge_defect_types(labelling: Labelling) -> Labelling:
    """The same labelling with every defect class merged into one ``"defect"`` (labels: 0 good,
    1 defect, -1 unknown); the defect types are kept in ``types``.

    Raises:
        ValueError: No class is named good/ok/normal.
    """
    names = labelling.class_names
    good = good_index(names)
    if good is None:
        raise ValueError(
            f"binary=True needs a defect-free class named good/ok/normal; classes are {names}"
        )
    labels, train_labels = (
        np.where(labels < 0, labels, (labels != good).astype(labels.dtype))
        for labels in (labelling.labels, labelling.train_labels)
    )
    return Labelling(
        [names[good], "defect"],
        labelling.type_names,
        labels,
        labelling.types,
        labelling.splits,
        train_labels,
    )
