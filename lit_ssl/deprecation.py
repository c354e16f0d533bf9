"""Renamed arguments: the old spelling still works once more, with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

__all__ = ["renamed_argument"]

T = TypeVar("T")


def renamed_argument(owner: str, old: str, old_value: Any, new: str, new_value: T) -> T:
    """The value of a renamed argument: ``new_value``, or ``old_value`` with a warning.

    Args:
        owner: who takes the argument, for the message (e.g. ``"Backbone"``).
        old: the deprecated name.
        old_value: what the caller gave under the old name (``None``: not given).
        new: the current name.
        new_value: what the caller gave under the new name.

    Raises:
        ValueError: both names were given, with different values.

    Example:
        >>> renamed_argument("Backbone", "img_size", None, "image_size", 64)
        64
    """
    if old_value is None:
        return new_value
    warnings.warn(
        f"{owner}({old}=...) is deprecated and will be removed; use {new}=... instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    if new_value is not None and new_value != old_value:
        raise ValueError(
            f"{owner} got {old}={old_value!r} and {new}={new_value!r}; give {new} only."
        )
    return old_value
