"""Loading checkpoints without running code from them: the one place lit_ssl reads ``.ckpt``.

Two rules, both enforced here and in the modules below it:

1. Files are read with ``torch.load(weights_only=True)``: tensors and plain Python values
   only, so a pickled payload (``__reduce__``) is refused instead of executed
   (``lit_ssl.safe_load``).
2. A class named in a checkpoint's hyperparameters (``class_path`` dicts at any depth, or
   Lightning's ``_class_path``) is resolved only among lit_ssl's own classes: the heads of
   ``lit_ssl.heads``, ``SSLModule``, ``DefectClassifier``, ``AnomalyDetector``, ``Backbone``
   and ``FactoryDataModule``, which join the allow-list when they are defined
   (``lit_ssl.allow_list``). Anything else is refused before it is imported; your own classes
   can be allowed with ``trust_class``.

``load_module`` builds a LightningModule from a checkpoint under these rules;
``SafeCheckpointing``, the mixin of lit_ssl's three modules, gives them a safe
``load_from_checkpoint`` and registers them. Every name of the two modules below is also
importable from here (``lit_ssl.checkpoints.trust_class``, ``...load_checkpoint``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

from lit_ssl.allow_list import (
    UntrustedCheckpointError,
    register_checkpoint_class,
    register_own_subclass,
    trust_class,
    trusted_class,
)
from lit_ssl.safe_load import (
    EARLIER_CHECKPOINT,
    CorruptCheckpointError,
    NonFiniteWeightsError,
    check_checkpoint,
    check_finite,
    checkpoint_is_intact,
    load_checkpoint,
    load_weights_file,
    newest_intact_checkpoint,
    verify_checkpoint_file,
)

__all__ = [
    "MODULE_KEY",
    "CorruptCheckpointError",
    "NonFiniteWeightsError",
    "SafeCheckpointing",
    "UntrustedCheckpointError",
    "check_checkpoint",
    "check_finite",
    "checkpoint_is_intact",
    "load_checkpoint",
    "load_from_checkpoint",
    "load_module",
    "load_weights_file",
    "module_name",
    "newest_intact_checkpoint",
    "register_checkpoint_class",
    "trust_class",
    "trusted_class",
    "verify_checkpoint_file",
]

MODULE_KEY = "lit_ssl_module"  # written by SafeCheckpointing.on_save_checkpoint

T = TypeVar("T")


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
    check_finite(checkpoint.get("state_dict") or {}, name, EARLIER_CHECKPOINT)
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

    Subclasses that lit_ssl defines join the allow-list as they are defined (yours need
    ``trust_class``). ``on_save_checkpoint`` writes ``module_kind`` under ``MODULE_KEY``
    (``lit-ssl export`` routes by it); ``load_from_checkpoint`` follows
    ``load_from_checkpoint`` above (``weights_only=True``, classes only from the allow-list).
    """

    module_kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_own_subclass(cls)

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
