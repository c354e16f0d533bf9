"""Hybrid head: a reconstruction head and a joint-embedding head on one shared backbone."""

from __future__ import annotations

from torch import Tensor

from lit_ssl.backbone import Backbone
from lit_ssl.heads.base import HeadOutput, SSLHead

__all__ = ["Hybrid"]

PARTS = ("reconstruction", "joint_embedding")


def _check_part(head: SSLHead, family: str) -> None:
    if not isinstance(head, SSLHead):
        raise TypeError(
            f"Hybrid({family}=...) needs an lit_ssl.heads head, got {type(head).__name__}."
        )
    if head.family != family:
        examples = {
            "reconstruction": "MAE, MaskedReconstruction, DenoisingAutoencoder",
            "joint_embedding": "SimCLR, BYOL, VICReg, BarlowTwins, LatentPrediction, Distillation",
        }[family]
        raise ValueError(
            f"Hybrid({family}=...) needs a {family!r} head ({examples}); got "
            f"{type(head).__name__} of family {head.family!r}. Check the argument order."
        )


def _sub_views(head: SSLHead, views: list[Tensor]) -> list[Tensor]:
    """The views a part expects: its first ``num_views``, plus the clean view if it wants it."""
    return views[: head.num_views] + ([views[-1]] if head.clean_view else [])


class Hybrid(SSLHead):
    """Weighted sum of a reconstruction loss and a joint-embedding loss on one backbone.

    ``loss = weights[0] * reconstruction + weights[1] * joint_embedding``. The data provides
    ``max`` of the parts' views (plus the clean view if either part needs it); each part
    gets its first views (and the clean last view if it asked for one).

    What is shared: the backbone (one set of weights, one optimizer), the batch of views,
    the EMA updates (forwarded to both parts) and the outputs (the joint-embedding part's
    embeddings/features feed the monitors and probes, the reconstruction part's images the
    image grid). The backbone passes themselves are not merged: the reconstruction part
    encodes masked or corrupted images and the joint-embedding part augmented or masked
    ones, so their inputs differ (batch-norm statistics would too).

    Logged terms: ``reconstruction_loss`` and ``joint_embedding_loss`` (unweighted) and
    every part's own terms as ``reconstruction/<name>``, ``joint_embedding/<name>``.

    Args:
        reconstruction: a reconstruction head (``MAE``, ``MaskedReconstruction``,
            ``DenoisingAutoencoder``).
        joint_embedding: a joint-embedding head (``SimCLR``, ``BYOL``, ``VICReg``,
            ``BarlowTwins``, ``LatentPrediction``, ``Distillation``).
        weights: ``(reconstruction weight, joint-embedding weight)``, both >= 0.
    """

    family = "hybrid"

    def __init__(
        self,
        reconstruction: SSLHead,
        joint_embedding: SSLHead,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        super().__init__()
        _check_part(reconstruction, "reconstruction")
        _check_part(joint_embedding, "joint_embedding")
        weights = tuple(float(w) for w in weights)
        if len(weights) != 2 or min(weights) < 0 or sum(weights) == 0:
            raise ValueError(
                "weights must be two non-negative numbers (reconstruction, joint_embedding), "
                f"not both zero; got {weights}."
            )
        self.reconstruction = reconstruction
        self.joint_embedding = joint_embedding
        self.weights = weights
        self.num_views = max(reconstruction.num_views, joint_embedding.num_views)
        self.clean_view = reconstruction.clean_view or joint_embedding.clean_view
        self.min_batch_size = max(reconstruction.min_batch_size, joint_embedding.min_batch_size)

    def check_backbone(self, backbone: Backbone) -> None:
        self.reconstruction.check_backbone(backbone)
        self.joint_embedding.check_backbone(backbone)

    def build(self, backbone: Backbone) -> None:
        self.reconstruction.build(backbone)
        self.joint_embedding.build(backbone)

    def configure_image_size(self, image_size: int | None) -> None:
        self.reconstruction.configure_image_size(image_size)
        self.joint_embedding.configure_image_size(image_size)

    def forward(
        self, backbone: Backbone, views: list[Tensor], return_reconstructions: bool = False
    ) -> HeadOutput:
        needed = self.num_views + int(self.clean_view)
        if len(views) < needed:
            raise ValueError(
                f"Hybrid needs {needed} views ({self.num_views} augmented"
                f"{' + the clean view last' if self.clean_view else ''}), got {len(views)}."
            )
        rec = self.reconstruction(
            backbone, _sub_views(self.reconstruction, views), return_reconstructions
        )
        joint = self.joint_embedding(backbone, _sub_views(self.joint_embedding, views))
        loss = self.weights[0] * rec.loss.float() + self.weights[1] * joint.loss.float()
        terms = {
            "reconstruction_loss": rec.loss.detach(),
            "joint_embedding_loss": joint.loss.detach(),
        }
        for part, output in zip(PARTS, (rec, joint), strict=True):
            terms.update({f"{part}/{name}": value for name, value in output.terms.items()})
        return HeadOutput(
            loss=loss,
            terms=terms,
            embeddings=joint.embeddings if joint.embeddings is not None else rec.embeddings,
            features=joint.features if joint.features is not None else rec.features,
            reconstructions=rec.reconstructions,
        )

    def on_optimizer_step(self, backbone: Backbone, progress: float) -> None:
        self.reconstruction.on_optimizer_step(backbone, progress)
        self.joint_embedding.on_optimizer_step(backbone, progress)

    def extra_logs(self) -> dict[str, float]:
        logs = {}
        for part in PARTS:
            head: SSLHead = getattr(self, part)
            logs.update({f"{part}/{name}": value for name, value in head.extra_logs().items()})
        return logs
