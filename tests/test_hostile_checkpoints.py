"""Issue 21, items 2 (loading), 4, 7 and 9: weights and checkpoints as a hostile user has them.

NaN weights, a resumed run's metrics, a truncated ``last.ckpt``, a checkpoint whose backbone
name lies, CLI settings that contradict the checkpoint, a folder or an ONNX file as weights.
The CLI cases share one tiny 2-epoch fine-tune (``fitted``) and copy its run folder.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import RECIPE, SIZE, write_class_folders
from safetensors.torch import save_file

from lit_ssl import Backbone, SSLModule
from lit_ssl.anomaly import AnomalyDetector
from lit_ssl.backbone.loading import resolve_backbone
from lit_ssl.callbacks.run_folder import RunCSVLogger
from lit_ssl.checkpoints import (
    CorruptCheckpointError,
    NonFiniteWeightsError,
    check_finite,
    load_checkpoint,
    load_module,
)
from lit_ssl.cli.main import _hparams_clash_message, main
from lit_ssl.heads import SimCLR

FIT = [
    "fit",
    "--config",
    str(RECIPE),
    "--data.root",
    "labelled",
    *SIZE,
    "--model.backbone",
    "test_resnet",
    "--trainer.limit_train_batches",
    "2",
    "--data.batch_size",
    "8",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
PREDICT = ["predict", "--config", str(RECIPE), "--data.root", "labelled", *SIZE]
PREDICT += ["--trainer.enable_progress_bar=false"]
RUN = Path("runs") / "finetune" / "version_0"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """A work folder holding ``labelled/`` and a 2-epoch ``runs/finetune/version_0``."""
    work = tmp_path_factory.mktemp("fitted")
    write_class_folders(work / "labelled")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        assert main([*FIT, "--trainer.max_epochs", "2"]) == 0
    return work


@pytest.fixture
def work(fitted, tmp_path, monkeypatch) -> Path:
    """A private copy of ``fitted``, as the current directory."""
    copy = tmp_path / "work"
    shutil.copytree(fitted, copy)
    monkeypatch.chdir(copy)
    return copy


def _error(capfd: pytest.CaptureFixture, code: int) -> str:
    """The CLI's error: exit 2, no traceback, at most 2 lines."""
    err = capfd.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    start = max(i for i, line in enumerate(lines) if line.startswith("lit-ssl: error: "))
    assert len(lines) - start <= 2, lines[start:]
    return "\n".join(lines[start:])


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _poison(state: dict[str, torch.Tensor], count: int = 3) -> list[str]:
    names = [k for k, v in state.items() if k.endswith("weight") and v.dim() > 1][:count]
    for name in names:
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float("nan")
    return names


# ----------------------------------------------------------------------------- item 2
def test_2_nan_weights_files_are_refused_naming_the_tensors(tmp_path):
    backbone = Backbone("test_resnet")
    state = dict(backbone.model.state_dict())
    names = _poison(state)
    files = {"st": tmp_path / "nan.safetensors", "pth": tmp_path / "nan.pth"}
    save_file(state, str(files["st"]))
    torch.save({"state_dict": state}, files["pth"])
    for path in files.values():
        with pytest.raises(NonFiniteWeightsError) as error:
            Backbone("test_resnet", weights=str(path))
        text = str(error.value)
        assert str(path) in text and "non-finite values (NaN/inf) in 3 tensors" in text
        assert names[0] in text and "diverged" in text and "earlier checkpoint" in text


def test_2_nan_ssl_checkpoint_as_weights_is_refused(tmp_path):
    module = SSLModule("test_resnet", SimCLR(hidden_dim=16, out_dim=8))
    state = {f"backbone.{k}": v for k, v in module.backbone.state_dict().items()}
    names = _poison(state, count=1)
    path = tmp_path / "diverged.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": dict(module.hparams)}, path)
    with pytest.raises(NonFiniteWeightsError, match=r"in 1 tensor \(model\.") as error:
        resolve_backbone(None, path, None, None)
    assert str(path) in str(error.value) and names[0].removeprefix("backbone.") in str(error.value)
    with pytest.raises(NonFiniteWeightsError, match="diverged"):  # and as a module checkpoint
        load_module(SSLModule, path)


def test_2_module_checkpoint_nan_refused_but_an_unset_inf_threshold_loads(tmp_path):
    detector = AnomalyDetector("test_resnet", layers=(1,), save_figures=False)
    state = dict(detector.state_dict())
    assert state["threshold"].item() == float("inf")  # before validation: legitimate
    check_finite(state, "detector.ckpt", "x")
    for key, value in (("threshold", float("nan")), ("threshold", float("-inf"))):
        with pytest.raises(NonFiniteWeightsError, match=rf"in 1 tensor \({key}\)"):
            check_finite({**state, key: torch.tensor(value)}, "detector.ckpt", "x")
    with pytest.raises(NonFiniteWeightsError, match="memory_bank"):
        check_finite({**state, "memory_bank": torch.full((4, 2), float("nan"))}, "d.ckpt", "x")


def test_2_cli_refuses_nan_model_weights(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    write_class_folders(tmp_path / "labelled")
    state = dict(Backbone("test_resnet").model.state_dict())
    _poison(state)
    save_file(state, str(tmp_path / "nan.safetensors"))
    code = main([*FIT, "--trainer.max_epochs", "1", "--model.weights", "nan.safetensors"])
    text = _error(capfd, code)
    assert "nan.safetensors holds non-finite values (NaN/inf) in 3 tensors" in text
    assert not (tmp_path / "runs").exists()


def test_2_cli_refuses_a_nan_checkpoint(work, capfd):
    checkpoint = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=True)
    _poison(checkpoint["state_dict"], count=1)
    torch.save(checkpoint, "diverged.ckpt")
    text = _error(capfd, main([*PREDICT, "--ckpt_path", "diverged.ckpt"]))
    assert text.startswith("lit-ssl: error: diverged.ckpt holds non-finite values")
    assert "earlier checkpoint" in text


# ----------------------------------------------------------------------------- item 4
def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_4_resume_appends_to_metrics_csv(work):
    metrics = RUN / "metrics.csv"
    before = _rows(metrics)
    assert {row["epoch"] for row in before} == {"0", "1"}
    assert main([*FIT, "--trainer.max_epochs", "3", "--ckpt_path", "last"]) == 0
    after = _rows(metrics)
    assert after[: len(before)] == before, "the earlier epochs' rows are kept as they were"
    assert {row["epoch"] for row in after[len(before) :]} == {"2"}
    assert sorted(p.name for p in RUN.parent.iterdir()) == ["version_0"]


def test_4_resumed_metrics_keep_one_consistent_header(tmp_path):
    first = RunCSVLogger(tmp_path, name="run", version=0)
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    resumed = RunCSVLogger(tmp_path, name="run", version=0)
    resumed.log_metrics({"loss": 0.5}, step=1)
    resumed.save()
    resumed.log_metrics({"loss": 0.25, "val/auroc": 0.9}, step=2)  # a new key: wider header
    resumed.save()
    path = tmp_path / "run" / "version_0" / "metrics.csv"
    assert path.read_text().splitlines() == [
        "loss,step,val/auroc",
        "1.0,0,",
        "0.5,1,",
        "0.25,2,0.9",
    ]


# ----------------------------------------------------------------------------- item 7
def test_7_truncated_checkpoint_is_one_line_naming_an_intact_one(work, capfd):
    last = RUN / "checkpoints" / "last.ckpt"
    _truncate(last)
    with pytest.raises(CorruptCheckpointError) as error:
        load_checkpoint(last)
    assert str(error.value) == (
        f"{last} is truncated or corrupt (a run killed while writing it?); use an earlier "
        "checkpoint in the same folder: epoch=1-step=4.ckpt."
    )
    for args in ([*PREDICT, "--ckpt_path", str(last)], ["export", str(last)]):
        text = _error(capfd, main(args))
        assert text == f"lit-ssl: error: {error.value}", args[0]


def test_7_resume_falls_back_to_the_newest_intact_checkpoint(work, capfd):
    last = RUN / "checkpoints" / "last.ckpt"
    _truncate(last, 0.9)
    assert main([*FIT, "--trainer.max_epochs", "3", "--ckpt_path", "last"]) == 0
    out = capfd.readouterr().out
    assert "last.ckpt is truncated or corrupt; resuming from epoch=1-step=4.ckpt instead" in out
    assert torch.load(last, weights_only=True)["epoch"] == 2, "resumed at epoch 2, not anew"


def test_7_no_intact_checkpoint_to_fall_back_to(work, capfd):
    for path in (RUN / "checkpoints").glob("*.ckpt"):
        _truncate(path)
    text = _error(capfd, main([*FIT, "--trainer.max_epochs", "3", "--ckpt_path", "last"]))
    assert "last.ckpt is truncated or corrupt" in text
    assert "no intact checkpoint" in text and "without --ckpt_path" in text


# ----------------------------------------------------------------------------- item 9
def test_9a_stored_backbone_name_that_does_not_match_its_weights(tmp_path):
    module = SSLModule("test_resnet", SimCLR(hidden_dim=16, out_dim=8))
    path = tmp_path / "renamed.ckpt"
    hparams = {**dict(module.hparams), "backbone": "test_convnext"}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, path)
    with pytest.raises(ValueError) as error:
        resolve_backbone(None, path, None, None)
    lines = str(error.value).splitlines()
    assert len(lines) == 2
    assert f"The backbone weights in {path} are not those of a 'test_convnext'" in lines[0]
    assert "mis-shaped" in lines[0] or "missing" in lines[0]


def test_9b_backbone_that_contradicts_the_checkpoint_is_refused(work, capfd):
    last = RUN / "checkpoints" / "last.ckpt"
    code = main([*PREDICT, "--ckpt_path", str(last), "--model.backbone", "resnet10t"])
    text = _error(capfd, code)
    assert f"--model.backbone resnet10t conflicts with {last}" in text
    assert "backbone=test_resnet" in text and "Drop --model.backbone" in text
    # the same name as the checkpoint's, or the recipe's own (resnet18) value, is fine
    assert main([*PREDICT, "--ckpt_path", str(last), "--model.backbone=test_resnet"]) == 0
    assert main([*PREDICT, "--ckpt_path", str(last)]) == 0


def test_9c_in_chans_mismatch_names_the_checkpoint(work, capfd):
    last = RUN / "checkpoints" / "last.ckpt"
    text = _error(capfd, main([*PREDICT, "--ckpt_path", str(last), "--data.in_chans", "1"]))
    assert f"{last} was fit with in_chans=3, but --data.in_chans is 1" in text
    assert "model and the data" not in text and "--data.in_chans 3" in text
    # any other key Lightning finds in both: with --ckpt_path the checkpoint is named too
    clash = RuntimeError("Error while merging hparams: the keys ['image_size'] are present ...")
    message = _hparams_clash_message(clash, ["predict", "--ckpt_path=x.ckpt"])
    assert message.startswith("the checkpoint (--ckpt_path) was fit with another image_size")
    assert "model and the data" in _hparams_clash_message(clash, ["fit"])


def test_9d_directory_or_onnx_as_weights(tmp_path):
    folder = tmp_path / "version_0"
    folder.mkdir()
    onnx = tmp_path / "classifier.onnx"
    onnx.write_bytes(b"\x08\x07")
    for build in (
        lambda w: resolve_backbone("test_resnet", w, None, None),
        lambda w: SSLModule("test_resnet", weights=w),
    ):
        with pytest.raises(ValueError, match="is a directory: give the backbone.safetensors"):
            build(str(folder))
        with pytest.raises(ValueError, match=".onnx files are deployment graphs, not weights"):
            build(str(onnx))
