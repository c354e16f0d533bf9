"""The head contract: what every SSL head receives, declares and returns."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from lit_ssl.allow_list import UntrustedCheckpointError, register_own_subclass, trusted_class
from lit_ssl.backbone import Backbone

__all__ = ["HeadOutput", "Reconstructions", "SSLHead", "describe_head", "head_from_description"]

Family = Literal["reconstruction", "joint_embedding", "hybrid"]


@dataclass
class Reconstructions:
    """Images for a reconstruction grid, all ``(B, C, H, W)`` in the input's [0, 1] range."""

    input: Tensor
    masked_input: Tensor
    reconstruction: Tensor


@dataclass
class HeadOutput:
    """What a head returns from ``forward``.

    Attributes:
        loss: scalar float32 loss to minimise.
        terms: named loss terms (detached) for logging, e.g. ``{"invariance": ...}``.
        embeddings: projector outputs of the first view ``(B, D')``, for collapse monitors.
        features: pooled backbone features of the first (unmasked) view ``(B, D)`` when the
            head computed them anyway; probes use them instead of a second forward.
        reconstructions: set when ``return_reconstructions`` was requested.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    embeddings: Tensor | None = None
    features: Tensor | None = None
    reconstructions: Reconstructions | None = None


class SSLHead(nn.Module):
    """Base class of SSL heads.

    A head owns its projector/predictor/decoder (and EMA teacher if any), builds them once
    it knows the backbone (``build``), and turns a list of views into a loss (``forward``).

    Class attributes every head declares:
        family: ``"reconstruction"``, ``"joint_embedding"`` or ``"hybrid"``.
        num_views: how many augmented views the data must provide.
        clean_view: whether the data must append the un-augmented (resize-only) image as
            one extra last view (denoising targets).
        min_batch_size: the fewest samples (over all DDP ranks) the loss is defined on:
            2 for losses built on batch statistics or negatives (VICReg, Barlow Twins,
            SimCLR). ``SSLModule`` leaves smaller validation batches out of the loss and
            refuses smaller training batches.

    The constructor arguments are recorded (``init_args``) so a checkpoint or a YAML
    recipe can rebuild the head without code; the heads lit_ssl defines join the checkpoint
    allow-list as they are defined (``lit_ssl.allow_list``).
    """

    family: ClassVar[Family]
    num_views: int = 2
    clean_view: bool = False
    min_batch_size: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__init__)
        register_own_subclass(cls)

    def build(self, backbone: Backbone) -> None:
        """Create the modules that depend on the backbone (dimensions, teacher copies)."""

    def configure_image_size(self, image_size: int | None) -> None:
        """Size the modules that depend on the input's side (called before training).

        ``SSLModule.setup`` calls it with the datamodule's ``image_size`` (``None`` when the
        data does not say), after ``build`` and before the optimizer and any checkpoint
        weights are loaded. Most heads work at any size and ignore it; the
        ``DenoisingAutoencoder`` builds its decoder for that size here.
        """

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        """Compute the loss from ``views`` (float images in [0, 1])."""
        raise NotImplementedError

    def on_optimizer_step(self, backbone: Backbone, progress: float) -> None:
        """Called once after every optimizer step (EMA updates); ``progress`` in [0, 1]."""

    def extra_logs(self) -> dict[str, float]:
        """Scalars to log besides the loss terms (e.g. the EMA momentum)."""
        return {}

    def check_backbone(self, backbone: Backbone) -> None:
        """Raise a clear error if this head cannot work with ``backbone``."""


def _recording_init(init):
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "_init_args" not in self.__dict__:
            bound = inspect.signature(init).bind(self, *args, **kwargs)
            bound.apply_defaults()
            recorded = dict(list(bound.arguments.items())[1:])
            object.__setattr__(self, "_init_args", recorded)
        init(self, *args, **kwargs)

    return wrapper


def describe_head(head: SSLHead) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": ...}`` of a head; nested heads are described too."""
    init_args = {
        key: describe_head(value) if isinstance(value, SSLHead) else value
        for key, value in getattr(head, "_init_args", {}).items()
    }
    cls = type(head)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def head_from_description(description: dict[str, Any]) -> SSLHead:
    """Rebuild a head from ``describe_head`` output (as stored in checkpoints).

    Classes are resolved only among lit_ssl's own heads (and those allowed with
    ``lit_ssl.checkpoints.trust_class``); nothing else named in the description is imported.
    """
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
