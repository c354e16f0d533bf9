"""Reading checkpoint and weights files without running code from them.

Files are read with ``torch.load(weights_only=True)``: tensors and plain Python values only,
so a pickled payload (``__reduce__``) is refused (``UntrustedCheckpointError``) instead of
executed, and a truncated or damaged file is one line naming an intact checkpoint next to it
(``CorruptCheckpointError``). A checkpoint's hyperparameters may name classes (``class_path``
dicts at any depth, or Lightning's ``_class_path``) only from the allow-list
(``lit_ssl.allow_list``); weights holding NaN or inf are refused where they enter
(``NonFiniteWeightsError``).

This is the ground floor of checkpoint handling: it imports no lit_ssl module but the
allow-list, which imports none.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from lit_ssl.allow_list import UntrustedCheckpointError, trusted_class

__all__ = [
    "EARLIER_CHECKPOINT",
    "CorruptCheckpointError",
    "NonFiniteWeightsError",
    "check_checkpoint",
    "check_finite",
    "checkpoint_is_intact",
    "load_checkpoint",
    "load_weights_file",
    "newest_intact_checkpoint",
    "verify_checkpoint_file",
]

HPARAM_KEYS = ("hyper_parameters", "datamodule_hyper_parameters", "hparams", "module_arguments")
_ALLOWED_INSTANTIATORS = frozenset(
    {"lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module"}
)


class CorruptCheckpointError(ValueError):
    """A checkpoint or weights file that cannot be read: truncated (a run killed while writing
    it) or otherwise damaged."""


class NonFiniteWeightsError(ValueError):
    """Weights holding NaN or infinite values: the run that wrote them diverged."""


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


EARLIER_CHECKPOINT = "use an earlier checkpoint of that run (its checkpoints/epoch=*.ckpt) or refit"


def load_weights_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """Read a torch weights file (a state dict, possibly wrapped) with ``weights_only=True``."""
    return _torch_load(path, map_location, str(path))


def verify_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Refuse an unsafe, damaged or diverged (non-finite) checkpoint before anything else
    (e.g. the CLI) reads its hparams; returns the checkpoint, read to the CPU."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    check_finite(checkpoint.get("state_dict") or {}, str(path), EARLIER_CHECKPOINT)
    return checkpoint
