"""Weights files as users have them, fitted to a timm model: what ``Backbone(weights=...)`` reads.

Accepted: ``Backbone.export`` output and timm/ImageNet checkpoints — ``.safetensors`` (also a
hub-style ``model.safetensors``), ``.pth``/``.pt``/``.bin``/``.ckpt`` state dicts, plain or
wrapped in ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"module": ...}``, with DDP's
``module.`` or a LightningModule's ``model.`` / ``backbone.model.`` prefix. Adapted, each with
one note: the ImageNet classifier (``fc.*``, ``head.*``: the backbone has none) is dropped; a
3-channel stem is fitted to ``in_chans`` the way timm does (``adapt_input_conv``); a ViT's
position embedding is resampled to its patch grid. Anything else must fit exactly: a missing,
extra or mis-shaped key is an error that names it, and so is a tensor holding NaN or inf (a
diverged run's weights). Torch files are read with ``weights_only=True`` (no code in the file
runs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter
from torch import Tensor, nn

from lit_ssl.safe_load import CorruptCheckpointError, check_finite, load_weights_file

__all__ = ["check_weights_path", "fit_state_dict", "load_into", "read_state_dict"]

log = logging.getLogger(__name__)

WRAPPERS = ("state_dict", "model", "module", "model_state_dict", "state_dict_ema")
PREFIXES = ("module.", "backbone.model.", "model.", "backbone.")
# What to do about weights holding NaN/inf.
DIVERGED = "export from an earlier checkpoint of that run (before the loss became NaN)"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file, unwrapped (``state_dict``/``model``/``module`` keys).

    Args:
        path: ``.safetensors``, or a torch file (read with ``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict, is truncated, or holds NaN/inf values.
    """
    path = Path(path)
    check_weights_path(path)
    if path.suffix == ".safetensors":
        try:
            state = dict(load_file(str(path)))
        except SafetensorError as err:
            raise CorruptCheckpointError(
                f"{path} is truncated or corrupt ({err}); export the weights again."
            ) from None
        check_finite(state, str(path), DIVERGED)
        return state
    state = load_weights_file(path)
    while isinstance(state, Mapping) and not _is_state_dict(state):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not _is_state_dict(state):
        keys = list(state)[:8] if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{path} holds no state dict of tensors (top level: {keys}). Give a timm/torch "
            "state dict, a {'state_dict': ...} checkpoint or Backbone.export output."
        )
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    check_finite(state, str(path), DIVERGED)
    return state


def check_weights_path(path: Path) -> None:
    """Refuse what is not a weights file with what to give instead.

    Raises:
        ValueError: ``path`` is a directory or an ONNX graph.
        FileNotFoundError: no such file.
    """
    if path.is_dir():
        raise ValueError(
            f"Weights {path} is a directory: give the backbone.safetensors file inside it "
            "(or a .ckpt)."
        )
    if path.suffix.lower() == ".onnx":
        raise ValueError(
            f"Weights {path}: .onnx files are deployment graphs, not weights: give "
            "backbone.safetensors or a .ckpt."
        )
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weights {path} not found.")


def _is_state_dict(state: Mapping) -> bool:
    return bool(state) and sum(isinstance(v, Tensor) for v in state.values()) >= len(state) / 2


def _strip_prefix(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Remove wrapper prefixes (DDP's ``module.``, a LightningModule's ``model.``) where that
    makes more keys fit."""
    for prefix in PREFIXES:
        stripped = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
        if len(stripped.keys() & expected) > len(state.keys() & expected):
            state = stripped
    return state


def fit_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """``state`` adapted to ``model`` (a timm model built with ``num_classes=0``).

    Drops the classifier, adapts the stem's input channels, resamples a ViT position embedding;
    says once what it adapted. Raises ``ValueError`` naming any key that still does not fit, or
    the tensors holding NaN/inf.
    """
    check_finite(state, source, DIVERGED)
    return _fit(model, state, source)


def _fit(model: nn.Module, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    target = model.state_dict()
    state = _strip_prefix(dict(state), set(target))
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    notes: list[str] = []
    state = _vit_release(model, state, set(target), notes)
    classifier = cfg.get("classifier")
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    heads = tuple(f"{c}." for c in classifiers)
    dropped = [k for k in state if k not in target and k.startswith(heads)]
    for key in dropped:
        del state[key]
    if dropped:
        notes.append(f"dropped the classifier ({', '.join(sorted(dropped)[:4])})")
    _adapt_stem(model, state, target, cfg, notes)
    _resample_pos_embed(model, state, target, notes)
    _check_fit(state, target, source)
    if notes:
        log.warning("Backbone weights %s: %s.", source, "; ".join(notes))
    return state


def _vit_release(model: nn.Module, state: dict, expected: set[str], notes: list[str]) -> dict:
    """A ViT's weights as their authors release them (DINOv2 hub files with ``mask_token``,
    register tokens, SwiGLU ``w12``/``w3``; CLIP, EVA, ...) converted by timm's own ViT
    checkpoint filter, when keys do not already fit."""
    if not isinstance(model, VisionTransformer) or set(state) <= expected:
        return state
    converted = vit_checkpoint_filter(dict(state), model)
    if set(converted) != set(state):
        notes.append("converted a released ViT checkpoint with timm's checkpoint filter")
    return converted


def _adapt_stem(model, state, target, cfg, notes: list[str]) -> None:
    first = cfg.get("first_conv")
    for name in (first,) if isinstance(first, str) else tuple(first or ()):
        key = f"{name}.weight"
        if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
            have, want = state[key].shape[1], target[key].shape[1]
            state[key] = adapt_input_conv(want, state[key].float()).to(state[key].dtype)
            notes.append(f"fitted the {have}-channel stem {key} to {want} channel(s) (timm's rule)")


def _resample_pos_embed(model, state, target, notes: list[str]) -> None:
    key = "pos_embed"
    if key not in state or key not in target or state[key].shape == target[key].shape:
        return
    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    grid = list(model.patch_embed.grid_size)
    state[key] = resample_abs_pos_embed(state[key], new_size=grid, num_prefix_tokens=prefix)
    notes.append(f"resampled pos_embed to the {grid[0]}x{grid[1]} patch grid")


def state_mismatch(
    state: dict[str, Tensor], target: dict[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis-shaped)`` keys of ``state`` against ``target``."""
    missing = sorted(set(target) - set(state))
    extra = sorted(set(state) - set(target))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}"
        for k in sorted(set(state) & set(target))
        if state[k].shape != target[k].shape
    ]
    return missing, extra, shapes


def _check_fit(state: dict[str, Tensor], target: dict[str, Tensor], source: str) -> None:
    missing, extra, shapes = state_mismatch(state, target)
    if missing or extra or shapes:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {extra[:5]}" if extra else "",
            f"mis-shaped {shapes[:3]}" if shapes else "",
        ]
        raise ValueError(
            f"Weights {source} do not fit this backbone: {', '.join(p for p in parts if p)}.\n"
            "Check the architecture name, in_chans and image_size match the weights."
        )


def load_into(model: nn.Module, path: str | Path) -> None:
    """Read ``path``, fit it to ``model`` and load it (strictly, after the adaptations)."""
    state = _fit(model, read_state_dict(path), str(path))  # read_state_dict checked it
    model.load_state_dict(state, strict=True)
