"""The sample table: every image of a dataset with its label, defect type, split and scaling.

Built once from a root and :class:`TableOptions` (:meth:`SampleTable.build`): list the files
(:mod:`~lit_ssl.data.layouts`), decode them once to find bad ones and fill the cache
(:mod:`~lit_ssl.data.verify`), decide the pixel scaling (:mod:`~lit_ssl.data.scaling`), then
name the classes, split and hide labels (:mod:`~lit_ssl.data.table`). Plain Python and numpy:
no Lightning, no torch; :class:`~lit_ssl.data.FactoryDataModule` holds one and reads it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_ssl.data.layouts import Sample, find_samples
from lit_ssl.data.pixels import declared_depth
from lit_ssl.data.scaling import dataset_scaling
from lit_ssl.data.scan import Scaling, ScanResult
from lit_ssl.data.table import Labelling, good_index, label_samples, train_classes_message
from lit_ssl.data.verify import empty_message, report_unlisted, verify_files
from lit_ssl.data.walk import WalkReport

__all__ = ["SPLITS", "FromTable", "SampleTable", "TableOptions"]

log = logging.getLogger("lit_ssl.data")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TableOptions:
    """How to list, verify, scale, label and split a dataset (``FactoryDataModule``'s
    arguments of the same names)."""

    layout: str = "auto"
    category: str | None = None
    on_bad_file: str = "skip"
    verify_files: bool = True
    cache_images: bool | None = None
    cache_limit_mb: float | None = None
    bit_depth: int | None = None
    crop_size: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    label_fraction: float = 1.0
    binary: bool = False
    resplit: bool | None = None


def _resplit(options: TableOptions, root: Path, synthetic: bool) -> bool:
    """``resplit``, or by default whether the data is the synthetic data lit_ssl made."""
    if options.resplit is not None:
        return bool(options.resplit)
    made_here = synthetic or (root / "synthetic.json").is_file()
    if made_here:
        log.info("synthetic data made by lit_ssl: re-splitting it (pass resplit=False to keep)")
    return made_here


@dataclass
class SampleTable:
    """Every readable sample of a dataset and what is known of it.

    Attributes:
        root: The dataset root (a folder or a CSV manifest).
        layout: The layout it was read as.
        samples: The readable samples, in the layout's (sorted) order.
        labelling: Class names, labels, defect types, splits and training labels.
        scaling: The pixel scaling of every image.
        scan: The setup scan (decoded arrays in ``cache``; empty when nothing was decoded).
        skipped_files: Image files left out because they cannot be listed or decoded.
    """

    root: Path
    layout: str
    samples: list[Sample]
    labelling: Labelling
    scaling: Scaling
    scan: ScanResult
    skipped_files: list[str]

    @classmethod
    def build(cls, root: Path, options: TableOptions, synthetic: bool = False) -> SampleTable:
        """List, verify, scale, label and split the dataset under ``root``.

        Args:
            root: Dataset folder or CSV manifest.
            options: How (see :class:`TableOptions`).
            synthetic: ``root`` is the embedded synthetic data (re-split by default).

        Raises:
            ValueError: No image, or no readable one; a bad file with
                ``on_bad_file="raise"``; ``binary=True`` without a good class.
        """
        report = WalkReport()
        layout, listed = find_samples(root, options.layout, options.category, report)
        unlisted = report_unlisted(report.skipped, options.on_bad_file)
        if not listed:
            raise ValueError(empty_message(root, layout))
        paths = [s.path for s in listed]
        scan = verify_files(
            paths,
            options.verify_files,
            options.cache_images,
            options.cache_limit_mb,
            options.on_bad_file,
            options.crop_size,
        )
        samples = [s for s in listed if s.path not in scan.bad]
        if not samples:
            raise ValueError(f"none of the {len(listed)} files under {root} is readable")
        scaling = dataset_scaling(paths, scan, options.bit_depth)  # every listed file
        labelling = label_samples(
            samples,
            options.val_fraction,
            options.test_fraction,
            options.seed,
            _resplit(options, root, synthetic),
            options.label_fraction,
            options.binary,
        )
        skipped = sorted({*scan.bad, *unlisted})
        return cls(root, layout, samples, labelling, scaling, scan, skipped)

    # ------------------------------------------------------------------ labels

    @property
    def class_names(self) -> list[str]:
        """Names of the label indices, the good class first (empty: unlabelled)."""
        return self.labelling.class_names

    @property
    def good_index(self) -> int | None:
        """Index of the defect-free class, or None if no class is named good/ok/normal."""
        return good_index(self.class_names)

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class over the whole dataset (``"unlabeled"`` for unknown labels)."""
        names = [*self.class_names, "unlabeled"]
        return dict(Counter(names[label] for label in self.labelling.labels.tolist()))

    @property
    def train_class_counts(self) -> list[int]:
        """Training labels used per class (after ``label_fraction`` and ``binary``)."""
        labelling = self.labelling
        used = labelling.train_labels[(labelling.splits == "train") & (labelling.train_labels >= 0)]
        return np.bincount(used, minlength=len(self.class_names)).tolist()

    def check_labels(self, who: str, stage: str, training: bool) -> None:
        """Raise when the data has no labels, or (``training``) a train split of one class.

        Args:
            who: What needs them (``"task='classify'"``).
            stage: The Lightning stage they are needed for (``fit``, ``validate``, ``test``).
            training: Also require two classes in the train split.
        """
        if not self.class_names:
            raise ValueError(
                f"{who} needs labels to {stage} but layout {self.layout!r} has none; use class "
                "folders, an MVTec/VisA tree or a CSV manifest with a label column (predicting "
                "needs no labels)"
            )
        message = train_classes_message(self.labelling.labels, self.labelling.splits)
        if training and message is not None:
            raise ValueError(message)

    # ------------------------------------------------------------------ splits

    @property
    def split_sizes(self) -> dict[str, int]:
        """Images per split."""
        return {split: int((self.labelling.splits == split).sum()) for split in SPLITS}

    def indices(self, split: str, labels: np.ndarray, labelled_only: bool) -> np.ndarray:
        """The samples of ``split`` (``"all"``: every sample), in order.

        Args:
            split: ``train``, ``val``, ``test`` or ``all``.
            labels: The labels that decide ``labelled_only``.
            labelled_only: Leave out samples whose label is unknown (-1).

        Raises:
            ValueError: The split is empty.
        """
        if split == "all":
            return np.arange(len(self.samples))
        indices = np.flatnonzero(self.labelling.splits == split)
        if labelled_only:
            indices = indices[labels[indices] >= 0]
        if len(indices) == 0:
            raise ValueError(
                f"the {split} split is empty (split sizes {self.split_sizes}); add images or "
                "change val_fraction/test_fraction"
            )
        return indices

    # ------------------------------------------------------------------ files

    @property
    def paths(self) -> list[str]:
        """Every sample's image file."""
        return [s.path for s in self.samples]

    def mask_files(self) -> list[str | None] | None:
        """Every sample's mask file, or None when the dataset has no masks at all."""
        files = [s.mask for s in self.samples]
        return files if any(f is not None for f in files) else None

    def declared_depths(self) -> dict[str, int | None]:
        """The depths (9..15) that scanned 16-bit TIFFs declare, by path."""
        return {
            path: stats.declared_bits
            for path, stats in self.scan.stats.items()
            if declared_depth(stats.declared_bits) is not None
        }

    def rows(self) -> list[dict[str, str | int | None]]:
        """One row per sample: ``path``, ``label`` (name or None), ``target`` (int, -1
        unknown), ``split`` and ``mask`` (path or None)."""
        labelling = self.labelling
        return [
            {
                "path": s.path,
                "label": s.label,
                "target": int(target),
                "split": str(split),
                "mask": s.mask,
            }
            for s, target, split in zip(
                self.samples, labelling.labels, labelling.splits, strict=True
            )
        ]


class FromTable:
    """A read-only attribute of the owner's ``table`` (a :class:`SampleTable`; None before
    setup, when reading it raises ``error``).

    Args:
        path: Dotted attribute path in the table (``"labelling.labels"``).
        doc: The attribute's docstring.
        error: Raised before setup (``AttributeError``: ``getattr`` with a default works).
    """

    def __init__(self, path: str, doc: str, error: type[Exception] = AttributeError):
        self.path, self.error, self.__doc__ = path, error, doc
        self.name = path

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, holder: Any, owner: type | None = None) -> Any:
        if holder is None:
            return self
        value = holder.table
        if value is None:
            raise self.error(
                f"{self.name}: call setup() first (the Trainer does it before fitting)"
            )
        for part in self.path.split("."):
            value = getattr(value, part)
        return value
