"""DefectFinetuning: frozen linear probing, unfreezing with lower LR, layer decay, resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from _defect_data import BINARY, ClassifyDataset, loader, trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.nn.modules.batchnorm import _BatchNorm

from lit_ssl.callbacks import DefectFinetuning
from lit_ssl.callbacks.finetune import layer_groups
from lit_ssl.classify.classifier import DefectClassifier

LR = 1e-2


class Recorder(L.Callback):
    """Backbone state and optimizer LRs at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.lrs: list[list[float]] = []
        self.grads: list[bool] = []

    def on_train_epoch_end(self, trainer, pl_module):
        backbone = pl_module.backbone
        self.states.append({k: v.clone() for k, v in backbone.state_dict().items()})
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        self.grads.append(any(p.grad is not None for p in backbone.parameters()))


def _data():
    return loader(ClassifyDataset(64, [0.5, 0.5], seed=1, binary=True))


def _changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def _classifier() -> DefectClassifier:
    L.seed_everything(0)
    return DefectClassifier("test_resnet", class_names=BINARY, lr=LR)


def test_frozen_epochs_leave_backbone_and_bn_statistics_unchanged(tmp_path):
    clf = _classifier()
    initial = {k: v.clone() for k, v in clf.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in clf.head.state_dict().items()}
    recorder = Recorder()
    callbacks = [DefectFinetuning(unfreeze_at_epoch=2, backbone_lr_factor=0.1), recorder]
    trainer = L.Trainer(max_epochs=3, callbacks=callbacks, **trainer_kwargs(tmp_path))
    trainer.fit(clf, _data(), _data())
    assert any("running_mean" in k for k in initial)
    for epoch in (0, 1):  # frozen: weights, BN running stats and counters untouched
        assert _changed(initial, recorder.states[epoch]) == set()
        assert not recorder.grads[epoch]
        assert recorder.lrs[epoch] == [LR, LR]  # the head's groups only
    changed = _changed(initial, recorder.states[2])
    assert any(k.endswith("weight") for k in changed)
    assert any(k.endswith("running_mean") for k in changed)
    assert recorder.lrs[2] == [LR, LR, pytest.approx(LR * 0.1)]
    assert _changed(head, clf.head.state_dict())  # the head trained all along
    assert all(p.requires_grad for p in clf.backbone.parameters())


def test_train_bn_when_frozen_updates_only_batchnorm(tmp_path):
    clf = _classifier()
    initial = {k: v.clone() for k, v in clf.backbone.state_dict().items()}
    callbacks = [DefectFinetuning(unfreeze_at_epoch=5, train_bn_when_frozen=True)]
    trainer = L.Trainer(max_epochs=1, callbacks=callbacks, **trainer_kwargs(tmp_path))
    trainer.fit(clf, _data())
    changed = _changed(initial, clf.backbone.state_dict())
    bn_names = {
        f"{name}.{key}"
        for name, module in clf.backbone.named_modules()
        if isinstance(module, _BatchNorm)
        for key in module.state_dict()
    }
    assert changed and changed <= bn_names
    assert any(k.endswith("running_var") for k in changed)


def test_layer_decay_groups_by_depth():
    clf = _classifier()
    callback = DefectFinetuning(unfreeze_at_epoch=1, backbone_lr_factor=0.5, layer_decay=0.5)
    callback.freeze_before_training(clf)  # Lightning: callback setup, then optimizers
    optimizer = clf.configure_optimizers()
    assert not clf.backbone.training
    callback.finetune_function(clf, 0, optimizer)
    assert len(optimizer.param_groups) == 2  # still frozen in epoch 0
    callback.finetune_function(clf, 1, optimizer)
    groups = optimizer.param_groups[2:]
    depth = len(layer_groups(clf.backbone.model))
    assert len(groups) == depth == 5  # stem + 4 stages of test_resnet
    expected = [LR * 0.5 * 0.5 ** (depth - 1 - i) for i in range(depth)]
    assert [g["lr"] for g in groups] == pytest.approx(expected)
    added = [id(p) for g in groups for p in g["params"]]
    assert sorted(added) == sorted(id(p) for p in clf.backbone.parameters())
    assert clf.backbone.training
    callback.finetune_function(clf, 2, optimizer)  # idempotent afterwards
    assert len(optimizer.param_groups) == 2 + depth


def _fit(tmp_path, max_epochs: int, ckpt_path=None, checkpoint: ModelCheckpoint | None = None):
    clf = _classifier()
    callbacks = [DefectFinetuning(unfreeze_at_epoch=1, backbone_lr_factor=0.1)]
    callbacks += [checkpoint] if checkpoint else []
    kwargs = trainer_kwargs(tmp_path, enable_checkpointing=checkpoint is not None)
    trainer = L.Trainer(max_epochs=max_epochs, callbacks=callbacks, **kwargs)
    trainer.fit(clf, _data(), ckpt_path=ckpt_path)
    return clf, trainer


@pytest.mark.parametrize("resume_epoch", [0, 1])
def test_resume_restores_finetuning_state(tmp_path, resume_epoch):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    reference, _ = _fit(tmp_path, 3, checkpoint=checkpoint)
    ckpt = tmp_path / "ckpt" / f"epoch={resume_epoch}-step={2 * (resume_epoch + 1)}.ckpt"
    state = torch.load(ckpt, weights_only=True)["callbacks"]
    meta = next(v for k, v in state.items() if "DefectFinetuning" in k)
    assert len(meta["internal_optimizer_metadata"][0]) == 2 + resume_epoch  # backbone group
    resumed, trainer = _fit(tmp_path, 3, ckpt_path=ckpt)
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert lrs == [LR, LR, pytest.approx(LR * 0.1)]
    assert all(p.requires_grad for p in resumed.backbone.parameters())
    for key, value in reference.state_dict().items():  # same result as uninterrupted
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="unfreeze_at_epoch"):
        DefectFinetuning(unfreeze_at_epoch=-1)
    with pytest.raises(ValueError, match="layer_decay"):
        DefectFinetuning(layer_decay=1.5)
    with pytest.raises(ValueError, match="backbone_lr_factor"):
        DefectFinetuning(backbone_lr_factor=0.0)
