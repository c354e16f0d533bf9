"""LatentPrediction, Hybrid, and one DataModule feeding every head through SSLModule."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import pytest
import torch
from _head_data import BATCH, SIZE, gratings, make_views
from torch.utils.data import DataLoader, Dataset

from lit_ssl.backbone import Backbone
from lit_ssl.heads import (
    BYOL,
    MAE,
    DenoisingAutoencoder,
    Hybrid,
    LatentPrediction,
    MaskedReconstruction,
    SimCLR,
    SSLHead,
    VICReg,
)
from lit_ssl.heads.base import describe_head, head_from_description
from lit_ssl.module import SSLModule

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread


def build(name: str, head: SSLHead, chans: int) -> Backbone:
    torch.manual_seed(0)
    backbone = Backbone(name, in_chans=chans, image_size=SIZE)
    head.check_backbone(backbone)
    head.build(backbone)
    return backbone


def train_steps(name: str, head: SSLHead, chans: int, steps: int = 20) -> list[float]:
    backbone = build(name, head, chans)
    params = [p for m in (backbone, head) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    views = make_views(head, gratings(BATCH, chans))
    losses = []
    for step in range(steps):
        output = head(backbone, views)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        head.on_optimizer_step(backbone, step / steps)
        losses.append(output.loss.item())
    return losses


def mask_patch(name: str) -> int:
    return 16 if "vit" in name else 8  # CNN: 4x4 mask grid on 32 px (1x1 feature cell)


HEADS: dict[str, Callable[[str], SSLHead]] = {
    "latent": lambda name: LatentPrediction(mask_patch_size=mask_patch(name), predictor_dim=32),
    "simmim+vicreg": lambda name: Hybrid(
        MaskedReconstruction(mask_patch_size=mask_patch(name)),
        VICReg(hidden_dim=64, out_dim=64),
    ),
    "dae+latent": lambda name: Hybrid(
        DenoisingAutoencoder(decoder_channels=32),
        LatentPrediction(mask_patch_size=mask_patch(name), predictor_dim=32),
        weights=(1.0, 0.5),
    ),
}


@pytest.mark.parametrize("chans", [1, 3])
@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
@pytest.mark.parametrize("head", list(HEADS))
def test_trains_and_overfits_fixed_batch(head: str, name: str, chans: int) -> None:
    losses = train_steps(name, HEADS[head](name), chans)
    assert all(math.isfinite(v) for v in losses), losses
    start, end = sum(losses[:2]) / 2, sum(losses[-3:]) / 3
    assert end < 0.85 * start, f"loss {start:.4f} -> {end:.4f}: {losses}"


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_bf16_autocast_step(name: str) -> None:
    head = HEADS["dae+latent"](name)
    backbone = build(name, head, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = head(backbone, make_views(head, gratings(4, 1)))
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    output.loss.backward()


def test_latent_prediction_only_masked_cells_count() -> None:
    head = LatentPrediction(predictor_dim=16)
    backbone = build("test_vit", head, 1)
    assert head.patch == 16 and head.family == "joint_embedding" and head.num_views == 1
    x = torch.rand(2, 1, 64, 64)
    output = head(backbone, [x])
    assert output.reconstructions is None and output.embeddings.shape == (2, 64)
    assert all(not p.requires_grad for p in head.teacher.parameters())


# ------------------------------------------------------------------ EMA through Lightning
class Views(Dataset):
    """Tiny dataset emulating the datamodule: ``num_views`` views (+ clean view last)."""

    def __init__(self, chans: int, num_views: int = 2, clean_view: bool = False) -> None:
        self.images = gratings(8, chans)
        self.num_views, self.clean_view = num_views, clean_view

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        x = self.images[index]
        g = torch.Generator().manual_seed(index)
        views = [
            (
                x * (0.7 + 0.6 * torch.rand(1, generator=g))
                + 0.05 * torch.randn(x.shape, generator=g)
            ).clamp(0, 1)
            for _ in range(self.num_views)
        ]
        return views + ([x] if self.clean_view else []), -1


class ViewsDataModule(L.LightningDataModule):
    """Reads the model's ``view_spec`` in its own ``setup``, like FactoryDataModule."""

    def __init__(self, chans: int = 1) -> None:
        super().__init__()
        self.chans, self.num_views, self.clean_view = chans, 2, False

    def setup(self, stage: str) -> None:
        spec = self.trainer.lightning_module.view_spec
        self.num_views, self.clean_view = spec.num_views, spec.clean

    def train_dataloader(self) -> DataLoader:
        dataset = Views(self.chans, self.num_views, self.clean_view)
        return DataLoader(dataset, batch_size=4, shuffle=False)


def fit(module: SSLModule, max_steps: int = 2, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(module, datamodule=ViewsDataModule(module.backbone.in_chans))
    return trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ema_teacher_updates_once_per_optimizer_step(accumulate: int) -> None:
    torch.manual_seed(0)
    head = LatentPrediction(mask_patch_size=8, predictor_dim=16, base_momentum=0.9)
    module = SSLModule("test_resnet", head=head, in_chans=1)
    keys = [k for k in module.state_dict() if k.startswith("head.teacher.module.")]
    assert keys and "head.teacher.module.model.conv1.0.weight" in keys
    before = {k: v.clone() for k, v in module.state_dict().items() if k in keys}
    updates = []
    update = head.teacher.update
    head.teacher.update = lambda student, momentum: (
        updates.append(momentum),
        update(student, momentum),
    )
    fit(module, max_steps=3, accumulate_grad_batches=accumulate)
    assert len(updates) == 3 and all(0.9 <= m <= 1.0 for m in updates)
    after = module.state_dict()
    key = "head.teacher.module.model.conv1.0.weight"
    assert not torch.equal(after[key], before[key])  # moved towards the student
    assert not torch.equal(after[key], module.backbone.model.conv1[0].weight)  # but not onto it


# ------------------------------------------------------------------ Hybrid
def test_hybrid_views_terms_and_reconstructions() -> None:
    head = Hybrid(DenoisingAutoencoder(decoder_channels=16), VICReg(hidden_dim=32, out_dim=32))
    assert head.family == "hybrid" and head.num_views == 2 and head.clean_view
    backbone = build("test_resnet", head, 3)
    x = gratings(4, 3)
    views = make_views(head, x)
    assert len(views) == 3
    output = head(backbone, views, return_reconstructions=True)
    assert {"reconstruction_loss", "joint_embedding_loss"} <= set(output.terms)
    assert {"joint_embedding/invariance", "joint_embedding/variance"} <= set(output.terms)
    expected = output.terms["reconstruction_loss"] + output.terms["joint_embedding_loss"]
    assert torch.allclose(output.loss, expected)
    assert torch.equal(output.reconstructions.input, x)
    assert output.embeddings.shape == (4, 32)


def test_hybrid_extra_logs_and_ema_forwarding() -> None:
    head = Hybrid(MAE(decoder_dim=32, decoder_depth=1, decoder_heads=2), BYOL(64, 32))
    assert head.num_views == 2 and not head.clean_view
    backbone = build("test_vit", head, 1)
    head.on_optimizer_step(backbone, 0.5)
    assert head.extra_logs() == {"joint_embedding/ema_momentum": pytest.approx(0.998)}


def test_hybrid_validates_families() -> None:
    with pytest.raises(ValueError, match="needs a 'reconstruction' head.*VICReg.*argument order"):
        Hybrid(VICReg(), MAE())
    with pytest.raises(ValueError, match="needs a 'joint_embedding' head"):
        Hybrid(MAE(), DenoisingAutoencoder())
    with pytest.raises(TypeError, match="lit_ssl.heads head"):
        Hybrid(MAE(), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="weights"):
        Hybrid(MAE(), VICReg(), weights=(-1.0, 1.0))


def test_heads_roundtrip_through_their_description() -> None:
    head = Hybrid(MaskedReconstruction(mask_ratio=0.5), LatentPrediction(loss="mse"), (2.0, 1.0))
    rebuilt = head_from_description(describe_head(head))
    assert isinstance(rebuilt, Hybrid) and rebuilt.weights == (2.0, 1.0)
    assert rebuilt.reconstruction.mask_ratio == 0.5 and rebuilt.joint_embedding.loss == "mse"


# ------------------------------------------------------------------ one DataModule, every head
ALL_HEADS: list[tuple[str, Callable[[], SSLHead]]] = [
    ("test_vit", lambda: MAE(decoder_dim=32, decoder_depth=1, decoder_heads=2)),
    ("test_resnet", lambda: MaskedReconstruction(mask_patch_size=8)),
    ("test_vit", lambda: MaskedReconstruction()),
    ("test_resnet", lambda: DenoisingAutoencoder(decoder_channels=16)),
    ("test_resnet", lambda: LatentPrediction(mask_patch_size=8, predictor_dim=16)),
    ("test_vit", lambda: LatentPrediction(predictor_dim=16)),
    ("test_resnet", lambda: SimCLR(hidden_dim=32, out_dim=16)),
    ("test_resnet", lambda: BYOL(hidden_dim=32, out_dim=16)),
    ("test_resnet", lambda: Hybrid(DenoisingAutoencoder(decoder_channels=16), VICReg(32, 32))),
    (
        "test_vit",
        lambda: Hybrid(
            MAE(decoder_dim=32, decoder_depth=1, decoder_heads=2),
            LatentPrediction(predictor_dim=16),
        ),
    ),
]


@pytest.mark.parametrize(("name", "make_head"), ALL_HEADS)
def test_same_datamodule_feeds_every_head(name: str, make_head: Callable[[], SSLHead]) -> None:
    torch.manual_seed(0)
    head = make_head()
    module = SSLModule(name, head=head, in_chans=1, image_size=SIZE)
    trainer = fit(module)
    assert trainer.global_step == 2
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    rec = module.reconstructions(make_views(head, gratings(2, 1)))
    assert (rec is not None) == (head.family != "joint_embedding")
