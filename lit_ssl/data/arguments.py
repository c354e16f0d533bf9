"""Checks of :class:`~lit_ssl.data.FactoryDataModule`'s arguments, each error saying what to use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lit_ssl.augment.device import DEVICE_PRESETS, device_capable
from lit_ssl.data.crops import check_crop_size
from lit_ssl.data.layouts import LAYOUTS
from lit_ssl.data.plans import TASKS

__all__ = ["AUGMENT_ON", "check_arguments", "check_num_views"]

AUGMENT_ON = ("auto", "cpu", "device")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_crops_per_frame(crops: int, crop_size: int | None, batch_size: int) -> None:
    if isinstance(crops, bool) or not isinstance(crops, int) or crops < 1:
        raise ValueError(f"crops_per_frame={crops!r}; use a whole number >= 1")
    if crops == 1:
        return
    _check(
        crop_size is not None,
        f"crops_per_frame={crops} needs crop_size (crops of the native frame); set crop_size "
        "or use crops_per_frame=1",
    )
    _check(
        batch_size % crops == 0,
        f"batch_size={batch_size} is not divisible by crops_per_frame={crops}: a batch holds "
        f"batch_size // crops_per_frame frames, crops_per_frame samples each; use a batch_size "
        f"that is a multiple of {crops}",
    )


def _check_device_policy(augment_on: str, policy: str | list[str]) -> None:
    if augment_on == "device" and not device_capable(policy):
        raise ValueError(
            f"augment_on='device' cannot run policy={policy!r}: use a device preset "
            f"({', '.join(DEVICE_PRESETS)}) or augment_on='cpu'\n"
            "YAML policies and 'natural' are albumentations pipelines that run in the CPU "
            "workers (augment_on='auto' falls back to them)"
        )


def check_arguments(args: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` for the first argument out of range.

    Args:
        args: The data module's arguments by name (its hyperparameters).
    """
    augment_on, layout, task = args["augment_on"], args["layout"], args["task"]
    _check(augment_on in AUGMENT_ON, f"augment_on={augment_on!r}; use one of {AUGMENT_ON}")
    _check_crops_per_frame(args["crops_per_frame"], args["crop_size"], args["batch_size"])
    _check_device_policy(augment_on, args["policy"])
    _check(task in TASKS, f"task={task!r}; use one of {TASKS}")
    _check(layout in (*LAYOUTS, "auto"), f"layout={layout!r}; use 'auto' or one of {LAYOUTS}")
    bad_file, views, size = args["on_bad_file"], args["views"], args["image_size"]
    _check(bad_file in ("skip", "raise"), f"on_bad_file={bad_file!r}; use skip|raise")
    _check(views is None or views >= 1, f"views={views}; use a positive number or None")
    _check(size >= 8, f"image_size={size}; use at least 8 pixels")
    check_crop_size(args["crop_size"])
    limit, fraction = args["cache_limit_mb"], args["label_fraction"]
    _check(
        limit is None or limit >= 0,
        f"cache_limit_mb={limit}; use a size in MiB >= 0, or None (25% of RAM)",
    )
    _check(
        args["batch_size"] >= 1 and args["num_workers"] >= 0,
        "batch_size >= 1 and num_workers >= 0",
    )
    _check(0 < fraction <= 1, f"label_fraction={fraction}; must be in (0, 1]")


def check_num_views(num_views: int, explicit: int | None) -> None:
    """The views a model asks for agree with an explicit ``views`` and are at least 1."""
    if explicit is not None and explicit != num_views:
        raise ValueError(
            f"the data module was configured with views={explicit} but the model's head "
            f"needs num_views={num_views}; remove data.views or set it to {num_views}"
        )
    _check(num_views >= 1, f"num_views={num_views}; must be positive")
