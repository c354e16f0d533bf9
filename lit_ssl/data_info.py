"""What a model or a callback needs from the data, read in one place.

Models and callbacks do not reach into ``trainer.datamodule``: they call :func:`data_info`
once in their ``setup`` (Lightning runs the datamodule's ``setup`` first) and keep the
:class:`DataInfo` record. A DataModule tells lit_ssl about its data by having any of these
(all optional; ``FactoryDataModule`` has them all):

* ``class_names``: names of the label indices (``[]`` or ``None``: unlabelled data);
* ``type_names``: defect type names before a binary merge (default: ``class_names``);
* ``good_index``: index of the defect-free class in ``class_names``;
* ``train_class_counts``: training labels per class, aligned with ``class_names``;
* ``image_size``, ``in_chans``, ``num_workers``: as attributes or hyperparameters
  (``self.save_hyperparameters()``).

This module imports no lit_ssl module (ground floor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DataInfo", "data_info"]


@dataclass(frozen=True)
class DataInfo:
    """What the data says about itself; ``None`` (or empty) where it says nothing.

    Attributes:
        class_names: names of the label indices; empty when the data is unlabelled.
        type_names: defect type names (class names before a binary merge).
        good_index: index of the defect-free class in ``class_names``.
        train_class_counts: training labels per class, aligned with ``class_names``.
        image_size: side of the square images the loaders yield.
        in_chans: channels of those images.
        num_workers: DataLoader worker processes.
    """

    class_names: tuple[str, ...] = ()
    type_names: tuple[str, ...] = ()
    good_index: int | None = None
    train_class_counts: tuple[int, ...] = ()
    image_size: int | None = None
    in_chans: int | None = None
    num_workers: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of labelled classes (0 when unlabelled)."""
        return len(self.class_names)


def _items(value: Any, kind: type) -> tuple:
    """``value`` as a tuple of ``kind`` when it is a sequence (not a string), else ``()``."""
    is_sequence = isinstance(value, Sequence) and not isinstance(value, str)
    return tuple(kind(item) for item in value) if is_sequence else ()


def _int(datamodule: Any, name: str) -> int | None:
    """``datamodule.hparams[name]``, else the attribute ``name``, when it is an int."""
    hparams = getattr(datamodule, "hparams", None)
    value = hparams.get(name) if hasattr(hparams, "get") else None
    value = value if value is not None else getattr(datamodule, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def data_info(trainer: Any) -> DataInfo:
    """What ``trainer``'s DataModule says about its data (an empty record without one).

    Args:
        trainer: a Lightning ``Trainer`` (or ``None``); read after the datamodule's ``setup``.

    Returns:
        The :class:`DataInfo` of ``trainer.datamodule``.
    """
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None:
        return DataInfo()
    class_names = _items(getattr(datamodule, "class_names", None), str)
    return DataInfo(
        class_names=class_names,
        type_names=_items(getattr(datamodule, "type_names", None), str) or class_names,
        good_index=_int(datamodule, "good_index"),
        train_class_counts=_items(getattr(datamodule, "train_class_counts", None), int),
        image_size=_int(datamodule, "image_size"),
        in_chans=_int(datamodule, "in_chans"),
        num_workers=_int(datamodule, "num_workers"),
    )
