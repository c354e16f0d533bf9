"""SSLModule: a LightningModule pretraining a timm backbone with any SSL head.

Batch contract: training (and validation) batches are :class:`lit_ssl.data.Batch` records
(what ``FactoryDataModule`` yields: ``views``, ``labels``, ``clean``, ...) or plain
``(views, labels)`` tuples, where ``views`` is a list of float tensors ``(B, C, H, W)`` in
[0, 1] (as many as ``head.num_views``; in a plain tuple, plus one un-augmented image last when
``head.clean_view``) and ``labels`` a ``LongTensor (B,)`` with ``-1`` where unknown (probes use
the others). Both are read through :func:`lit_ssl.data.as_batch`. The model declares what it
needs in :attr:`SSLModule.view_spec`, which ``FactoryDataModule.setup`` reads.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lit_ssl.backbone import Backbone
from lit_ssl.checkpoints import SafeCheckpointing
from lit_ssl.data.batch import Batch, ViewSpec, as_batch
from lit_ssl.data_info import DataInfo, data_info
from lit_ssl.distributed import world_size
from lit_ssl.heads.base import (
    HeadOutput,
    Reconstructions,
    SSLHead,
    describe_head,
    head_from_description,
)
from lit_ssl.optim import LARS, decay_groups, warmup_cosine
from lit_ssl.step_output import StepOutput

__all__ = ["SSLModule", "collapse_std"]


def collapse_std(embeddings: Tensor) -> Tensor:
    """Mean per-dimension std of L2-normalised embeddings (about 1/sqrt(D) when healthy, 0
    when collapsed)."""
    return F.normalize(embeddings.float(), dim=1).std(dim=0).mean()


def _host_scalar(value: float | Tensor) -> Tensor:
    """A CPU scalar tensor to log a host-side number without a host-device sync.

    ``LightningModule.log`` turns a Python number into ``torch.tensor(value,
    device=self.device)``: on a GPU that is a blocking host-to-device copy, i.e. a stream
    synchronisation on every training step. A CPU tensor is logged as is.
    """
    return value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))


class SSLModule(SafeCheckpointing, L.LightningModule):
    """Self-supervised pretraining of a timm backbone with an interchangeable head.

    Args:
        backbone: timm architecture name or a ready ``Backbone``.
        head: an ``SSLHead`` (``VICReg()`` by default); changing method is changing this.
        in_chans: input channels when ``backbone`` is a name.
        image_size: input size for fixed-size architectures (ViTs) when ``backbone`` is a name.
        weights: optional local weights file for the backbone (when given by name): an
            export, or a timm/ImageNet checkpoint as you have it (see ``Backbone``) — continued
            pretraining from ImageNet weights is the recommended start when you have them.
        pretrained: start the backbone from timm's own pretrained weights (needs the hub).
        optimizer: ``"adamw"`` or ``"lars"``.
        lr: peak learning rate.
        weight_decay: weight decay (not applied to norms, biases, tokens).
        warmup_fraction: fraction of the optimizer steps spent in linear warmup.
        final_lr_ratio: learning rate at the end of the cosine decay, relative to ``lr``.
        channels_last: run CNN backbones in channels-last memory format (faster on GPUs).
    """

    def __init__(
        self,
        backbone: str | Backbone = "resnet18",
        head: SSLHead | None = None,
        in_chans: int = 3,
        image_size: int | None = None,
        weights: str | None = None,
        optimizer: Literal["adamw", "lars"] = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.1,
        final_lr_ratio: float = 0.01,
        channels_last: bool = False,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(head, dict):  # rebuilt from a checkpoint's hyperparameters (allow-list)
            head = head_from_description(head)
        if head is None:
            from lit_ssl.heads.joint_embedding import VICReg

            head = VICReg()
        if not isinstance(head, SSLHead):
            raise TypeError(
                f"head must be an lit_ssl.heads head (SSLHead), got {type(head).__name__}."
            )
        if optimizer not in ("adamw", "lars"):
            raise ValueError(f"optimizer must be 'adamw' or 'lars', got {optimizer!r}.")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}.")
        if isinstance(backbone, str):
            backbone = Backbone(
                backbone, in_chans, image_size=image_size, weights=weights, pretrained=pretrained
            )
        self.save_hyperparameters(ignore=["backbone", "head", "image_size"])
        self.hparams.update(
            backbone=backbone.name,
            in_chans=backbone.in_chans,
            image_size=backbone.image_size,
            weights=None,  # weights live in the checkpoint's state dict from now on
            pretrained=False,
            head=describe_head(head),
        )
        if backbone.image_size is None:  # any size: no key to disagree with the datamodule's
            self.hparams.pop("image_size")
        # Not in the logged (initial) hparams either: Lightning refuses a model/datamodule
        # key pair with different values, and a ViT may be built at another size.
        self.backbone = backbone
        head.check_backbone(backbone)
        head.build(backbone)
        self.head = head
        if channels_last and not backbone.is_vit:
            self.backbone.to(memory_format=torch.channels_last)
        self._ema_step = -1
        self.data_info = DataInfo()  # what the data says about itself, read in setup

    # ----------------------------------------------------------------- forward / steps
    def forward(self, x: Tensor) -> Tensor:
        """Pooled backbone features ``(B, D)`` of float images in [0, 1]."""
        return self.backbone(x)

    def _prepare(self, views: list[Tensor]) -> list[Tensor]:
        if self.hparams.channels_last and not self.backbone.is_vit:
            return [v.contiguous(memory_format=torch.channels_last) for v in views]
        return list(views)

    @property
    def view_spec(self) -> ViewSpec:
        """The views this model's head needs; ``FactoryDataModule.setup`` reads it."""
        return ViewSpec(self.head.num_views, self.head.clean_view)

    def to_batch(self, batch: Any) -> Batch:
        """``batch`` as a :class:`~lit_ssl.data.Batch` (a plain tuple's clean view is last)."""
        return as_batch(batch, clean_last=self.head.clean_view)

    def _head_views(self, batch: Batch) -> list[Tensor]:
        """The head's input: the augmented views, then the clean view when it asks for one."""
        views, needed = list(batch.views), self.head.num_views
        clean = self.head.clean_view
        if len(views) < needed or (clean and batch.clean is None):
            raise ValueError(
                f"{type(self.head).__name__} needs {needed} view(s) per sample"
                f"{' and the clean view' if clean else ''}, the batch has {len(views)}"
                f"{' and a clean view' if batch.clean is not None else ''}. Leave the "
                "DataModule's views unset so the model configures it (FactoryDataModule), or "
                f"yield {needed + int(clean)} views{' (clean last)' if clean else ''}."
            )
        return self._prepare(views + ([batch.clean] if clean else []))

    def training_step(
        self, batch: Batch | tuple[list[Tensor], Tensor], batch_idx: int
    ) -> dict[str, Any]:
        """The SSL loss of one batch: ``{"loss": ..., "step": StepOutput}`` (callbacks read
        the record with :func:`lit_ssl.step_output.step_output`)."""
        batch = self.to_batch(batch)
        labels = batch.labels
        if self._too_small(labels):
            raise ValueError(
                f"{type(self.head).__name__} needs training batches of at least "
                f"{self.head.min_batch_size} samples (over all ranks), got {labels.shape[0]}. "
                "Use batch_size >= 2 and drop the last incomplete batch (drop_last=True)."
            )
        output = self.head(self.backbone, self._head_views(batch))
        self._log_output("train", output, batch_size=labels.shape[0])
        return StepOutput(output.loss, output, labels).as_outputs()

    def validation_step(
        self, batch: Batch | tuple[list[Tensor], Tensor], batch_idx: int
    ) -> dict[str, Any]:
        """Like :meth:`training_step`; a batch too small for the loss gives ``loss=None``."""
        batch = self.to_batch(batch)
        labels, views = batch.labels, self._head_views(batch)
        if self._too_small(labels):  # e.g. a last batch of one image: no loss, probes still run
            self._say_small_batch_skipped(labels.shape[0])
            return StepOutput(None, None, labels).as_outputs()
        output = self.head(self.backbone, views)
        self._log_output("val", output, batch_size=labels.shape[0])
        return StepOutput(output.loss, output, labels).as_outputs()

    def _too_small(self, labels: Tensor) -> bool:
        """Whether the global batch is below the head's ``min_batch_size`` (shapes only).

        Every DDP rank sees the same per-rank batch size (the samplers pad or drop), so all
        ranks take the same branch and no collective is left waiting.
        """
        return labels.shape[0] * world_size() < self.head.min_batch_size

    def _say_small_batch_skipped(self, size: int) -> None:
        if getattr(self, "_small_batch_said", False):
            return
        self._small_batch_said = True
        rank_zero_warn(
            f"A validation batch of {size} sample(s) is left out of val/loss: "
            f"{type(self.head).__name__}'s loss needs {self.head.min_batch_size} (batch "
            "statistics); the probes still see it."
        )

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Pooled embeddings of the first view (or of a plain image batch)."""
        return self.backbone(as_batch(batch).views[0])

    def _log_output(self, stage: str, output: HeadOutput, batch_size: int) -> None:
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            output.loss,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        for name, value in output.terms.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=not on_step,
            )
        if output.embeddings is not None:
            self.log(
                f"{stage}/embedding_std",
                collapse_std(output.embeddings),
                on_step=on_step,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=not on_step,
            )

    @torch.no_grad()
    def reconstructions(self, batch: Batch | list[Tensor]) -> Reconstructions | None:
        """Input / masked input / reconstruction of a reconstruction head, else ``None``.

        Args:
            batch: a :class:`~lit_ssl.data.Batch`, or the head's input views (a list of
                tensors, the clean view last when the head asks for one).

        Runs the head in eval mode without gradients; used by image-grid callbacks.
        """
        views = self._head_views(batch) if isinstance(batch, Batch) else self._prepare(batch)
        was_training = self.training
        self.eval()
        try:
            output = self.head(self.backbone, views, return_reconstructions=True)
        finally:
            self.train(was_training)
        return output.reconstructions

    # ----------------------------------------------------------------- EMA / schedules
    def on_train_start(self) -> None:
        self._ema_step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step
        if step == self._ema_step:  # gradient accumulation: no optimizer step this batch
            return
        self._ema_step = step
        total = self._total_steps()
        self.head.on_optimizer_step(self.backbone, step / total)
        for name, value in self.head.extra_logs().items():
            self.log(f"train/{name}", _host_scalar(value), on_step=True, on_epoch=False)
        self.log(
            "train/lr",
            _host_scalar(self.trainer.optimizers[0].param_groups[0]["lr"]),
            on_step=True,
            on_epoch=False,
        )

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run (schedules need a finite number)."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "The LR and EMA schedules need a finite number of optimizer steps: set "
                "Trainer(max_steps=...) or max_epochs with a sized dataloader."
            )
        return max(1, int(total))

    def setup(self, stage: str) -> None:
        """Read what the data says about itself (:attr:`data_info`) and size the head for it.

        Heads whose modules depend on the input side (``DenoisingAutoencoder``) are sized
        from the data's ``image_size`` here, before the optimizer and any checkpoint are
        loaded; the size is recorded in the ``head`` hyperparameters. A DataModule of your
        own that decides the views reads :attr:`view_spec` in its ``setup`` (as
        ``FactoryDataModule`` does).
        """
        self.data_info = data_info(self._trainer)
        self.head.configure_image_size(self.data_info.image_size)
        self.hparams["head"] = describe_head(self.head)

    def configure_optimizers(self):
        no_decay = set(getattr(self.backbone.model, "no_weight_decay", lambda: set())())
        groups = decay_groups(self.named_parameters(), self.hparams.weight_decay, no_decay)
        if self.hparams.optimizer == "lars":
            optimizer = LARS(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        else:
            for group in groups:
                group.pop("lars_exclude", None)
            optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total = self._total_steps()
        warmup = int(self.hparams.warmup_fraction * total)
        schedule = partial(
            warmup_cosine, total=total, warmup=warmup, final_ratio=self.hparams.final_lr_ratio
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ----------------------------------------------------------------- checkpoints
    module_kind = "SSLModule"  # the checkpoint marker ``lit-ssl export`` routes by

    # ----------------------------------------------------------------- export
    def export(self, folder: Path) -> Path:
        """Write the run's deployable weights into ``folder`` (``ExportOnFitEnd`` calls it):
        ``backbone.safetensors`` + ``.json``; returns the safetensors path."""
        return self.export_backbone(Path(folder) / "backbone.safetensors")

    def export_backbone(self, path: str | Path) -> Path:
        """Write the backbone as safetensors + json that ``timm.create_model`` loads.

        Returns:
            Path of the safetensors file.
        """
        return self.backbone.export(path)
