"""Latent prediction head: predict an EMA teacher's dense latents of masked regions."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ssl.backbone import Backbone
from lit_ssl.backbone.encoding import check_mask_patch, check_vit, dense_stride, encode_masked
from lit_ssl.ema import EMATeacher, cosine_momentum
from lit_ssl.heads.base import HeadOutput, SSLHead
from lit_ssl.losses import masked_latent_loss
from lit_ssl.masking import (
    Fill,
    cell_weights,
    check_fill,
    check_mask_ratio,
    mask_to_pixels,
    random_patch_mask_for,
)

__all__ = ["LatentPrediction", "layer_norm_grid"]


def layer_norm_grid(dense: Tensor) -> Tensor:
    """Normalise every position of a ``(B, D, h, w)`` grid over channels (no affine)."""
    x = dense.float().permute(0, 2, 3, 1)
    return F.layer_norm(x, x.shape[-1:]).permute(0, 3, 1, 2)


class LatentPrediction(SSLHead):
    """Masked latent prediction (I-JEPA / data2vec style) on any backbone.

    The student (the backbone) sees a masked view (mask token after the patch embedding
    for ViTs, filled pixels for CNNs); an EMA teacher (a copy of the backbone, cosine
    momentum ``base_momentum -> 1``, updated once per optimizer step) sees the full view.
    A light convolutional predictor on the student's dense grid (3x3 conv, GELU, 1x1 conv:
    the same for CNN feature maps and ViT token grids) regresses the teacher's dense
    latents, layer-normalised per position as in data2vec, on masked cells only. No
    pixels are reconstructed.

    Args:
        mask_ratio: fraction of mask patches masked (exact per image, rounded).
        mask_patch_size: mask patch side in pixels; default the dense stride (ViT patch
            size, CNN output stride) so every feature cell is fully masked or visible.
            Smaller patches on CNNs weight each cell by its masked fraction.
        predictor_dim: hidden width of the predictor.
        base_momentum: EMA momentum at the start of training.
        loss: ``"smooth_l1"`` or ``"mse"``.
        fill: pixel fill of masked patches for CNNs, ``"mean"`` or ``"zero"``.
    """

    family = "joint_embedding"
    num_views = 1

    def __init__(
        self,
        mask_ratio: float = 0.6,
        mask_patch_size: int | None = None,
        predictor_dim: int = 256,
        base_momentum: float = 0.996,
        loss: Literal["smooth_l1", "mse"] = "smooth_l1",
        fill: Fill = "mean",
    ) -> None:
        super().__init__()
        check_mask_ratio(mask_ratio)
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1], got {base_momentum}.")
        if loss not in ("smooth_l1", "mse"):
            raise ValueError(f"loss must be 'smooth_l1' or 'mse', got {loss!r}.")
        check_fill(fill)
        self.mask_ratio = mask_ratio
        self.mask_patch_size = mask_patch_size
        self.predictor_dim = predictor_dim
        self.base_momentum = base_momentum
        self.momentum = base_momentum
        self.loss = loss
        self.fill = fill
        self.patch = 0
        self.predictor: nn.Module | None = None
        self.mask_token: nn.Parameter | None = None
        self.teacher: EMATeacher | None = None

    def check_backbone(self, backbone: Backbone) -> None:
        if backbone.is_vit:
            check_vit(backbone, "LatentPrediction")
        check_mask_patch(backbone, self.mask_patch_size or dense_stride(backbone))

    def build(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        self.patch = self.mask_patch_size or dense_stride(backbone)
        dim = backbone.dense_dim
        self.predictor = nn.Sequential(
            nn.Conv2d(dim, self.predictor_dim, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(self.predictor_dim, dim, kernel_size=1),
        )
        if backbone.is_vit:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.teacher = EMATeacher(backbone)

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        if self.teacher is None or self.predictor is None:
            raise RuntimeError("LatentPrediction.build(backbone) must be called before forward.")
        x = views[0]
        mask = random_patch_mask_for(x, self.patch, self.mask_ratio)
        pooled, dense = encode_masked(
            backbone,
            x,
            mask,
            mask_patch_size=self.patch,
            mask_token=self.mask_token,
            fill=self.fill,
        )
        pred = self.predictor(dense)
        with torch.no_grad():
            target = layer_norm_grid(self.teacher.module.forward_dense(x)[1])
        weights = cell_weights(mask_to_pixels(mask, self.patch), tuple(dense.shape[-2:]))
        loss = masked_latent_loss(pred, target, weights, self.loss)
        return HeadOutput(loss=loss, terms={}, embeddings=pooled.detach())

    def on_optimizer_step(self, backbone: Backbone, progress: float) -> None:
        if self.teacher is None:
            return
        self.momentum = cosine_momentum(progress, self.base_momentum)
        self.teacher.update(backbone, self.momentum)

    def extra_logs(self) -> dict[str, float]:
        return {"ema_momentum": self.momentum}
