"""SSLModule with the joint-embedding heads: overfitting, Trainer runs, EMA, checkpoints,
resuming, optimizers, batch contract, memory format and mixed precision.

Everything is tiny (timm ``test_*`` models, 32 px, 64-wide projectors) to run on 2 CPU cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from lit_ssl import SSLModule
from lit_ssl.ema import EMATeacher, cosine_momentum
from lit_ssl.heads import BYOL, BarlowTwins, SimCLR, SSLHead, VICReg
from lit_ssl.optim import LARS, warmup_cosine

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32
HEADS = {
    "simclr": lambda: SimCLR(hidden_dim=64, out_dim=32, temperature=0.2),
    "byol": lambda: BYOL(hidden_dim=64, out_dim=32, base_momentum=0.9),
    "vicreg": lambda: VICReg(hidden_dim=64, out_dim=64),
    "barlow_twins": lambda: BarlowTwins(hidden_dim=64, out_dim=64),
}


class TwoViews(Dataset):
    """Deterministic ``([view1, view2], -1)`` samples: a smooth image plus two perturbations."""

    def __init__(self, n: int = 8, in_chans: int = 3, num_views: int = 2) -> None:
        self.n, self.in_chans, self.num_views = n, in_chans, num_views

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        gen = torch.Generator().manual_seed(index)
        base = torch.nn.functional.interpolate(
            torch.rand(1, self.in_chans, 8, 8, generator=gen), size=SIZE, mode="bilinear"
        )[0]
        views = []
        for _ in range(self.num_views):
            gain = 0.7 + 0.6 * torch.rand(1, generator=gen)
            noise = 0.05 * torch.randn(base.shape, generator=gen)
            views.append((base * gain + noise).clamp(0, 1))
        return views, -1


def fixed_batch(in_chans: int, n: int = 8) -> list[torch.Tensor]:
    views, _ = next(iter(DataLoader(TwoViews(n, in_chans), batch_size=n)))
    return views


def make_module(head: str = "vicreg", backbone: str = "test_resnet", in_chans: int = 3, **kw):
    image_size = SIZE if backbone == "test_vit" else None
    return SSLModule(backbone, HEADS[head](), in_chans=in_chans, image_size=image_size, **kw)


def first_conv(backbone) -> torch.nn.Parameter:
    return next(m.weight for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))


def make_trainer(tmp_path: Path, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    defaults.update(kw)
    return L.Trainer(**defaults)


def loader(n: int = 8, in_chans: int = 3, batch_size: int = 4) -> DataLoader:
    return DataLoader(TwoViews(n, in_chans), batch_size=batch_size, shuffle=False)


# ----------------------------------------------------------------- heads


@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_declares_family_and_views(head):
    h = HEADS[head]()
    assert isinstance(h, SSLHead)
    assert h.family == "joint_embedding"
    assert h.num_views == 2 and h.clean_view is False


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_overfits_fixed_batch(head, backbone, in_chans):
    module = make_module(head, backbone, in_chans)
    module.train()
    views = fixed_batch(in_chans)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=2e-3)
    steps, history = 15, []
    for step in range(steps):
        output = module.head(module.backbone, views)
        assert output.loss.ndim == 0 and output.loss.dtype == torch.float32
        assert torch.isfinite(output.loss), f"step {step}: {output.loss}"
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        module.head.on_optimizer_step(module.backbone, (step + 1) / steps)
        history.append(output.loss.item())
    assert output.embeddings is not None and output.features is not None
    assert output.features.shape == (8, module.backbone.embed_dim)
    first, last = history[0], sum(history[-3:]) / 3
    assert last < 0.8 * first, history


# ----------------------------------------------------------------- Trainer


@pytest.mark.parametrize(
    ("head", "backbone", "in_chans"),
    [
        ("simclr", "test_vit", 1),
        ("byol", "test_resnet", 3),
        ("vicreg", "test_resnet", 1),
        ("barlow_twins", "test_vit", 3),
    ],
)
def test_trainer_fit_logs(tmp_path, head, backbone, in_chans):
    module = make_module(head, backbone, in_chans)
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit(module, loader(8, in_chans))
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert "train/lr" in metrics
    assert metrics["train/embedding_std"] > 0
    if head == "byol":
        assert metrics["train/ema_momentum"] == pytest.approx(cosine_momentum(1.0, 0.9))
    if head == "vicreg":
        assert {"train/invariance", "train/variance", "train/covariance"} <= set(metrics)
    after = module.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


class _TeacherSnapshots(Callback):
    def __init__(self) -> None:
        self.snapshots: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        teacher = pl_module.head.teacher.module
        self.snapshots.append(torch.cat([p.flatten() for p in teacher.parameters()]).clone())


def test_byol_ema_once_per_optimizer_step_under_accumulation(tmp_path, monkeypatch):
    calls: list[float] = []
    original = EMATeacher.update

    def counting_update(self, student, momentum):
        calls.append(momentum)
        return original(self, student, momentum)

    monkeypatch.setattr(EMATeacher, "update", counting_update)
    module = make_module("byol")
    snapshots = _TeacherSnapshots()
    trainer = make_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2, callbacks=[snapshots])
    trainer.fit(module, loader(16, batch_size=2))  # 8 batches -> 4 optimizer steps
    assert trainer.global_step == 4
    assert len(calls) == 4
    expected = [cosine_momentum(k / 4, base=0.9) for k in range(1, 5)]
    assert calls == pytest.approx(expected)
    assert expected[0] > 0.9 and expected[-1] == pytest.approx(1.0)
    assert module.head.momentum == pytest.approx(1.0)
    # The teacher moves only between an optimizer step's batch and the next batch.
    changed = [
        not torch.equal(a, b)
        for a, b in zip(snapshots.snapshots[:-1], snapshots.snapshots[1:], strict=True)
    ]
    assert changed == [False, True] * 3 + [False]


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.0, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(0.5, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(1.0, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(2.0, 0.9) == pytest.approx(1.0)  # clipped
    k, total, base = 3, 10, 0.99
    expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2  # BYOL Eq. in 3.2
    assert cosine_momentum(k / total, base) == pytest.approx(expected)


def test_ema_teacher_update_formula():
    student = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    old = [p.clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(0.5)
    teacher.update(student, momentum=0.75)
    for t, o, s in zip(teacher.module.parameters(), old, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.75 * o + 0.25 * s)
    torch.testing.assert_close(teacher.module[1].running_mean, torch.full((2,), 0.5))
    x = torch.randn(4, 3)
    assert not teacher(x).requires_grad


def test_checkpoint_round_trip_with_ema_teacher(tmp_path):
    module = make_module("byol", "test_resnet", 1)
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit(module, loader(8, 1))
    path = tmp_path / "byol.ckpt"
    trainer.save_checkpoint(path)

    loaded = SSLModule.load_from_checkpoint(path)  # no head/backbone arguments needed
    assert isinstance(loaded.head, BYOL)
    assert loaded.head.hidden_dim == 64 and loaded.head.base_momentum == 0.9
    assert loaded.hparams.backbone == "test_resnet" and loaded.hparams.in_chans == 1
    state, loaded_state = module.state_dict(), loaded.state_dict()
    assert set(state) == set(loaded_state)
    assert any(k.startswith("head.teacher.") for k in state)
    for key in state:
        torch.testing.assert_close(loaded_state[key], state[key], rtol=0, atol=0, msg=key)
    # The teacher really differs from the student after training (it is not re-copied).
    teacher_w = first_conv(loaded.head.teacher.module[0])
    assert not torch.equal(teacher_w, first_conv(loaded.backbone))

    module.eval()
    loaded.eval()
    views = fixed_batch(1, n=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(views[0]), module(views[0]), rtol=0, atol=0)
        torch.testing.assert_close(
            loaded.head.teacher(views[0]), module.head.teacher(views[0]), rtol=0, atol=0
        )
        torch.testing.assert_close(
            loaded.head(loaded.backbone, views).loss,
            module.head(module.backbone, views).loss,
            rtol=0,
            atol=0,
        )


class _LearningRates(Callback):
    """Learning rate at the start of each optimizer step, and the loss of each step."""

    def __init__(self) -> None:
        self.lr: dict[int, float] = {}
        self.loss: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lr[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss[trainer.global_step] = outputs["loss"].item()


def test_resume_continues_step_and_schedules(tmp_path, monkeypatch):
    momenta: list[float] = []  # EMA momentum of every teacher update, in order
    original = EMATeacher.update

    def recording_update(self, student, momentum):
        momenta.append(momentum)
        return original(self, student, momentum)

    monkeypatch.setattr(EMATeacher, "update", recording_update)
    kw = dict(lr=1e-2, warmup_fraction=0.34, final_lr_ratio=0.1)
    data = loader(6, batch_size=2)  # 3 batches per epoch
    full, ckpt = _LearningRates(), ModelCheckpoint(tmp_path / "ckpt", "{step}", save_top_k=-1)
    torch.manual_seed(0)
    module = make_module("byol", **kw)
    trainer = make_trainer(tmp_path, max_steps=6, enable_checkpointing=True, callbacks=[full, ckpt])
    trainer.fit(module, data)
    assert trainer.global_step == 6
    # Linear warmup then cosine, from estimated_stepping_batches (6 steps, 2 of warmup).
    for step, lr in full.lr.items():
        assert lr == pytest.approx(1e-2 * warmup_cosine(step, 6, 2, 0.1)), step
    assert full.lr[0] < full.lr[1] and full.lr[2] > full.lr[5]

    full_momenta = list(momenta)
    momenta.clear()
    resumed_sched = _LearningRates()
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = make_module("byol", **kw)
    trainer2 = make_trainer(tmp_path, max_steps=6, callbacks=[resumed_sched])
    trainer2.fit(resumed, data, ckpt_path=tmp_path / "ckpt" / "step=3.ckpt")
    assert trainer2.global_step == 6
    assert sorted(resumed_sched.lr) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed_sched.lr[step] == pytest.approx(full.lr[step]), step
    assert full_momenta == pytest.approx([cosine_momentum(k / 6, 0.9) for k in range(1, 7)])
    assert momenta == pytest.approx(full_momenta[3:])
    # Weights, teacher and optimizer state come back exactly: the first resumed step sees the
    # same batch as step 4 of the uninterrupted run (the loaders restart at the epoch start)
    # and gives the same BYOL loss.
    assert resumed_sched.loss[4] == pytest.approx(full.loss[4], rel=1e-6)


# ----------------------------------------------------------------- optimizers


def _configured(module: SSLModule, tmp_path: Path, max_steps: int = 10):
    module.trainer = make_trainer(tmp_path, max_steps=max_steps)
    return module.configure_optimizers()


def test_adamw_groups_no_decay_on_norms_biases_tokens(tmp_path):
    module = make_module("byol", "test_vit", weight_decay=0.05)
    config = _configured(module, tmp_path)
    optimizer = config["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    names = {id(p): n for n, p in module.named_parameters()}
    decayed = {
        names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]
    }
    plain = {
        names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.05}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert decayed | plain == trainable and not decayed & plain
    assert not any(".teacher." in n for n in trainable)  # frozen EMA copy is not optimised
    params = dict(module.named_parameters())
    for name in plain:
        assert params[name].ndim <= 1 or name.endswith(("pos_embed", "cls_token")), name
    for name in decayed:
        assert params[name].ndim >= 2 and not name.endswith(("bias", "pos_embed", "cls_token"))
    assert any("norm" in n for n in plain) and any(n.endswith("bias") for n in plain)
    assert "backbone.model.pos_embed" in plain and "backbone.model.cls_token" in plain
    assert "backbone.model.patch_embed.proj.weight" in decayed
    assert config["lr_scheduler"]["interval"] == "step"


def test_schedules_need_finite_steps(tmp_path):
    module = make_module("simclr")
    module.trainer = make_trainer(tmp_path, max_epochs=-1)  # infinite training
    with pytest.raises(ValueError, match="finite number of optimizer steps"):
        module.configure_optimizers()


def test_lars_step_math():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [
            {"params": [w]},
            {"params": [b], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=0.5,
        momentum=0.9,
        weight_decay=0.1,
        eta=0.02,
    )
    w.grad = torch.tensor([0.0, 1.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    g = torch.tensor([0.3, 1.4])  # grad + wd * w
    trust = 0.02 * 5.0 / g.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * g)
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))  # plain SGD on excluded
    b.grad = torch.tensor([2.0])
    opt.step()  # momentum buffer: 0.9 * 2 + 2
    torch.testing.assert_close(b.detach(), torch.tensor([0.0 - 0.5 * 3.8]))


def test_lars_option_trains(tmp_path):
    module = make_module("simclr", optimizer="lars", lr=0.5)
    before = first_conv(module.backbone).clone()
    trainer = make_trainer(tmp_path, max_steps=3)
    trainer.fit(module, loader(8))
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, LARS)
    assert sorted(g["lars_exclude"] for g in optimizer.param_groups) == [False, True]
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert not torch.equal(before, first_conv(module.backbone))


# ----------------------------------------------------------------- contract and options


def test_bad_batches_give_clear_errors():
    module = make_module("simclr")
    views = fixed_batch(3, n=4)
    labels = torch.full((4,), -1)
    with pytest.raises(ValueError, match="needs 2 view"):  # an image batch is one view
        module.training_step((views[0], labels), 0)
    with pytest.raises(ValueError, match="needs 2 view"):
        module.training_step(([views[0]], labels), 0)
    with pytest.raises(TypeError, match=r"\(views, labels\)"):
        module.training_step("views", 0)
    with pytest.raises(TypeError, match=r"\(views, labels\)"):
        module.training_step(([views[0], "x"], labels), 0)


def test_constructor_errors():
    with pytest.raises(TypeError, match="SSLHead"):
        SSLModule("test_resnet", head=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="optimizer"):
        SSLModule("test_resnet", head=HEADS["simclr"](), optimizer="sgd")
    with pytest.raises(ValueError, match="warmup_fraction"):
        SSLModule("test_resnet", head=HEADS["simclr"](), warmup_fraction=1.0)


def test_channels_last_cnn():
    torch.manual_seed(0)
    plain = make_module("vicreg")
    torch.manual_seed(0)
    cl = make_module("vicreg", channels_last=True)
    assert first_conv(cl.backbone).is_contiguous(memory_format=torch.channels_last)
    views = fixed_batch(3, n=4)
    prepared = cl._prepare(views)
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in prepared)
    out_cl = cl.head(cl.backbone, prepared)
    out = plain.head(plain.backbone, views)
    torch.testing.assert_close(out_cl.loss, out.loss, rtol=1e-4, atol=1e-4)
    out_cl.loss.backward()
    assert first_conv(cl.backbone).grad is not None
    # ViTs ignore the option.
    vit = make_module("vicreg", "test_vit", channels_last=True)
    assert vit.head(vit.backbone, vit._prepare(views)).loss.isfinite()


@pytest.mark.parametrize("head", sorted(HEADS))
def test_bf16_autocast_step_gives_float32_loss(head):
    module = make_module(head)
    views = fixed_batch(3, n=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = module.head(module.backbone, views)
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    output.loss.backward()
    grad = first_conv(module.backbone).grad
    assert grad is not None and torch.isfinite(grad).all()


class _LossDtype(Callback):
    dtypes: list[torch.dtype]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.dtypes = [*getattr(self, "dtypes", []), outputs["loss"].dtype]


def test_bf16_mixed_trainer(tmp_path):
    module = make_module("vicreg", "test_vit", 1)
    dtypes = _LossDtype()
    trainer = make_trainer(tmp_path, max_steps=2, precision="bf16-mixed", callbacks=[dtypes])
    trainer.fit(module, loader(8, 1))
    assert dtypes.dtypes == [torch.float32, torch.float32]
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_export_backbone_loads_in_timm(tmp_path):
    module = make_module("simclr", in_chans=1).eval()
    path = module.export_backbone(tmp_path / "export" / "backbone.safetensors")
    model = timm.create_model(
        "test_resnet",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=0,
        in_chans=1,
    ).eval()
    x = fixed_batch(1, n=2)[0]
    b = module.backbone
    with torch.no_grad():
        torch.testing.assert_close(model((x - b.mean) / b.std), module(x), rtol=1e-5, atol=1e-6)
