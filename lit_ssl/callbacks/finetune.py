"""DefectFinetuning: linear probing first, then fine-tuning the backbone at a lower LR."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from timm.models import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

__all__ = ["DefectFinetuning", "layer_groups"]


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters of a timm model grouped by depth (stem first, last stage/block last).

    Uses timm's ``group_matcher(coarse=False)`` (blocks for ViTs, stage blocks for CNNs);
    a model without one is a single group.
    """
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        return [list(model.parameters())]
    named = dict(model.named_parameters())
    grouped = group_parameters(model, matcher(coarse=False))
    return [[named[n] for n in grouped[key]] for key in sorted(grouped)]


class DefectFinetuning(BaseFinetuning):
    """Freeze the backbone for ``unfreeze_at_epoch`` epochs (linear probing), then train it.

    While frozen the backbone runs in eval mode: BatchNorm uses and keeps its running
    statistics (so probing sees the same features as inference), dropout is off. From epoch
    ``unfreeze_at_epoch`` on, backbone parameters join the optimizer with
    ``lr = head_lr * backbone_lr_factor`` (the head LR is the optimizer's first group), or,
    with ``layer_decay``, one group per depth with ``lr * layer_decay ** (depth from top)``.

    The LightningModule must expose ``.backbone`` (a ``lit_ssl.Backbone`` or any module)
    and build its optimizer from parameters with ``requires_grad`` (``DefectClassifier``
    does). The added parameter groups are saved with the callback's state and restored on
    resume (Lightning's ``BaseFinetuning``).

    Args:
        unfreeze_at_epoch: first epoch (0-based) in which the backbone trains; 0 = never frozen.
        backbone_lr_factor: backbone LR relative to the head LR.
        layer_decay: optional layer-wise LR decay in (0, 1] over timm's block/stage groups.
        train_bn_when_frozen: let BatchNorm layers train (affine + running stats) while the
            rest of the backbone is frozen, as in Lightning's ``BackboneFinetuning``.
    """

    def __init__(
        self,
        unfreeze_at_epoch: int = 1,
        backbone_lr_factor: float = 0.1,
        layer_decay: float | None = None,
        train_bn_when_frozen: bool = False,
    ) -> None:
        super().__init__()
        if unfreeze_at_epoch < 0:
            raise ValueError(f"unfreeze_at_epoch must be >= 0, got {unfreeze_at_epoch}.")
        if backbone_lr_factor <= 0:
            raise ValueError(f"backbone_lr_factor must be > 0, got {backbone_lr_factor}.")
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}.")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_factor = backbone_lr_factor
        self.layer_decay = layer_decay
        self.train_bn_when_frozen = train_bn_when_frozen

    @staticmethod
    def _backbone(pl_module: L.LightningModule) -> nn.Module:
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise AttributeError(
                f"DefectFinetuning needs pl_module.backbone (an nn.Module); "
                f"{type(pl_module).__name__} has none."
            )
        return backbone

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.unfreeze_at_epoch == 0:
            return
        backbone = self._backbone(pl_module)
        self.freeze(backbone, train_bn=self.train_bn_when_frozen)
        self._set_frozen_mode(backbone)

    def _set_frozen_mode(self, backbone: nn.Module) -> None:
        if self.train_bn_when_frozen:  # only BN trains: keep BN in train mode, rest eval
            backbone.eval()
            for module in backbone.modules():
                if isinstance(module, _BatchNorm):
                    module.train()
        else:
            backbone.eval()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if trainer.current_epoch < self.unfreeze_at_epoch:
            self._set_frozen_mode(self._backbone(pl_module))  # e.g. after a user's .train()

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if epoch < self.unfreeze_at_epoch or self.unfreeze_at_epoch == 0:
            return
        backbone = self._backbone(pl_module)
        if all(p.requires_grad for p in backbone.parameters()) and backbone.training:
            return  # already unfrozen (this run)
        self.make_trainable(backbone)
        backbone.train()
        self._add_param_groups(backbone, optimizer)

    def _add_param_groups(self, backbone: nn.Module, optimizer: Optimizer) -> None:
        """Add backbone parameters not yet in the optimizer (all of them, unless resumed)."""
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        base_lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_factor
        for params, lr in self._groups_with_lr(backbone, base_lr):
            params = [p for p in params if id(p) not in present]
            if params:
                optimizer.add_param_group({"params": params, "lr": lr})

    def _groups_with_lr(
        self, backbone: nn.Module, base_lr: float
    ) -> list[tuple[list[nn.Parameter], float]]:
        if self.layer_decay is None:
            return [(list(backbone.parameters()), base_lr)]
        model = getattr(backbone, "model", backbone)  # lit_ssl.Backbone wraps the timm model
        groups = layer_groups(model)
        last = len(groups) - 1
        return [
            (params, base_lr * self.layer_decay ** (last - i)) for i, params in enumerate(groups)
        ]
