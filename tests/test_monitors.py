"""Monitors: pictures, collapse warnings, the non-finite loss guard."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from lit_ssl import SSLModule
from lit_ssl.callbacks import (
    CollapseMonitor,
    EmbeddingPlot,
    FiniteLossGuard,
    ReconstructionGrid,
)
from lit_ssl.callbacks.monitors import effective_rank
from lit_ssl.heads import MaskedReconstruction, SimCLR, VICReg
from lit_ssl.heads.base import HeadOutput, SSLHead


class TwoViews(Dataset):
    def __init__(self, size: int = 16, labelled: bool = True) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(size, 3, 32, 32, generator=generator)
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        label = index % 2 if self.labelled else -1
        return [image, image.flip(-1)], label


def _loader() -> DataLoader:
    return DataLoader(TwoViews(), batch_size=8)


def _trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(callbacks=callbacks, **(options | kwargs))


def test_reconstruction_grid_saves_png_for_reconstruction_heads(tmp_path, single_thread):
    module = SSLModule("test_resnet", MaskedReconstruction(mask_patch_size=8), image_size=32)
    _trainer(tmp_path, [ReconstructionGrid(num_images=4)]).fit(module, _loader())
    grids = list((tmp_path / "figures").glob("reconstructions_epoch*.png"))
    assert len(grids) == 1 and grids[0].stat().st_size > 1000


def test_reconstruction_grid_skips_joint_embedding_heads(tmp_path, single_thread):
    module = SSLModule("test_resnet", SimCLR(hidden_dim=32, out_dim=16))
    _trainer(tmp_path, [ReconstructionGrid()]).fit(module, _loader())
    assert not list(tmp_path.rglob("reconstructions_*.png"))


def test_embedding_plot_at_end_of_fit(tmp_path, single_thread):
    module = SSLModule("test_resnet", VICReg(hidden_dim=32, out_dim=32))
    trainer = _trainer(tmp_path, [EmbeddingPlot(max_samples=16)], limit_val_batches=2)
    trainer.fit(module, _loader(), _loader())
    assert (tmp_path / "figures" / "embeddings_pca.png").stat().st_size > 1000


class _UnlabelledFolder(L.LightningDataModule):
    """What FactoryDataModule gives for a plain folder: no class names, labels -1."""

    class_names: list[str] = []

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TwoViews(labelled=False), batch_size=8)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TwoViews(labelled=False), batch_size=8)


def test_embedding_plot_and_probe_on_unlabelled_data(tmp_path, single_thread, monkeypatch):
    from lit_ssl.callbacks import OnlineProbe

    said: list[str] = []
    monkeypatch.setattr("lit_ssl.callbacks.probe.rank_zero_info", said.append)
    module = SSLModule("test_resnet", VICReg(hidden_dim=32, out_dim=32))
    plot, probe = EmbeddingPlot(max_samples=16), OnlineProbe()
    _trainer(tmp_path, [plot, probe]).fit(module, datamodule=_UnlabelledFolder())
    assert (tmp_path / "figures" / "embeddings_pca.png").stat().st_size > 1000
    assert not probe.active and len(said) == 1


class Collapsed(SSLHead):
    """A head whose embeddings are all the same vector: the collapse a monitor must catch."""

    family = "joint_embedding"
    num_views = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, backbone, views, return_reconstructions=False) -> HeadOutput:
        features = backbone(views[0])
        embeddings = torch.ones(features.shape[0], 8) * self.scale
        loss = (features.mean() * 0 + self.scale - 1).pow(2)
        return HeadOutput(loss=loss, embeddings=embeddings.detach())


def test_collapse_monitor_warns_on_collapsed_embeddings(tmp_path, single_thread):
    monitor = CollapseMonitor()
    module = SSLModule("test_resnet", Collapsed())
    with pytest.warns(UserWarning, match="collapse"):
        _trainer(tmp_path, [monitor]).fit(module, _loader())
    assert monitor.last["std_ratio"] < 0.01


def test_collapse_monitor_quiet_on_healthy_embeddings(tmp_path, single_thread, recwarn):
    monitor = CollapseMonitor(min_effective_rank=1.5)
    module = SSLModule("test_resnet", VICReg(hidden_dim=32, out_dim=32))
    _trainer(tmp_path, [monitor]).fit(module, _loader())
    assert monitor.last["std_ratio"] > 0.1
    assert not [w for w in recwarn if "collapse" in str(w.message)]


def test_effective_rank_counts_directions():
    generator = torch.Generator().manual_seed(0)
    assert effective_rank(torch.randn(256, 1, generator=generator).repeat(1, 8)) < 1.1
    assert effective_rank(torch.randn(256, 8, generator=generator)) > 6.0


class ExplodesAtStep(SSLHead):
    """Finite loss for a few steps, then NaN."""

    family = "joint_embedding"
    num_views = 2

    def __init__(self, bad_from: int = 3) -> None:
        super().__init__()
        self.bad_from = bad_from
        self.calls = 0
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, backbone, views, return_reconstructions=False) -> HeadOutput:
        self.calls += 1
        loss = backbone(views[0]).pow(2).mean() * self.weight
        if self.calls >= self.bad_from:
            loss = loss * float("nan")
        return HeadOutput(loss=loss)


def test_finite_loss_guard_stops_and_keeps_last_good_checkpoint(tmp_path, single_thread):
    module = SSLModule("test_resnet", ExplodesAtStep(bad_from=5))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(
        tmp_path,
        [checkpoint, FiniteLossGuard(check_every_n_steps=2)],
        max_epochs=4,
        enable_checkpointing=True,
    )
    with pytest.raises(FloatingPointError, match="NaN/Inf") as error:
        trainer.fit(module, _loader())
    assert "last good checkpoint" in str(error.value)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4  # epochs 0-1 ended finite; nothing later was written
    assert all(
        torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point()
    )
