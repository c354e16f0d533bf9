"""OnlineProbe: linear probe on detached features + kNN, never touching the backbone."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from _defect_data import SSLDataset, loader, trainer_kwargs

from lit_ssl import SSLModule
from lit_ssl.callbacks import OnlineProbe
from lit_ssl.callbacks.probe import knn_predict
from lit_ssl.heads import VICReg


def _ssl() -> SSLModule:
    L.seed_everything(0)
    return SSLModule("test_resnet", head=VICReg(hidden_dim=32, out_dim=32))


def _fit(tmp_path, callbacks, max_steps=2, labelled_fraction=0.5, val=True, **kwargs):
    module = _ssl()
    trainer = L.Trainer(
        max_steps=max_steps, callbacks=callbacks, **trainer_kwargs(tmp_path, **kwargs)
    )
    train = loader(SSLDataset(64, seed=0, labelled_fraction=labelled_fraction), shuffle=True)
    val_loader = loader(SSLDataset(64, seed=1)) if val else None
    trainer.fit(module, train, val_loader)
    return module, trainer


class GradRecorder(L.Callback):
    """Backbone gradients at every optimizer step."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.clone() for n, p in pl_module.backbone.named_parameters()})


def test_probe_does_not_change_backbone_gradients(tmp_path):
    plain, with_probe = GradRecorder(), GradRecorder()
    without, _ = _fit(tmp_path, [plain], max_steps=3)
    probed, _ = _fit(tmp_path, [OnlineProbe(num_classes=2), with_probe], max_steps=3)
    assert len(plain.grads) == len(with_probe.grads) == 3
    for step_a, step_b in zip(plain.grads, with_probe.grads, strict=True):
        for name, grad in step_a.items():
            assert torch.equal(grad, step_b[name]), name
    for (name, a), (_, b) in zip(
        without.backbone.named_parameters(), probed.backbone.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_probe_logs_linear_and_knn_metrics(tmp_path):
    probe = OnlineProbe(num_classes=2, knn_k=5)
    _, trainer = _fit(tmp_path, [probe], max_steps=4)  # 2 epochs of 2 batches
    metrics = trainer.callback_metrics
    for key in ("train_acc", "train_auroc", "val_acc", "val_auroc", "knn_acc", "knn_auroc"):
        value = float(metrics[f"probe/{key}"])
        assert 0.0 <= value <= 1.0, key
    assert float(metrics["probe/knn_auroc"]) > 0.7  # bright blobs: near neighbours agree


def test_unlabelled_batches_are_masked_without_nan(tmp_path):
    probe = OnlineProbe(num_classes=2)
    _, trainer = _fit(tmp_path, [probe], labelled_fraction=0.0, val=False)
    assert all(torch.isfinite(p).all() for p in probe.probe.parameters())
    assert "probe/train_acc" not in trainer.callback_metrics  # nothing to score


def test_probe_state_survives_checkpoint(tmp_path):
    probe = OnlineProbe(num_classes=2)
    _, trainer = _fit(tmp_path, [probe], val=False)
    path = tmp_path / "ssl.ckpt"
    trainer.save_checkpoint(path)
    restored = OnlineProbe(num_classes=2)
    module = _ssl()
    resumed = L.Trainer(max_steps=2, callbacks=[restored], **trainer_kwargs(tmp_path))
    resumed.fit(module, loader(SSLDataset(64)), ckpt_path=path)  # already at max_steps
    for key, value in probe.probe.state_dict().items():
        assert torch.equal(restored.probe.state_dict()[key], value)
    assert restored.optimizer.state_dict()["state"]  # Adam moments restored too


def test_features_fall_back_to_first_view():
    module = _ssl().eval()
    probe = OnlineProbe(num_classes=2)
    views = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    features = probe._features(module, {"loss": None}, (views, torch.zeros(4)))
    with torch.no_grad():
        torch.testing.assert_close(features, module.backbone(views[0]))
    assert not features.requires_grad


def test_knn_predict_leave_one_out_and_bank():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 16, generator=gen) * 5
    labels = torch.arange(40) % 2
    features = centres[labels] + 0.1 * torch.randn(40, 16, generator=gen)
    probs = knn_predict(features, labels, num_classes=2, k=5)
    assert torch.equal(probs.argmax(dim=1), labels)
    assert torch.allclose(probs.sum(dim=1), torch.ones(40))
    # leave-one-out: a lone sample of a third class gets no vote for its own label
    lone = knn_predict(features[:3], torch.tensor([0, 1, 2]), num_classes=3, k=1)
    assert lone[2, 2] == 0
    banked = knn_predict(features[:4], labels[:4], 2, k=3, bank=(features, labels))
    assert math.isclose(float(banked[0, 0]), 1.0, abs_tol=1e-6)
    with pytest.raises(ValueError, match="2 labelled"):
        knn_predict(features[:1], labels[:1], 2)


class _UnlabelledData(L.LightningDataModule):
    """A data module of an unlabelled folder: no class names, every label -1."""

    class_names: list[str] = []

    def train_dataloader(self):
        return loader(SSLDataset(64, seed=0, labelled_fraction=0.0), shuffle=True)

    def val_dataloader(self):
        return loader(SSLDataset(40, seed=1, labelled_fraction=0.0))


def _said(monkeypatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr("lit_ssl.callbacks.probe.rank_zero_info", messages.append)
    return messages


def test_probe_is_off_and_says_so_once_without_labels(tmp_path, monkeypatch):
    said = _said(monkeypatch)
    probe = OnlineProbe()
    trainer = L.Trainer(max_steps=4, callbacks=[probe], **trainer_kwargs(tmp_path))
    trainer.fit(_ssl(), datamodule=_UnlabelledData())  # 2 epochs with validation
    trainer.validate(trainer.lightning_module, datamodule=_UnlabelledData())
    assert trainer.global_step == 4
    assert not probe.active and probe.probe is None
    assert len(said) == 1 and "0 labelled classes" in said[0], said
    assert not [key for key in trainer.callback_metrics if key.startswith("probe/")]
    assert probe.state_dict() == {}


def test_probe_is_off_without_num_classes_or_datamodule(tmp_path, monkeypatch):
    said = _said(monkeypatch)
    probe = OnlineProbe()
    _, trainer = _fit(tmp_path, [probe], val=False)
    assert trainer.global_step == 2 and not probe.active
    assert len(said) == 1 and "num_classes" in said[0], said


def test_probe_with_num_classes_stays_on_without_class_names(tmp_path, monkeypatch):
    said = _said(monkeypatch)
    probe = OnlineProbe(num_classes=2)
    L.Trainer(max_steps=2, callbacks=[probe], **trainer_kwargs(tmp_path)).fit(
        _ssl(), datamodule=_UnlabelledData()
    )
    assert probe.active and probe.probe is not None and not said
