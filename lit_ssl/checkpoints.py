"""Loading checkpoints without running code from them: the one place lit_ssl reads ``.ckpt``.

Two rules, both enforced here:

1. Files are read with ``torch.load(weights_only=True)``: tensors and plain Python values
   only, so a pickled payload (``__reduce__``) is refused instead of executed.
2. A class named in a checkpoint's hyperparameters (``class_path`` dicts at any depth, or
   Lightning's ``_class_path``) is resolved only among lit_ssl's own classes: the heads of
   ``lit_ssl.heads``, ``SSLModule``, ``DefectClassifier``, ``Backbone`` and
   ``FactoryDataModule``. Anything else is refused before it is imported; your own classes
   can be allowed with ``trust_class``.

``load_module`` builds a LightningModule from a checkpoint under these rules;
``SSLModule.load_from_checkpoint`` and ``DefectClassifier.load_from_checkpoint`` use it.
"""

from __future__ import annotations

import inspect
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import torch

__all__ = [
    "MODULE_KEY",
    "CorruptCheckpointError",
    "NonFiniteWeightsError",
    "SafeCheckpointing",
    "UntrustedCheckpointError",
    "check_checkpoint",
    "check_finite",
    "checkpoint_is_intact",
    "head_from_description",
    "load_checkpoint",
    "load_from_checkpoint",
    "load_module",
    "load_weights_file",
    "module_name",
    "newest_intact_checkpoint",
    "trust_class",
    "trusted_class",
    "verify_checkpoint_file",
]

MODULE_KEY = "lit_ssl_module"  # written by SSLModule / DefectClassifier.on_save_checkpoint
HPARAM_KEYS = ("hyper_parameters", "datamodule_hyper_parameters", "hparams", "module_arguments")
_ALLOWED_INSTANTIATORS = frozenset(
    {"lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module"}
)
_USER_TRUSTED: dict[str, type] = {}
# Class paths of earlier versions -> where the class lives now.
_MOVED = {
    "lit_ssl.classifier.DefectClassifier": "lit_ssl.classify.classifier.DefectClassifier",
    "lit_ssl.backbone.Backbone": "lit_ssl.backbone.model.Backbone",
}

T = TypeVar("T")


class UntrustedCheckpointError(ValueError):
    """A checkpoint asked for something lit_ssl will not do: unpickle objects or import a
    class outside its allow-list."""


class CorruptCheckpointError(ValueError):
    """A checkpoint or weights file that cannot be read: truncated (a run killed while writing
    it) or otherwise damaged."""


class NonFiniteWeightsError(ValueError):
    """Weights holding NaN or infinite values: the run that wrote them diverged."""


# ----------------------------------------------------------------------------- allow-list
def _own_classes() -> list[type]:
    from lit_ssl import heads
    from lit_ssl.anomaly import AnomalyDetector
    from lit_ssl.backbone import Backbone
    from lit_ssl.classify.classifier import DefectClassifier
    from lit_ssl.data import FactoryDataModule
    from lit_ssl.heads.base import SSLHead
    from lit_ssl.module import SSLModule

    own = [getattr(heads, name) for name in heads.__all__]
    own = [c for c in own if isinstance(c, type) and issubclass(c, SSLHead) and c is not SSLHead]
    return [*own, SSLModule, DefectClassifier, AnomalyDetector, Backbone, FactoryDataModule]


def _allow_list() -> dict[str, type]:
    """Every accepted spelling -> class: the defining module path and the public alias."""
    names: dict[str, type] = {}
    for cls in _own_classes():
        names[f"{cls.__module__}.{cls.__qualname__}"] = cls
        for package in ("lit_ssl", "lit_ssl.heads", "lit_ssl.data", "lit_ssl.anomaly"):
            names.setdefault(f"{package}.{cls.__name__}", cls)
    names = {k: v for k, v in names.items() if _alias_exists(k, v)}
    for legacy, current in _MOVED.items():  # checkpoints written before a module moved
        if current in names:
            names[legacy] = names[current]
    names.update(_USER_TRUSTED)
    return names


def _alias_exists(name: str, cls: type) -> bool:
    import importlib

    package, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(package), attr, None) is cls
    except ImportError:
        return False


def trust_class(cls: type, name: str | None = None) -> None:
    """Allow checkpoints to name ``cls`` (e.g. your own ``SSLHead``) — only for files you trust.

    Args:
        cls: the class to allow.
        name: the spelling used in checkpoints; default ``module.QualName``.
    """
    if not isinstance(cls, type):
        raise TypeError(f"trust_class takes a class, got {type(cls).__name__}.")
    _USER_TRUSTED[name or f"{cls.__module__}.{cls.__qualname__}"] = cls


def trusted_class(class_path: Any, where: str = "checkpoint") -> type:
    """The allow-listed class named ``class_path``; raises without importing anything else."""
    allowed = _allow_list()
    if isinstance(class_path, str) and class_path in allowed:
        return allowed[class_path]
    heads = sorted({c.__name__ for c in allowed.values()})
    raise UntrustedCheckpointError(
        f"{where} names class {class_path!r} which is not one of lit_ssl's heads, modules or "
        f"datamodules ({', '.join(heads)}); refusing to import it. If it is your own class and "
        "you trust the file, call lit_ssl.checkpoints.trust_class(YourClass) before loading."
    )


# ----------------------------------------------------------------------------- checks
def _class_paths(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(location, class_path)`` of every class reference in nested hyperparameters."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("class_path", "_class_path"):
                yield f"{where}.{key}", item
            elif key == "_instantiator":
                if item not in _ALLOWED_INSTANTIATORS:
                    raise UntrustedCheckpointError(
                        f"{where}._instantiator is {item!r}, not Lightning's own "
                        "instantiate_module; refusing to call it."
                    )
            else:
                yield from _class_paths(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _class_paths(item, f"{where}[{i}]")


def check_checkpoint(checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
    """Refuse a loaded checkpoint whose hyperparameters name classes outside the allow-list."""
    if not isinstance(checkpoint, dict):
        raise UntrustedCheckpointError(
            f"{source} is not a Lightning checkpoint (a dict), got {type(checkpoint).__name__}."
        )
    for key in HPARAM_KEYS:
        for where, class_path in _class_paths(checkpoint.get(key, {}), key):
            trusted_class(class_path, f"{source} ({where})")


# Messages of torch.load for a file that is not a complete checkpoint (a truncated zip archive,
# an empty file, a file cut inside its first bytes, garbage).
_DAMAGED = re.compile(
    r"PytorchStreamReader|zip archive|central directory|invalid load key|Ran out of input|"
    r"Invalid argument|magic number",
    re.IGNORECASE,
)

_GARBAGE = re.compile(r"Unsupported operand|invalid load key|Ran out of input")


def _torch_load(source: str | Path | IO[bytes], map_location: Any, name: str) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _GARBAGE.search(str(err)):  # not a pickled object: bytes that are no pickle at all
            raise _corrupt(source, name) from None
        detail = next((line for line in str(err).splitlines() if "GLOBAL" in line), "")
        raise UntrustedCheckpointError(
            f"{name} holds Python objects besides tensors and plain values ({detail.strip()}); "
            "lit_ssl reads checkpoints with torch.load(weights_only=True) and refuses to "
            "unpickle them. Only open checkpoints written by lit_ssl / Lightning."
        ) from None
    except EOFError:
        raise _corrupt(source, name) from None
    except (RuntimeError, OSError) as err:
        if isinstance(err, FileNotFoundError | PermissionError) or not _DAMAGED.search(str(err)):
            raise
        raise _corrupt(source, name) from None


def _corrupt(source: str | Path | IO[bytes], name: str) -> CorruptCheckpointError:
    """The one-line error for a damaged file, naming an intact checkpoint next to it if any."""
    advice = "use an earlier checkpoint, or write the file again"
    if isinstance(source, str | Path):
        earlier = newest_intact_checkpoint(Path(source).parent, exclude=Path(source))
        if earlier is not None:
            advice = f"use an earlier checkpoint in the same folder: {earlier.name}"
        elif Path(source).suffix == ".ckpt":
            advice = "no intact checkpoint is next to it: start a new run without --ckpt_path"
    return CorruptCheckpointError(
        f"{name} is truncated or corrupt (a run killed while writing it?); {advice}."
    )


def checkpoint_is_intact(path: str | Path) -> bool:
    """Whether ``path`` is a complete ``torch.save`` archive (cheap: reads the zip's central
    directory, which is written last, so a file cut short while writing fails this)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(
                name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist()
            )
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


_STEP = re.compile(r"step=(\d+)")


def newest_intact_checkpoint(folder: str | Path, exclude: Path | None = None) -> Path | None:
    """The newest complete ``*.ckpt`` in ``folder`` (by modification time, then step), except
    ``exclude``; ``None`` if there is none."""
    found = []
    for path in Path(folder).glob("*.ckpt"):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        if path.is_file() and checkpoint_is_intact(path):
            step = _STEP.search(path.name)
            found.append(
                (path.stat().st_mtime, int(step.group(1)) if step else -1, path.name, path)
            )
    return max(found)[3] if found else None


def check_finite(state: Mapping[str, Any], source: str, advice: str) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run's): nothing downstream
    would flag them, a model built on them silently gives NaN scores.

    A buffer named ``threshold`` may hold ``+inf`` (a detector before its validation pass).

    Args:
        state: name -> tensor (other values are skipped).
        source: the file, for the message.
        advice: what to do instead, for the message.

    Raises:
        NonFiniteWeightsError: naming the first offending tensors.
    """
    bad = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        if (
            key.rsplit(".", 1)[-1] == "threshold"
            and value.numel() == 1
            and value.item() == float("inf")
        ):
            continue
        if not bool(torch.isfinite(value).all()):
            bad.append(key)
    if bad:
        names = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteWeightsError(
            f"{source} holds non-finite values (NaN/inf) in {len(bad)} tensor"
            f"{'s' if len(bad) > 1 else ''} ({names}): the run that wrote it diverged; {advice}."
        )


def load_checkpoint(path: str | Path | IO[bytes], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a ``.ckpt`` safely: ``weights_only=True`` and allow-listed class names only.

    Args:
        path: checkpoint file (or an open binary file).
        map_location: as for ``torch.load``.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: no such file.
        UntrustedCheckpointError: the file holds pickled objects, or names a class outside
            lit_ssl's allow-list.
    """
    name = str(path) if isinstance(path, str | Path) else "checkpoint stream"
    if isinstance(path, str | Path) and not Path(path).is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} not found.\n"
            "Give a .ckpt written by lit-ssl fit (runs/<recipe>/version_N/checkpoints/last.ckpt)."
        )
    checkpoint = _torch_load(path, map_location, name)
    check_checkpoint(checkpoint, name)
    return checkpoint


_EARLIER_CHECKPOINT = (
    "use an earlier checkpoint of that run (its checkpoints/epoch=*.ckpt) or refit"
)


def load_weights_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """Read a torch weights file (a state dict, possibly wrapped) with ``weights_only=True``."""
    return _torch_load(path, map_location, str(path))


def verify_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Refuse an unsafe, damaged or diverged (non-finite) checkpoint before anything else
    (e.g. the CLI) reads its hparams; returns the checkpoint, read to the CPU."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    check_finite(checkpoint.get("state_dict") or {}, str(path), _EARLIER_CHECKPOINT)
    return checkpoint


def module_name(checkpoint: dict[str, Any]) -> str | None:
    """``"SSLModule"`` / ``"DefectClassifier"`` for a lit_ssl checkpoint, else ``None``.

    Reads the marker the modules write; older checkpoints are recognised by their
    hyperparameters (``_class_path``, a head description, or the classifier's classes).
    """
    marker = checkpoint.get(MODULE_KEY)
    if isinstance(marker, str):
        return marker
    hparams = checkpoint.get("hyper_parameters", {}) or {}
    class_path = hparams.get("_class_path")
    if class_path is not None:
        cls = trusted_class(class_path, "checkpoint (hyper_parameters._class_path)")
        for base in ("DefectClassifier", "SSLModule"):
            if any(k.__name__ == base for k in cls.__mro__):
                return base
    if ("class_names" in hparams or "classes" in hparams) and "threshold_mode" in hparams:
        return "DefectClassifier"
    if isinstance(hparams.get("head"), dict):
        return "SSLModule"
    return None


# ----------------------------------------------------------------------------- building
def head_from_description(description: dict[str, Any]) -> Any:
    """Rebuild a head from ``describe_head`` output, resolving classes by the allow-list."""
    from lit_ssl.heads.base import SSLHead

    cls = trusted_class(description.get("class_path"), "head description")
    if not issubclass(cls, SSLHead):
        raise UntrustedCheckpointError(
            f"head description names {cls.__name__}, which is not an lit_ssl head (SSLHead)."
        )
    init_args = {
        key: head_from_description(value)
        if isinstance(value, dict) and "class_path" in value
        else value
        for key, value in (description.get("init_args") or {}).items()
    }
    return cls(**init_args)


def load_module(
    cls: type[T],
    checkpoint_path: str | Path | IO[bytes],
    map_location: Any = None,
    strict: bool | None = None,
    **overrides: Any,
) -> T:
    """Build ``cls`` (or the allow-listed subclass the checkpoint names) from a checkpoint.

    The module is constructed from the stored hyperparameters (``overrides`` win) by
    calling the class itself: no instantiator or class named in the file is executed.

    Args:
        cls: the LightningModule class to build.
        checkpoint_path: ``.ckpt`` file or open binary file.
        map_location: as for ``torch.load``; default CPU.
        strict: strict state-dict loading (default: the module's ``strict_loading``, True).
        **overrides: hyperparameters to replace.
    """
    checkpoint = load_checkpoint(checkpoint_path, map_location or "cpu")
    name = str(checkpoint_path) if isinstance(checkpoint_path, str | Path) else "checkpoint"
    check_finite(checkpoint.get("state_dict") or {}, name, _EARLIER_CHECKPOINT)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    target = cls if class_path is None else trusted_class(class_path, "checkpoint")
    if not issubclass(target, cls):
        raise UntrustedCheckpointError(
            f"The checkpoint holds a {target.__name__}, not a {cls.__name__}: load it with "
            f"{target.__name__}.load_from_checkpoint."
        )
    hparams.update(overrides)
    accepted = inspect.signature(target.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        hparams = {k: v for k, v in hparams.items() if k in accepted}
    module = target(**hparams)
    module.on_load_checkpoint(checkpoint)
    strict = module.strict_loading if strict is None else strict
    module.load_state_dict(checkpoint["state_dict"], strict=strict)
    return module


def load_from_checkpoint(
    cls: type[T],
    checkpoint_path: str | Path | IO[bytes],
    map_location: Any = None,
    hparams_file: str | Path | None = None,
    strict: bool | None = None,
    weights_only: bool | None = None,
    **kwargs: Any,
) -> T:
    """``LightningModule.load_from_checkpoint`` with lit_ssl's rules (see ``load_module``).

    Raises:
        ValueError: ``weights_only=False`` or ``hparams_file`` (neither can be made safe).
    """
    if weights_only is False:
        raise ValueError(
            "lit_ssl loads checkpoints with weights_only=True only (a pickled object could "
            "run code); leave weights_only unset."
        )
    if hparams_file is not None:
        raise ValueError(
            "hparams_file is not supported by lit_ssl's safe loading; pass the hyperparameters "
            "to change as keyword arguments instead."
        )
    return load_module(cls, checkpoint_path, map_location=map_location, strict=strict, **kwargs)


class SafeCheckpointing:
    """Mixin of lit_ssl's LightningModules: safe ``load_from_checkpoint`` and a marker.

    ``on_save_checkpoint`` writes ``module_kind`` under ``MODULE_KEY`` (``lit-ssl export``
    routes by it); ``load_from_checkpoint`` follows ``load_from_checkpoint`` above
    (``weights_only=True``, classes only from the allow-list).
    """

    module_kind: ClassVar[str]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Mark the checkpoint with this module's kind."""
        checkpoint[MODULE_KEY] = self.module_kind

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: str | Path | IO[bytes], map_location: Any = None, **kwargs: Any
    ) -> Any:
        """Load safely: ``weights_only=True``, classes only from lit_ssl's allow-list.

        Keyword arguments are those of Lightning's ``load_from_checkpoint`` (``strict``,
        hyperparameter overrides); see ``lit_ssl.checkpoints.load_from_checkpoint``.
        """
        return load_from_checkpoint(cls, checkpoint_path, map_location, **kwargs)
