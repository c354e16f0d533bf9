"""Opening a checkpoint never runs code from it: pickled payloads and foreign class paths.

Each malicious checkpoint would create a marker file if anything in it were executed; the
tests show lit_ssl refuses it with a clear error and the marker never appears.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_ssl import SSLModule, allow_list
from lit_ssl.checkpoints import (
    UntrustedCheckpointError,
    load_checkpoint,
    module_name,
    trust_class,
)
from lit_ssl.classify.classifier import DefectClassifier
from lit_ssl.cli.main import main
from lit_ssl.heads import BYOL, Hybrid, MaskedReconstruction, SimCLR
from lit_ssl.heads.joint_embedding import SimCLR as SimCLRDefined

VICREG = Path(__file__).resolve().parents[1] / "recipes" / "vicreg.yaml"


class Payload:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _checkpoint(module, **hparams) -> dict:
    """A checkpoint dict as Lightning writes it (no Trainer needed)."""
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": {**dict(module.hparams), **hparams},
        "pytorch-lightning_version": "2.6.0",
    }


def _ssl() -> SSLModule:
    return SSLModule("test_resnet", SimCLR(hidden_dim=16, out_dim=8))


def _classifier() -> DefectClassifier:
    return DefectClassifier("test_resnet", class_names=["good", "scratch"])


def _os_system(marker: Path) -> dict:
    return {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "the checkpoint ran code"


def _pickled(tmp_path: Path, module, marker: Path) -> Path:
    path = tmp_path / "pickled.ckpt"
    torch.save({**_checkpoint(module), "payload": Payload(f"touch {marker}")}, path)
    return path


def test_the_pickled_payload_is_real(tmp_path):
    """Control: unpickled unsafely, the payload does create its marker."""
    marker = tmp_path / "CONTROL"
    path = _pickled(tmp_path, _ssl(), marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("make", [_ssl, _classifier], ids=["SSLModule", "DefectClassifier"])
def test_pickled_payload_is_refused(tmp_path, marker, make):
    module = make()
    path = _pickled(tmp_path, module, marker)
    with pytest.raises(UntrustedCheckpointError, match="refuses to unpickle"):
        type(module).load_from_checkpoint(path)


def test_head_class_path_to_os_system_is_refused(tmp_path, marker):
    path = tmp_path / "head.ckpt"
    torch.save(_checkpoint(_ssl(), head=_os_system(marker)), path)
    with pytest.raises(UntrustedCheckpointError, match="'os.system'.*refusing to import it"):
        SSLModule.load_from_checkpoint(path)
    with pytest.raises(UntrustedCheckpointError, match="refusing to import it"):
        SSLModule("test_resnet", head=_os_system(marker))  # a description given directly


def test_nested_class_path_is_refused(tmp_path, marker):
    """A foreign class deep inside a Hybrid head's description."""
    head = Hybrid(MaskedReconstruction(), BYOL(hidden_dim=16, out_dim=8))
    module = SSLModule("test_resnet", head)
    description = module.hparams.head
    description["init_args"]["joint_embedding"] = _os_system(marker)
    path = tmp_path / "nested.ckpt"
    torch.save(_checkpoint(module, head=description), path)
    with pytest.raises(UntrustedCheckpointError, match="hyper_parameters.head.init_args"):
        SSLModule.load_from_checkpoint(path)


@pytest.mark.parametrize(
    "hparams",
    [
        {"_class_path": "os.system"},
        {"_instantiator": "os.system"},
        {"head": {"class_path": "subprocess.Popen", "init_args": {"args": ["true"]}}},
    ],
    ids=["class_path", "instantiator", "nested"],
)
def test_classifier_checkpoint_naming_foreign_code_is_refused(tmp_path, marker, hparams):
    path = tmp_path / "classifier.ckpt"
    torch.save(_checkpoint(_classifier(), **hparams), path)
    with pytest.raises(UntrustedCheckpointError, match="os.system|subprocess.Popen"):
        DefectClassifier.load_from_checkpoint(path)


def test_datamodule_hyperparameters_are_checked_too(tmp_path, marker):
    checkpoint = _checkpoint(_ssl())
    checkpoint["datamodule_hyper_parameters"] = {"_class_path": "os.system"}
    path = tmp_path / "dm.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(UntrustedCheckpointError, match="datamodule_hyper_parameters"):
        load_checkpoint(path)


@pytest.mark.parametrize("kind", ["pickled", "class_path"])
def test_lit_ssl_export_refuses_malicious_checkpoints(tmp_path, marker, kind, capsys, monkeypatch):
    if kind == "pickled":
        path = _pickled(tmp_path, _ssl(), marker)
        expected = "refuses to unpickle"
    else:
        path = tmp_path / "head.ckpt"
        torch.save(_checkpoint(_ssl(), head=_os_system(marker)), path)
        expected = "refusing to import it"
    monkeypatch.chdir(tmp_path)
    code = main(["export", str(path)])
    stderr = capsys.readouterr().err
    assert code == 2
    assert expected in stderr, stderr[-2000:]
    assert not list(tmp_path.glob("*.safetensors"))
    assert not marker.exists()


def test_ckpt_path_naming_foreign_code_is_refused_before_lightning_reads_it(
    tmp_path, marker, capsys, monkeypatch
):
    checkpoint = _checkpoint(_ssl(), _class_path="os.system", command=f"touch {marker}")
    path = tmp_path / "resume.ckpt"
    torch.save(checkpoint, path)
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--config", str(VICREG), "--ckpt_path", str(path)])
    assert code == 2
    assert "refusing to import it" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_legitimate_checkpoints_still_load(tmp_path):
    head = Hybrid(MaskedReconstruction(), BYOL(hidden_dim=16, out_dim=8))
    module = SSLModule("test_resnet", head)
    path = tmp_path / "hybrid.ckpt"
    checkpoint = _checkpoint(module)
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    assert module_name(load_checkpoint(path)) == "SSLModule"
    loaded = SSLModule.load_from_checkpoint(path)
    assert isinstance(loaded.head, Hybrid) and isinstance(loaded.head.joint_embedding, BYOL)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    classifier = _classifier()
    classifier.threshold.fill_(0.25)
    path = tmp_path / "classifier.ckpt"
    checkpoint = _checkpoint(classifier, _class_path="lit_ssl.DefectClassifier")
    torch.save(checkpoint, path)
    assert module_name(load_checkpoint(path)) == "DefectClassifier"  # by _class_path
    assert float(DefectClassifier.load_from_checkpoint(path).threshold) == 0.25
    with pytest.raises(ValueError, match="weights_only=True only"):
        DefectClassifier.load_from_checkpoint(path, weights_only=False)


class MyHead(SimCLRDefined):
    """A user's own head: refused until trusted."""


def test_own_head_needs_trust_class(tmp_path, monkeypatch):
    monkeypatch.setattr(allow_list, "_USER_TRUSTED", {})  # trust_class is process-wide
    module = SSLModule("test_resnet", MyHead(hidden_dim=16, out_dim=8))
    path = tmp_path / "own.ckpt"
    torch.save(_checkpoint(module), path)
    with pytest.raises(UntrustedCheckpointError, match="trust_class"):
        SSLModule.load_from_checkpoint(path)
    trust_class(MyHead)
    assert isinstance(SSLModule.load_from_checkpoint(path).head, MyHead)


# Every spelling a checkpoint may use, with the class it names.
SPELLINGS = {
    "lit_ssl.module.SSLModule": "SSLModule",
    "lit_ssl.SSLModule": "SSLModule",
    "lit_ssl.classify.classifier.DefectClassifier": "DefectClassifier",
    "lit_ssl.DefectClassifier": "DefectClassifier",
    "lit_ssl.anomaly.detector.AnomalyDetector": "AnomalyDetector",
    "lit_ssl.AnomalyDetector": "AnomalyDetector",
    "lit_ssl.anomaly.AnomalyDetector": "AnomalyDetector",
    "lit_ssl.backbone.model.Backbone": "Backbone",
    "lit_ssl.backbone.Backbone": "Backbone",
    "lit_ssl.Backbone": "Backbone",
    "lit_ssl.data.datamodule.FactoryDataModule": "FactoryDataModule",
    "lit_ssl.data.FactoryDataModule": "FactoryDataModule",
    "lit_ssl.heads.joint_embedding.VICReg": "VICReg",
    "lit_ssl.heads.VICReg": "VICReg",
    "lit_ssl.heads.Distillation": "Distillation",
    "lit_ssl.heads.MAE": "MAE",
}
REFUSED = [
    "lit_ssl.heads.SSLHead",  # the abstract base, not a head
    "lit_ssl.heads.joint_embedding._TwoViewProjectionHead",
    "lit_ssl.FactoryDataModule",  # no such public name
    "lit_ssl.module.Backbone",  # imported there, not exported by a package on its path
    "lit_ssl.classifier.DefectClassifier",  # 0.1.0's path: moved, no longer an alias
    "lit_ssl.os",
    "os.system",
]


def test_classes_join_the_allow_list_by_registration_before_any_file_is_read():
    """A fresh process importing only the lowest checkpoint module knows every class: the
    package ``__init__`` runs first and imports them all (the allow-list imports none)."""
    script = (
        "from lit_ssl.allow_list import UntrustedCheckpointError, trusted_class\n"
        f"for path, name in {SPELLINGS!r}.items():\n"
        "    assert trusted_class(path).__name__ == name, path\n"
        f"for path in {REFUSED!r}:\n"
        "    try:\n"
        "        trusted_class(path)\n"
        "    except UntrustedCheckpointError:\n"
        "        continue\n"
        "    raise AssertionError(f'{path} was accepted')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_subclasses_defined_outside_lit_ssl_do_not_join_by_themselves():
    with pytest.raises(UntrustedCheckpointError):
        allow_list.trusted_class(f"{MyHead.__module__}.MyHead")
