"""Distillation head: the backbone predicts a frozen foundation model's latents."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from lit_ssl.backbone import Backbone
from lit_ssl.heads.base import HeadOutput, SSLHead
from lit_ssl.heads.latent import layer_norm_grid

__all__ = ["Distillation", "build_teacher", "distillation_loss"]

log = logging.getLogger(__name__)

TEACHER_PREFIX = "teacher."
TEACHER_SEED = 0  # a random teacher (no weights) is the same in every process and on reload
Encoded = tuple[Tensor, Tensor]


def build_teacher(
    name: str, weights: str | Path | None, in_chans: int = 3, image_size: int | None = None
) -> Backbone:
    """A frozen teacher ``Backbone`` in eval mode, built from a local weights file.

    The build draws its random initialisation from a private generator (seed 0), so it leaves
    the global RNG (the student's initialisation) untouched and a random teacher is the same
    on every DDP rank, on resume and on reload.

    Args:
        name: timm architecture name, e.g. ``"vit_small_patch14_dinov2"``.
        weights: a weights file as ``Backbone(weights=...)`` reads it (safetensors, or a torch
            state dict read with ``weights_only=True``), or ``None`` for a random teacher.
        in_chans: the teacher's input channels.
        image_size: the teacher's input size (fixed-size architectures: ViTs).

    Raises:
        ValueError: ``name`` is no timm architecture.
        FileNotFoundError: ``weights`` does not exist.
    """
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(
            f"Unknown teacher architecture {name!r}: give the timm name the weights were "
            "trained with, e.g. 'vit_small_patch14_dinov2' or 'resnet50'."
        )
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"Teacher weights {weights} not found: pass teacher_weights=FILE, a state dict "
            f"(.safetensors/.pth) of the timm model {name!r}. The distilled student alone needs "
            "no teacher: use the run's backbone.safetensors or --model.weights CKPT."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEACHER_SEED)
        teacher = Backbone(name, in_chans, image_size=image_size, weights=weights)
    if weights is None and rank_zero_only.rank == 0:
        log.warning(
            "Distillation: no teacher_weights, the teacher %r is randomly initialised and "
            "teaches nothing useful; pass teacher_weights=FILE (its pretrained weights).",
            name,
        )
    return teacher.requires_grad_(False).eval()


def distillation_loss(
    pred: Tensor, target: Tensor, kind: Literal["cosine", "smooth_l1"] = "cosine"
) -> Tensor:
    """Loss between predicted and teacher features, in float32, channels on dim 1.

    The target is layer-normalised over channels (no affine) per sample / per position, as
    the whitened targets of Feature Distillation (Wei et al. 2022,
    https://arxiv.org/abs/2205.14141) and data2vec.

    Args:
        pred: ``(B, D)`` or ``(B, D, h, w)`` predictions.
        target: teacher features of the same shape (no gradient).
        kind: ``"cosine"`` (``1 - cos`` over channels, averaged) or ``"smooth_l1"``
            (Feature Distillation's loss, beta = 1).

    Example:
        >>> target = torch.tensor([[3.0, 1.0]])  # layer-normalised: [1, -1]
        >>> distillation_loss(torch.tensor([[-1.0, 1.0]]), target)  # opposite direction
        tensor(2.)
    """
    pred = pred.float()
    if target.ndim == 2:
        target = F.layer_norm(target.float(), target.shape[-1:])
    else:
        target = layer_norm_grid(target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=1.0)
    return 1.0 - F.cosine_similarity(pred, target, dim=1, eps=1e-6).mean()


def _encode_views(encode: Callable[[Tensor], Encoded], views: list[Tensor]) -> list[Encoded]:
    """``encode`` (-> pooled, dense) of every view; one pass over all views of one shape."""
    if len({tuple(v.shape[1:]) for v in views}) == 1:
        pooled, dense = encode(torch.cat(views))
        return list(zip(pooled.chunk(len(views)), dense.chunk(len(views)), strict=True))
    return [encode(view) for view in views]


class Distillation(SSLHead):
    """Distil a frozen foundation model into the backbone by predicting its latents.

    The student is the ``SSLModule``'s backbone (any timm model, 1 or 3 channels); the
    teacher is any timm model built from a local weights file (DINOv2/DINOv3 ViTs, an
    in-house model), frozen, in eval mode whatever mode the module is in, and run without
    gradients (under the module's autocast, i.e. bf16 on GPUs with ``bf16-mixed``), once per
    batch over all views. The student predicts, through small heads of its own, the
    teacher's global (pooled) embedding with an MLP and its dense patch features, resampled
    to the student's feature grid, with a per-cell MLP (1x1 convolutions). Targets are
    layer-normalised; losses are in float32. This is feature-prediction distillation as in
    FitNets (Romero et al. 2015, https://arxiv.org/abs/1412.6550: a regressor on the
    student's feature map predicts the teacher's), Feature Distillation (Wei et al. 2022,
    https://arxiv.org/abs/2205.14141: whitened teacher features as targets) and lightly-train's
    distillation (https://docs.lightly.ai/train/stable/pretrain_distill/methods/distillation.html).

    Channels: a mono student from an RGB teacher feeds the teacher the grey image repeated on
    3 channels; an RGB student with a mono teacher feeds it the channel mean. Size: views are
    resampled (bilinear, antialiased) to ``teacher_image_size``, or to a fixed-size ViT
    teacher's own size; a CNN teacher otherwise sees the views as they are.

    The teacher's weights are not saved in checkpoints (its state-dict keys are dropped on
    save and taken from the rebuilt teacher on load): reloading the module or resuming
    rebuilds it from ``teacher_weights`` (a random teacher, with no weights, is rebuilt
    identically), so that file must still be there. The student alone needs no teacher: the
    run's exported ``backbone.safetensors``, or the checkpoint as ``weights=`` of a
    ``DefectClassifier`` / ``AnomalyDetector`` (only its backbone keys are read).

    Args:
        teacher: timm architecture of the teacher, e.g. ``"vit_small_patch14_dinov2"``.
        teacher_weights: the teacher's weights file (``.safetensors``, or a ``.pth`` state dict
            read with ``weights_only=True``; the shapes ``Backbone(weights=...)`` takes).
            ``None`` is a randomly initialised teacher, which teaches nothing useful (tests).
        teacher_in_chans: input channels of the teacher (3 for RGB foundation models).
        teacher_image_size: the teacher's input side; default the fixed size of a ViT
            teacher (timm's default for the name), the views' own size for other teachers.
        views: 1: the student predicts the teacher on the same augmented view; 2: also across
            views (joint-embedding style): the global embedding of one view predicts the
            teacher's of the other (dense targets stay on the same view: positions of two
            crops do not correspond).
        global_weight: weight of the global (pooled) embedding loss.
        dense_weight: weight of the dense (patch) feature loss.
        hidden_dim: hidden width of both prediction heads.
        loss: ``"cosine"`` (``1 - cos``) or ``"smooth_l1"`` (Feature Distillation).

    Example:
        >>> import torch
        >>> from lit_ssl import SSLModule
        >>> from lit_ssl.heads import Distillation
        >>> head = Distillation("test_vit", teacher_weights=None, teacher_image_size=64)
        >>> module = SSLModule("test_resnet", head=head)
        >>> out = module.head(module.backbone, [torch.rand(2, 3, 32, 32)])
        >>> out.loss.ndim, sorted(out.terms)
        (0, ['dense', 'global'])
    """

    family = "joint_embedding"
    min_batch_size = 1  # no batch statistics in the loss or the predictors

    def __init__(
        self,
        teacher: str,
        teacher_weights: str | None = None,
        teacher_in_chans: int = 3,
        teacher_image_size: int | None = None,
        views: int = 1,
        global_weight: float = 1.0,
        dense_weight: float = 1.0,
        hidden_dim: int = 1024,
        loss: Literal["cosine", "smooth_l1"] = "cosine",
    ) -> None:
        super().__init__()
        if views not in (1, 2):
            raise ValueError(f"views must be 1 (same view) or 2 (also across views), got {views}.")
        if min(global_weight, dense_weight) < 0 or global_weight + dense_weight == 0:
            raise ValueError(
                "global_weight and dense_weight must be >= 0 and not both 0, got "
                f"{global_weight} and {dense_weight}."
            )
        if loss not in ("cosine", "smooth_l1"):
            raise ValueError(f"loss must be 'cosine' or 'smooth_l1', got {loss!r}.")
        if teacher_image_size is not None and teacher_image_size < 1:
            raise ValueError(f"teacher_image_size must be >= 1, got {teacher_image_size}.")
        self.num_views = views
        self.global_weight = float(global_weight)
        self.dense_weight = float(dense_weight)
        self.hidden_dim = hidden_dim
        self.loss = loss
        self.teacher = build_teacher(teacher, teacher_weights, teacher_in_chans, teacher_image_size)
        self.teacher_size = _input_size(self.teacher, teacher_image_size)
        self.global_predictor: nn.Module | None = None
        self.dense_predictor: nn.Module | None = None
        self.register_state_dict_post_hook(_drop_teacher)
        self.register_load_state_dict_pre_hook(_keep_teacher)

    # ----------------------------------------------------------------- teacher plumbing
    def train(self, mode: bool = True) -> Distillation:
        """Set the train mode of the prediction heads; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_input(self, images: Tensor) -> Tensor:
        """``images`` (float, [0, 1]) with the teacher's channels and input size."""
        chans, want = images.shape[1], self.teacher.in_chans
        if chans != want:
            images = images.expand(-1, want, -1, -1) if chans == 1 else images.mean(1, True)
        size = self.teacher_size
        if size is not None and tuple(images.shape[-2:]) != size:
            images = F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=True
            )
        return images

    # ----------------------------------------------------------------- head contract
    def check_backbone(self, backbone: Backbone) -> None:
        student, teacher = backbone.in_chans, self.teacher.in_chans
        if student != teacher and 1 not in (student, teacher):
            raise ValueError(
                f"A {student}-channel student cannot see what a {teacher}-channel teacher sees "
                "(only 1 <-> N channels are converted); set teacher_in_chans or the data's "
                "in_chans."
            )

    def build(self, backbone: Backbone) -> None:
        self.check_backbone(backbone)
        hidden = self.hidden_dim
        self.global_predictor = nn.Sequential(
            nn.Linear(backbone.embed_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, self.teacher.embed_dim),
        )
        self.dense_predictor = nn.Sequential(
            nn.Conv2d(backbone.dense_dim, hidden, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(hidden, self.teacher.dense_dim, kernel_size=1),
        )

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        if self.global_predictor is None or self.dense_predictor is None:
            raise RuntimeError("Distillation.build(backbone) must be called before forward.")
        views = list(views[: self.num_views])
        if len(views) < self.num_views:
            raise ValueError(f"Distillation(views={self.num_views}) got {len(views)} view(s).")
        students = _encode_views(backbone.forward_dense, views)
        if self.teacher.training:  # a caller set train mode on the teacher itself
            self.teacher.eval()
        with torch.no_grad():
            teachers = _encode_views(
                self.teacher.forward_dense, [self.teacher_input(v) for v in views]
            )
        # two views: the global embedding of each view predicts the teacher's of the other
        global_targets = [pooled for pooled, _ in reversed(teachers)]
        global_loss = torch.zeros((), device=views[0].device)
        dense_loss = torch.zeros((), device=views[0].device)
        embeddings = None
        for (pooled, dense), (_, teacher_dense), target in zip(
            students, teachers, global_targets, strict=True
        ):
            pred = self.global_predictor(pooled)
            embeddings = pred if embeddings is None else embeddings
            global_loss = global_loss + distillation_loss(pred, target, self.loss)
            grid = F.interpolate(
                teacher_dense.float(),
                size=tuple(dense.shape[-2:]),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            dense_loss = dense_loss + distillation_loss(
                self.dense_predictor(dense), grid, self.loss
            )
        global_loss, dense_loss = global_loss / len(views), dense_loss / len(views)
        loss = self.global_weight * global_loss + self.dense_weight * dense_loss
        return HeadOutput(
            loss=loss,
            terms={"global": global_loss.detach(), "dense": dense_loss.detach()},
            embeddings=embeddings.detach(),
            features=students[0][0].detach(),
        )


def _input_size(teacher: Backbone, image_size: int | None) -> tuple[int, int] | None:
    """The side the teacher's input is resampled to: given, a fixed-size ViT's, else none."""
    if image_size is not None:
        return (image_size, image_size)
    model = teacher.model
    if teacher.is_vit and not getattr(model, "dynamic_img_size", False):
        size = getattr(model.patch_embed, "img_size", None)
        if size is not None:
            return (int(size[0]), int(size[1]))
    return None


def _drop_teacher(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """State-dict hook: leave the frozen teacher out of checkpoints (rebuilt from its file)."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}{TEACHER_PREFIX}")]:
        del state_dict[key]


def _keep_teacher(
    module: Distillation, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Load hook: the teacher's keys (absent from checkpoints) come from the rebuilt teacher."""
    for key, value in module.teacher.state_dict().items():
        state_dict.setdefault(f"{prefix}{TEACHER_PREFIX}{key}", value)
