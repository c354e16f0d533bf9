"""Distillation: a frozen teacher's latents predicted by the backbone (issue 26).

Teachers are randomly initialised (no downloadable weights on test machines); what is tested is
the plumbing: the teacher never learns and stays in eval mode, channels and sizes are converted,
DDP keeps ranks in step, a teacher file is read safely, and checkpoints leave the teacher out
and reload.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _defect_data import trainer_kwargs
from _gloo import join_gloo
from _head_data import BATCH, SIZE, gratings
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_ssl import SSLModule
from lit_ssl.checkpoints import UntrustedCheckpointError
from lit_ssl.cli.tools import export_checkpoint
from lit_ssl.heads import Distillation, Hybrid, MaskedReconstruction

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread

STUDENT = "test_resnet"
TEACHER = "resnet10t"


def write_teacher(path: Path, name: str = TEACHER, seed: int = 1, **kwargs) -> Path:
    """A teacher weights file as a user has one: a timm model's state dict in safetensors."""
    torch.manual_seed(seed)
    model = timm.create_model(name, num_classes=0, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def module(head: Distillation | Hybrid, in_chans: int = 3) -> SSLModule:
    torch.manual_seed(0)
    return SSLModule(STUDENT, head=head, in_chans=in_chans)


def teacher_of(model: SSLModule) -> nn.Module:
    head = model.head
    return (head.joint_embedding if isinstance(head, Hybrid) else head).teacher


def test_teacher_gets_no_gradient_and_stays_in_eval_mode():
    model = module(Distillation(TEACHER))
    teacher = teacher_of(model)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model.train()
    assert model.head.training and model.head.dense_predictor.training
    assert not any(m.training for m in teacher.modules()), "module.train() reached the teacher"
    assert not any(p.requires_grad for p in teacher.parameters())
    output = model.head(model.backbone, [gratings(BATCH, 3)])
    output.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in model.head.global_predictor.parameters())
    assert all(p.grad is not None for p in model.head.dense_predictor.parameters())
    assert model.backbone.model.conv1[0].weight.grad.abs().sum() > 0, "the student learns"
    after = teacher.state_dict()  # BN running statistics too: eval mode does not update them
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(output.terms) == {"global", "dense"}
    assert output.features.shape == (BATCH, model.backbone.embed_dim)


@pytest.mark.parametrize(("loss", "views"), [("cosine", 1), ("smooth_l1", 2)])
def test_loss_decreases_on_a_fixed_batch(loss, views):
    model = module(Distillation(TEACHER, views=views, loss=loss, hidden_dim=64))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    x = gratings(BATCH, 3)
    batch = [x, (x * 0.8 + 0.1).flip(-1)][:views]
    model.train()
    losses = []
    for _ in range(20):
        output = model.head(model.backbone, batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_mono_student_from_an_rgb_teacher_sees_the_grey_image_repeated():
    model = module(Distillation(TEACHER), in_chans=1)
    x = gratings(BATCH, 1)
    torch.testing.assert_close(model.head.teacher_input(x), x.repeat(1, 3, 1, 1))
    seen = []
    teacher_of(model).model.conv1.register_forward_pre_hook(lambda _, a: seen.append(a[0].shape))
    output = model.head(model.backbone, [x])
    assert seen == [torch.Size([BATCH, 3, SIZE, SIZE])]
    output.loss.backward()
    assert torch.isfinite(output.loss)


def test_rgb_student_with_a_mono_teacher_sees_the_channel_mean():
    model = module(Distillation(TEACHER, teacher_in_chans=1))
    x = gratings(BATCH, 3)
    torch.testing.assert_close(model.head.teacher_input(x), x.mean(1, keepdim=True))
    assert torch.isfinite(model.head(model.backbone, [x]).loss)


def test_channels_that_cannot_be_converted_are_refused():
    with pytest.raises(ValueError, match="4-channel student"):
        module(Distillation(TEACHER), in_chans=4)


def test_a_fixed_size_vit_teacher_sees_its_own_size():
    # vit_tiny_patch16_224 is not dynamic-size: a 64 px view would fail its patch embedding
    head = Distillation("vit_tiny_patch16_224", teacher_image_size=48)
    assert head.teacher_size == (48, 48)
    assert Distillation("vit_tiny_patch16_224").teacher_size == (224, 224), "timm's own size"
    assert Distillation(TEACHER).teacher_size is None, "a CNN teacher takes the views' size"
    model = module(head)
    seen = []
    stem = teacher_of(model).model.patch_embed
    stem.register_forward_pre_hook(lambda _, a: seen.append(a[0].shape))
    x = gratings(4, 3, size=64)
    output = model.head(model.backbone, [x, x.flip(-1)])
    assert seen == [torch.Size([4, 3, 48, 48])], "one teacher pass, at the teacher's size"
    _, dense = model.backbone.forward_dense(x)
    assert dense.shape[-2:] == (2, 2)  # the teacher's 3x3 patch grid resampled to the student's
    output.loss.backward()
    assert torch.isfinite(output.loss)


def test_teacher_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="Unknown teacher architecture 'no_such_net'"):
        Distillation("no_such_net")
    with pytest.raises(FileNotFoundError, match="teacher_weights=FILE"):
        Distillation(TEACHER, teacher_weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="views must be 1"):
        Distillation(TEACHER, views=3)
    with pytest.raises(ValueError, match="not both 0"):
        Distillation(TEACHER, global_weight=0, dense_weight=0)
    wrong = write_teacher(tmp_path / "wrong.safetensors", name="test_resnet")
    with pytest.raises(ValueError, match="do not fit"):
        Distillation(TEACHER, teacher_weights=str(wrong))


class Payload:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_teacher_file_carrying_a_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    state = timm.create_model(TEACHER, num_classes=0).state_dict()
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": state, "payload": Payload(f"touch {marker}")}, path)
    with pytest.raises(UntrustedCheckpointError, match="weights_only=True"):
        Distillation(TEACHER, teacher_weights=str(path))
    assert not marker.exists(), "the teacher file ran code"


def test_teacher_weights_are_loaded_from_the_file(tmp_path, caplog):
    path = write_teacher(tmp_path / "teacher.safetensors")
    loaded = Distillation(TEACHER, teacher_weights=str(path)).teacher.model.state_dict()
    assert "randomly initialised" not in caplog.text
    random = Distillation(TEACHER).teacher.model.state_dict()
    assert "randomly initialised and teaches nothing useful" in caplog.text, "said loudly"
    torch.manual_seed(1)  # write_teacher's seed
    expected = timm.create_model(TEACHER, num_classes=0).state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert not torch.equal(loaded["conv1.0.weight"], random["conv1.0.weight"])


def test_works_inside_hybrid():
    head = Hybrid(MaskedReconstruction(mask_patch_size=8), Distillation(TEACHER))
    assert head.num_views == 1 and head.joint_embedding.family == "joint_embedding"
    model = module(head)
    model.train()
    teacher = teacher_of(model)
    assert not any(m.training for m in teacher.modules())
    output = model.head(model.backbone, [gratings(BATCH, 3)])
    assert {"joint_embedding/global", "joint_embedding/dense", "reconstruction_loss"} <= set(
        output.terms
    )
    output.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not [k for k in model.state_dict() if ".teacher." in k]


class _Views(Dataset):
    def __init__(self) -> None:
        self.images = gratings(16, 3)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return [self.images[i]], -1


def test_checkpoint_leaves_the_teacher_out_and_reloads(tmp_path):
    teacher_file = write_teacher(tmp_path / "teacher.safetensors")
    model = module(Distillation(TEACHER, teacher_weights=str(teacher_file), hidden_dim=32))
    trainer = L.Trainer(**trainer_kwargs(tmp_path, max_steps=2, deterministic=False))
    trainer.fit(model, DataLoader(_Views(), batch_size=8))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert not [k for k in state if ".teacher." in k], "the teacher is rebuilt, not saved"
    assert any(k.startswith("head.dense_predictor.") for k in state)

    reloaded = SSLModule.load_from_checkpoint(path)
    assert isinstance(reloaded.head, Distillation)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, msg=key)
    for key, value in teacher_of(model).state_dict().items():
        assert torch.equal(teacher_of(reloaded).state_dict()[key], value), key

    exported = reloaded.export_backbone(tmp_path / "backbone.safetensors")
    assert set(load_file(exported)) == set(model.backbone.model.state_dict()), "student only"

    teacher_file.unlink()
    with pytest.raises(FileNotFoundError, match="backbone.safetensors or --model.weights CKPT"):
        SSLModule.load_from_checkpoint(path)
    # lit-ssl export needs the student only: it works without the teacher file
    again = export_checkpoint(path, tmp_path / "again.safetensors")
    assert load_file(again).keys() == load_file(exported).keys()


# ----------------------------------------------------------------------------- DDP
WORLD_SIZE = 2


def _ddp_worker(rank: int, store: str, teacher_file: str, out: str) -> None:
    join_gloo(rank, store, WORLD_SIZE)
    try:
        model = module(Distillation(TEACHER, teacher_weights=teacher_file, hidden_dim=32))
        model.eval()  # no BN batch statistics: per-rank losses average to the whole batch's

        class Step(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
                return self.model.head(self.model.backbone, views).loss

        ddp = nn.parallel.DistributedDataParallel(Step())
        x = gratings(BATCH, 3)
        half = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        loss = ddp([x[half]])
        loss.backward()
        losses = [torch.zeros(()) for _ in range(WORLD_SIZE)]
        dist.all_gather(losses, loss.detach())
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        teacher_sum = sum(p.double().sum() for p in teacher_of(model).parameters())
        sums = [torch.zeros((), dtype=torch.float64) for _ in range(WORLD_SIZE)]
        dist.all_gather(sums, teacher_sum)
        if rank == 0:
            torch.save({"losses": torch.stack(losses), "grads": grads, "teacher": sums}, out)
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    teacher_file = str(write_teacher(tmp_path / "teacher.safetensors"))
    out = tmp_path / "ddp.pt"
    mp.start_processes(
        _ddp_worker,
        args=(str(tmp_path / "store"), teacher_file, str(out)),
        nprocs=WORLD_SIZE,
        join=True,
        start_method="fork" if sys.platform == "linux" else "spawn",
    )
    got = torch.load(out, weights_only=True)
    assert got["teacher"][0] == got["teacher"][1], "every rank has the same teacher"

    model = module(Distillation(TEACHER, teacher_weights=teacher_file, hidden_dim=32))
    model.eval()
    loss = model.head(model.backbone, [gratings(BATCH, 3)]).loss
    loss.backward()
    torch.testing.assert_close(got["losses"].mean(), loss.detach(), atol=1e-5, rtol=1e-5)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(got["grads"]) == set(grads) and not [k for k in grads if ".teacher." in k]
    for name, grad in grads.items():
        torch.testing.assert_close(got["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)
