"""Which classes a checkpoint may name: lit_ssl's own, joined by registration, and yours.

lit_ssl's classes join when they are defined, the way timm's ``@register_model`` does it:
every ``SSLHead`` and every ``SafeCheckpointing`` module (``SSLModule``, ``DefectClassifier``,
``AnomalyDetector``) through ``__init_subclass__``, ``Backbone`` and ``FactoryDataModule`` by a
``register_checkpoint_class`` call next to their definition. So this module imports no
lit_ssl module, and the list is complete once ``lit_ssl/__init__.py`` has run, which it has
before any ``lit_ssl.x`` module can read a file (Python runs a package's ``__init__`` first,
and that one imports every class above).

A class is accepted under its defining path (``lit_ssl.heads.joint_embedding.VICReg``), under
each lit_ssl package on that path that exports it (``lit_ssl.heads.VICReg``,
``lit_ssl.DefectClassifier``, ``lit_ssl.anomaly.AnomalyDetector``). Your own classes join
with ``trust_class``.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

__all__ = [
    "UntrustedCheckpointError",
    "register_checkpoint_class",
    "register_own_subclass",
    "trust_class",
    "trusted_class",
]

C = TypeVar("C", bound=type)

_REGISTERED: dict[str, type] = {}  # defining path -> lit_ssl class
_USER_TRUSTED: dict[str, type] = {}  # spelling -> class, from trust_class


class UntrustedCheckpointError(ValueError):
    """A checkpoint asked for something lit_ssl will not do: unpickle objects or import a
    class outside its allow-list."""


def _defining_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_checkpoint_class(cls: C) -> C:
    """Allow checkpoints to name ``cls``, a class of lit_ssl's own (usable as a decorator).

    Call it next to the class's definition; for your own classes use ``trust_class``.
    """
    _REGISTERED[_defining_path(cls)] = cls
    return cls


def register_own_subclass(cls: type) -> None:
    """The rule of the ``__init_subclass__`` hooks: register ``cls`` if lit_ssl defines it
    publicly; subclasses defined elsewhere (yours) need ``trust_class``."""
    if cls.__module__.partition(".")[0] == "lit_ssl" and not cls.__name__.startswith("_"):
        register_checkpoint_class(cls)


def trust_class(cls: type, name: str | None = None) -> None:
    """Allow checkpoints to name ``cls`` (e.g. your own ``SSLHead``) — only for files you trust.

    Args:
        cls: the class to allow.
        name: the spelling used in checkpoints; default ``module.QualName``.
    """
    if not isinstance(cls, type):
        raise TypeError(f"trust_class takes a class, got {type(cls).__name__}.")
    _USER_TRUSTED[name or _defining_path(cls)] = cls


def _exported(class_path: str) -> type | None:
    """The registered class that a lit_ssl package on its defining path exports under
    ``class_path`` (read from the imported package, nothing is imported)."""
    package, _, attr = class_path.rpartition(".")
    for path, cls in _REGISTERED.items():
        on_its_path = cls.__name__ == attr and path.startswith(f"{package}.")
        if on_its_path and getattr(sys.modules.get(package), attr, None) is cls:
            return cls
    return None


def _accepted(class_path: Any) -> type | None:
    if not isinstance(class_path, str):
        return None
    if class_path in _USER_TRUSTED:
        return _USER_TRUSTED[class_path]
    return _REGISTERED.get(class_path) or _exported(class_path)


def trusted_class(class_path: Any, where: str = "checkpoint") -> type:
    """The allow-listed class named ``class_path``; raises without importing anything else."""
    found = _accepted(class_path)
    if found is not None:
        return found
    names = sorted({c.__name__ for c in (*_REGISTERED.values(), *_USER_TRUSTED.values())})
    raise UntrustedCheckpointError(
        f"{where} names class {class_path!r} which is not one of lit_ssl's heads, modules or "
        f"datamodules ({', '.join(names)}); refusing to import it. If it is your own class and "
        "you trust the file, call lit_ssl.checkpoints.trust_class(YourClass) before loading."
    )
