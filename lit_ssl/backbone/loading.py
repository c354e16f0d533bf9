"""A backbone from what a user points at: a timm name, an ``export_backbone`` file (safetensors
+ json), or an SSLModule checkpoint; stored and explicit settings must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_ssl.backbone.model import Backbone, load_backbone_config
from lit_ssl.backbone.weights import check_weights_path, state_mismatch
from lit_ssl.safe_load import check_finite, load_checkpoint

__all__ = ["DEFAULT_BACKBONE", "resolve_backbone"]

DEFAULT_BACKBONE = "resnet18"


def _merge(explicit: Any, stored: Any, what: str, source: str | Path) -> Any:
    if explicit is None or stored is None or explicit == stored:
        return stored if explicit is None else explicit
    raise ValueError(
        f"{what}={explicit!r} was requested but {source} was exported with {what}={stored!r}. "
        f"Pass {what}={stored!r} (or leave it unset to take it from the weights)."
    )


def _backbone_from_ckpt(
    path: Path, name: str | None, in_chans: int | None, image_size: int | None
) -> Backbone:
    """Backbone from an SSLModule Lightning checkpoint (its ``backbone.`` keys)."""
    ckpt = load_checkpoint(path)
    hparams = ckpt.get("hyper_parameters", {})
    stored_name = hparams.get("backbone") if isinstance(hparams.get("backbone"), str) else None
    name = _merge(name, stored_name, "backbone", path) or DEFAULT_BACKBONE
    in_chans = _merge(in_chans, hparams.get("in_chans"), "in_chans", path) or 3
    if image_size is None:
        image_size = hparams.get("image_size")
    prefix = "backbone."
    state = {
        k[len(prefix) :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith(prefix)
    }
    if not state:
        raise ValueError(
            f"{path} has no 'backbone.*' weights; expected a checkpoint of lit_ssl.SSLModule."
        )
    check_finite(
        state, str(path), "use an earlier checkpoint of that run (its checkpoints/epoch=*.ckpt)"
    )
    backbone = Backbone(name, in_chans=in_chans, image_size=image_size)
    _check_ckpt_fit(backbone, state, path)
    backbone.load_state_dict(state)
    return backbone


def _check_ckpt_fit(backbone: Backbone, state: dict[str, Any], path: Path) -> None:
    """One message for backbone weights that do not fit the architecture the checkpoint names."""
    missing, unexpected, shapes = state_mismatch(state, backbone.state_dict())
    if not (missing or unexpected or shapes):
        return
    found = "; ".join(
        part
        for part in (
            f"mis-shaped {', '.join(shapes[:2])}" if shapes else "",
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
        )
        if part
    )
    raise ValueError(
        f"The backbone weights in {path} are not those of a {backbone.name!r} "
        f"(in_chans={backbone.in_chans}), the architecture it names ({found}).\n"
        "The file was edited or written by another model: use the checkpoint of the run as "
        "lit-ssl fit wrote it, or its exported backbone.safetensors."
    )


def _backbone_from_export(
    path: Path, name: str | None, in_chans: int | None, image_size: int | None
) -> Backbone:
    """Backbone from ``export_backbone`` output (safetensors + json next to it)."""
    if not path.with_suffix(".json").is_file():
        if name is None:
            raise FileNotFoundError(
                f"No json config next to {path}: pass backbone=<timm name> to load a plain "
                "timm state dict, or export with SSLModule.export_backbone."
            )
        return Backbone(name, in_chans=in_chans or 3, image_size=image_size, weights=str(path))
    cfg = load_backbone_config(path)
    name = _merge(name, cfg.get("name"), "backbone", path)
    in_chans = _merge(in_chans, cfg.get("in_chans"), "in_chans", path)
    image_size = image_size if image_size is not None else cfg.get("img_size")
    return Backbone(name, in_chans=in_chans, image_size=image_size, weights=str(path))


def resolve_backbone(
    backbone: str | Backbone | None,
    weights: str | Path | None,
    in_chans: int | None,
    image_size: int | None,
) -> Backbone:
    """Build the backbone from a name or instance plus optional weights, checking consistency."""
    if isinstance(backbone, Backbone):
        if in_chans is not None and in_chans != backbone.in_chans:
            raise ValueError(f"in_chans={in_chans} but the backbone has {backbone.in_chans}.")
        if weights is None:
            return backbone
        loaded = resolve_backbone(backbone.name, weights, backbone.in_chans, backbone.image_size)
        backbone.load_state_dict(loaded.state_dict())
        return backbone
    if weights is None:
        return Backbone(backbone or DEFAULT_BACKBONE, in_chans=in_chans or 3, image_size=image_size)
    path = Path(weights)
    check_weights_path(path)
    if path.suffix == ".ckpt":
        return _backbone_from_ckpt(path, backbone, in_chans, image_size)
    return _backbone_from_export(path, backbone, in_chans, image_size)
