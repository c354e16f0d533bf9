"""Joint-embedding heads: SimCLR, BYOL, VICReg, Barlow Twins."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_ssl import losses
from lit_ssl.backbone import Backbone
from lit_ssl.ema import EMATeacher, cosine_momentum
from lit_ssl.heads.base import HeadOutput, SSLHead
from lit_ssl.heads.projection import mlp

__all__ = ["BYOL", "BarlowTwins", "SimCLR", "VICReg", "pooled_views"]


def pooled_views(backbone: nn.Module, views: list[Tensor]) -> list[Tensor]:
    """Pooled features of each view with one backbone forward over all views."""
    if len({tuple(v.shape[1:]) for v in views}) == 1:
        return list(backbone(torch.cat(views)).chunk(len(views)))
    return [backbone(v) for v in views]


class _TwoViewProjectionHead(SSLHead):
    """Shared plumbing: backbone -> projector on two views -> symmetric loss."""

    family = "joint_embedding"
    num_views = 2

    def __init__(self, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.projector: nn.Module = nn.Identity()

    def build(self, backbone: Backbone) -> None:
        self.projector = mlp(backbone.embed_dim, self.hidden_dim, self.out_dim, self.num_layers)

    def loss_terms(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        h1, h2 = pooled_views(backbone, views[:2])
        z1, z2 = self.projector(torch.cat([h1, h2])).chunk(2)
        loss, terms = self.loss_terms(z1, z2)
        return HeadOutput(loss=loss, terms=terms, embeddings=z1.detach(), features=h1.detach())


class SimCLR(_TwoViewProjectionHead):
    """SimCLR (Chen et al. 2020): NT-Xent between the projections of two views.

    Args:
        hidden_dim: projector hidden width.
        out_dim: projection dimension.
        num_layers: projector depth (2 in SimCLR v1, 3 in v2).
        temperature: NT-Xent temperature.
    """

    min_batch_size = 2  # batch statistics / negatives

    def __init__(
        self,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(hidden_dim, out_dim, num_layers)
        self.temperature = temperature

    def loss_terms(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = losses.info_nce(z1, z2, temperature=self.temperature)
        return loss, {}


class VICReg(_TwoViewProjectionHead):
    """VICReg (Bardes et al. 2022): invariance, variance and covariance on an expander.

    Args:
        hidden_dim: expander width (8192 in the paper; 2048 is enough for factory data).
        out_dim: expander output dimension.
        num_layers: expander depth.
        sim_weight: invariance weight (lambda).
        var_weight: variance weight (mu).
        cov_weight: covariance weight (nu).
        convention: ``"paper"`` (Algorithm 1 of the paper) or ``"released"`` (the authors'
            code, https://github.com/facebookresearch/vicreg: the variance term halved).
            Hyperparameters copied from the released code assume ``"released"``; see
            :data:`lit_ssl.losses.Convention`.
    """

    min_batch_size = 2  # batch statistics / negatives

    def __init__(
        self,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        num_layers: int = 3,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        convention: losses.Convention = "paper",
    ) -> None:
        super().__init__(hidden_dim, out_dim, num_layers)
        losses._check_convention(convention)
        self.weights = (sim_weight, var_weight, cov_weight)
        self.convention = convention

    def loss_terms(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = losses.vicreg_terms(z1, z2, convention=self.convention)
        loss = losses.vicreg_weighted(terms, *self.weights)
        return loss, {name: value.detach() for name, value in terms.items()}


class BarlowTwins(_TwoViewProjectionHead):
    """Barlow Twins (Zbontar et al. 2021): cross-correlation towards the identity.

    Args:
        hidden_dim: projector width (8192 in the paper).
        out_dim: projector output dimension.
        num_layers: projector depth.
        lambd: weight of the off-diagonal (redundancy reduction) term (the released code's
            default is 0.0051).
        convention: ``"paper"`` (Algorithm 1: unbiased std) or ``"released"`` (the authors'
            code, https://github.com/facebookresearch/barlowtwins: ``BatchNorm1d``, biased
            std + 1e-5); see :data:`lit_ssl.losses.Convention`.
    """

    min_batch_size = 2  # batch statistics / negatives

    def __init__(
        self,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        num_layers: int = 3,
        lambd: float = 5e-3,
        convention: losses.Convention = "paper",
    ) -> None:
        super().__init__(hidden_dim, out_dim, num_layers)
        losses._check_convention(convention)
        self.lambd = lambd
        self.convention = convention

    def loss_terms(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = losses.barlow_twins(z1, z2, lambd=self.lambd, convention=self.convention)
        return loss, {}


class BYOL(SSLHead):
    """BYOL (Grill et al. 2020): online predictor regresses an EMA teacher's projection.

    The teacher (backbone + projector copy) is updated once per optimizer step with the
    cosine momentum schedule ``base_momentum -> 1``; it lives in this module, so it is
    saved in checkpoints. Loss: ``sum over both directions of 2 - 2 cos(p, z_teacher)``.

    Args:
        hidden_dim: projector and predictor hidden width.
        out_dim: projection dimension.
        base_momentum: EMA momentum at the start of training.
    """

    family = "joint_embedding"
    num_views = 2

    def __init__(
        self, hidden_dim: int = 4096, out_dim: int = 256, base_momentum: float = 0.996
    ) -> None:
        super().__init__()
        if not 0.0 <= base_momentum <= 1.0:
            raise ValueError(f"base_momentum must be in [0, 1], got {base_momentum}.")
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.base_momentum = base_momentum
        self.momentum = base_momentum
        self.projector: nn.Module = nn.Identity()
        self.predictor: nn.Module = nn.Identity()
        self.teacher: EMATeacher | None = None

    def build(self, backbone: Backbone) -> None:
        self.projector = mlp(backbone.embed_dim, self.hidden_dim, self.out_dim, 2)
        self.predictor = mlp(self.out_dim, self.hidden_dim, self.out_dim, 2)
        self.teacher = EMATeacher(nn.Sequential(backbone, self.projector))

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        if self.teacher is None:
            raise RuntimeError("BYOL.build(backbone) must be called before forward.")
        h1, h2 = pooled_views(backbone, views[:2])
        z1, z2 = self.projector(torch.cat([h1, h2])).chunk(2)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        t1, t2 = self.teacher(torch.cat(views[:2])).chunk(2)
        loss = losses.byol(p1, t2) + losses.byol(p2, t1)
        return HeadOutput(loss=loss, terms={}, embeddings=z1.detach(), features=h1.detach())

    def on_optimizer_step(self, backbone: Backbone, progress: float) -> None:
        if self.teacher is None:
            return
        self.momentum = cosine_momentum(progress, self.base_momentum)
        self.teacher.update(nn.Sequential(backbone, self.projector), self.momentum)

    def extra_logs(self) -> dict[str, float]:
        return {"ema_momentum": self.momentum}
