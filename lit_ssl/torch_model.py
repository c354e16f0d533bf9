"""What a LightningModule around a plain torch model shares (anomalib's split).

``DefectClassifier`` and ``AnomalyDetector`` hold their torch model (the one inference path
that the ONNX export traces) as ``self.model``. :class:`AroundTorchModel` gives them its parts
as attributes (``backbone``, ``threshold``, ``input_size``), and :func:`flatten_child_keys`
keeps their state dicts (and so their checkpoints) in the torch model's own keys, without the
``model.`` prefix (``backbone.*``, ``head.*``, ``threshold``, ``memory_bank``,
``input_size``): the layout users and tools read, and what ``load_state_dict`` accepts.
This module imports no lit_ssl module.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["AroundTorchModel", "flatten_child_keys"]


def flatten_child_keys(owner: nn.Module, child: str = "model") -> None:
    """Save and load ``owner.<child>``'s entries without the ``<child>.`` prefix.

    Args:
        owner: the module whose ``state_dict`` / ``load_state_dict`` change.
        child: name of the submodule whose keys move up one level.

    Example:
        >>> import torch
        >>> owner = nn.Module()
        >>> owner.model = nn.Linear(2, 1)
        >>> flatten_child_keys(owner)
        >>> sorted(owner.state_dict())
        ['bias', 'weight']
        >>> owner.load_state_dict({"weight": torch.ones(1, 2), "bias": torch.zeros(1)})
        <All keys matched successfully>
    """
    inner = f"{child}."

    def flatten(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
        for key in [k for k in state if k.startswith(prefix + inner)]:
            state[prefix + key[len(prefix + inner) :]] = state.pop(key)

    def nest(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        names = _entry_names(getattr(module, child))
        for key in [k for k in state if k.startswith(prefix)]:
            if key[len(prefix) :].split(".", 1)[0] in names:
                state[prefix + inner + key[len(prefix) :]] = state.pop(key)

    owner.register_state_dict_post_hook(flatten)
    owner.register_load_state_dict_pre_hook(nest)


def _entry_names(module: nn.Module) -> set[str]:
    """The first components of ``module``'s state-dict keys."""
    return {*module._modules, *module._parameters, *module._buffers}


class AroundTorchModel:
    """Mixin of a LightningModule whose torch model is ``self.model``: its parts by name."""

    model: nn.Module

    @property
    def backbone(self) -> nn.Module:
        """The torch model's backbone (``DefectFinetuning`` freezes and unfreezes it)."""
        return self.model.backbone

    @property
    def threshold(self) -> Tensor:
        """The torch model's decision threshold buffer."""
        return self.model.threshold

    @threshold.setter
    def threshold(self, value: Tensor) -> None:
        self.model.threshold = value

    @property
    def input_size(self) -> Tensor:
        """``(H, W)`` recorded at fit (``(0, 0)``: unknown), the torch model's buffer."""
        return self.model.input_size
