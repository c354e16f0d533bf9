"""Backbone: any timm model with normalisation inside, pooled and dense features."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from lit_ssl.allow_list import register_checkpoint_class
from lit_ssl.backbone.encoding import dense_features
from lit_ssl.backbone.weights import load_into

__all__ = ["Backbone", "load_backbone_config"]

CONFIG_SUFFIX = ".json"


def _channel_stats(values: tuple[float, ...] | None, in_chans: int, default: float) -> Tensor:
    """Mean/std per input channel; mono models use the average of the RGB statistics."""
    stats = torch.tensor(values if values else (default,) * 3, dtype=torch.float32)
    if in_chans == stats.numel():
        return stats
    if in_chans == 1:
        return stats.mean().reshape(1)
    return stats.mean().repeat(in_chans)


def load_backbone_config(weights: str | Path) -> dict:
    """Read the json written next to exported backbone weights.

    Args:
        weights: path of a ``.safetensors`` file written by ``Backbone.export``.

    Returns:
        The config dict (``name``, ``in_chans``, ``img_size``, ``mean``, ``std``, ...).
    """
    path = Path(weights).with_suffix(CONFIG_SUFFIX)
    if not path.is_file():
        raise FileNotFoundError(
            f"No backbone config {path} next to {weights}. Export weights with "
            "SSLModule.export_backbone(path), which writes both files."
        )
    return json.loads(path.read_text())


@register_checkpoint_class
class Backbone(nn.Module):
    """Any timm architecture as an SSL backbone.

    Input contract: float images in ``[0, 1]`` with shape ``(B, in_chans, H, W)``. The
    mean/std normalisation is a buffer of this module, so it is saved, exported and
    traced with the weights; no preprocessing lives outside the model.

    Feature formats:
        * ``forward(x)`` -> pooled features ``(B, embed_dim)`` (timm ``pre_logits``).
        * ``forward_dense(x)`` -> ``(pooled, dense)`` with dense features always laid out
          as a grid ``(B, dense_dim, h, w)`` (``dense_dim == embed_dim`` except for models
          with a pre-logits projection, e.g. MobileNetV3): the last feature map for CNNs, the patch
          tokens (prefix tokens removed) laid out on the patch grid for ViTs, both from timm's
          ``forward_intermediates(output_fmt="NCHW")``.

    Args:
        name: timm architecture name, e.g. ``"resnet18"``, ``"vit_small_patch16_224"``.
        in_chans: number of input channels (1 for mono cameras, 3 for RGB).
        image_size: input size for architectures with a fixed size (ViTs); ignored otherwise.
            (timm calls it ``img_size``; the json written by ``export`` keeps timm's key.)
        weights: optional local weights file: a ``.safetensors`` written by
            ``export_backbone``, or a timm/ImageNet checkpoint as you have it (``.pth``,
            ``.pt``, ``.safetensors``; ``state_dict``/``model`` wrappers; classifier keys
            dropped; 3-channel stems fitted to ``in_chans``); see ``lit_ssl.backbone.weights``.
        pretrained: start from timm's own pretrained weights (downloaded from the hub;
            a clear error offline: then download once elsewhere and pass ``weights=``).
    """

    def __init__(
        self,
        name: str,
        in_chans: int = 3,
        image_size: int | None = None,
        weights: str | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if not timm.is_model(name.split(".")[0]):
            raise ValueError(
                f"Unknown timm architecture {name!r}. Pick one from timm.list_models(), "
                "e.g. 'resnet18', 'convnext_atto', 'vit_small_patch16_224'."
            )
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}.")
        self.name = name
        self.in_chans = in_chans
        self.image_size = image_size
        if pretrained and weights is not None:
            raise ValueError("Give weights=FILE or pretrained=True, not both.")
        self.model = _create_timm_model(name, in_chans, image_size, pretrained)
        self.dense_dim: int = int(self.model.num_features)
        self.embed_dim: int = int(getattr(self.model, "head_hidden_size", None) or self.dense_dim)
        self.is_vit: bool = hasattr(self.model, "patch_embed") and hasattr(
            self.model, "num_prefix_tokens"
        )
        cfg = self.model.pretrained_cfg
        mean = _channel_stats(cfg.get("mean"), in_chans, 0.5)
        std = _channel_stats(cfg.get("std"), in_chans, 0.5)
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1))
        self.register_buffer("std", std.reshape(1, -1, 1, 1))
        if weights is not None:
            self.load_weights(weights)

    @property
    def patch_size(self) -> int | None:
        """Patch size of a ViT backbone, ``None`` for CNNs."""
        if not self.is_vit:
            return None
        return int(self.model.patch_embed.patch_size[0])

    def load_weights(self, path: str | Path) -> None:
        """Load a weights file as users have it (see ``lit_ssl.backbone.weights``): exports,
        timm/ImageNet state dicts (classifier dropped, stem channels and ViT position
        embedding adapted, with a note); anything else must fit exactly."""
        load_into(self.model, path)

    def normalize(self, x: Tensor) -> Tensor:
        """Map float images in [0, 1] to the model's input statistics."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def features(self, x: Tensor) -> Tensor:
        """timm ``forward_features`` on normalised input (model-specific layout)."""
        return self.model.forward_features(self.normalize(x))

    def pool(self, features: Tensor) -> Tensor:
        """Pooled ``(B, embed_dim)`` features from ``features(x)``."""
        return self.model.forward_head(features, pre_logits=True)

    def forward_dense(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One forward pass returning pooled ``(B, D)`` and dense ``(B, D, h, w)`` features.

        Through timm's ``forward_intermediates`` (see ``lit_ssl.backbone.encoding``); ViT
        token grids may be non-square (models with ``dynamic_img_size``).
        """
        return dense_features(self, x)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, embed_dim)`` of float images in [0, 1]."""
        return self.pool(self.features(x))

    def config(self) -> dict:
        """What is needed to rebuild this backbone without lit_ssl (timm name, stats)."""
        return {
            "name": self.name,
            "architecture": self.name,
            "in_chans": self.in_chans,
            "img_size": self.image_size,  # timm's spelling: the json is for timm
            "embed_dim": self.embed_dim,
            "dense_dim": self.dense_dim,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "input_range": [0.0, 1.0],
            "format": "lit_ssl.backbone/1",
        }

    def export(self, path: str | Path) -> Path:
        """Write the timm weights as safetensors plus a json config next to them.

        ``timm.create_model(name, pretrained=True, num_classes=0, in_chans=...,
        pretrained_cfg_overlay=dict(file=path))`` loads the file (add ``img_size=`` from the
        json for a ViT built with a non-default size); mean/std are in the json (timm's model
        itself expects normalised input).

        Returns:
            The path of the safetensors file.
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(path), metadata={"architecture": self.name})
        path.with_suffix(CONFIG_SUFFIX).write_text(json.dumps(self.config(), indent=2))
        return path

    @classmethod
    def from_export(cls, path: str | Path) -> Backbone:
        """Rebuild a backbone from ``export`` output (safetensors + json)."""
        cfg = load_backbone_config(path)
        backbone = cls(cfg["name"], in_chans=cfg["in_chans"], image_size=cfg.get("img_size"))
        backbone.load_weights(path)
        return backbone


def _create_timm_model(
    name: str, in_chans: int, image_size: int | None, pretrained: bool = False
) -> nn.Module:
    """timm model without classifier; ``image_size`` only for architectures that take it."""
    kwargs: dict = {"pretrained": pretrained, "num_classes": 0, "in_chans": in_chans}
    try:
        if image_size is None:
            return timm.create_model(name, **kwargs)
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError as err:  # CNNs have no img_size argument: they take any size
            if "img_size" not in str(err):
                raise
            return timm.create_model(name, **kwargs)
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise RuntimeError(
            f"Could not get timm's pretrained weights for {name!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}).\nOffline? Download them once where the hub "
            "is reachable and pass weights=FILE (any .pth/.safetensors state dict)."
        ) from err
