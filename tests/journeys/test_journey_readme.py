"""README "Your own images", run as written on a user's folders (only sizes overridden)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file


def test_pretrain_vicreg_on_an_unlabeled_mixed_folder(readme_runs, project, unlabeled):
    result = readme_runs[0]
    assert result.returncode == 0, result.describe()
    run = project / "runs" / "vicreg" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert (run / "backbone.safetensors").is_file()
    assert "zz_broken.png" in result.output, "the broken file is not named"


def test_export_the_pretrained_checkpoint(readme_runs, project):
    result = readme_runs[1]
    assert result.returncode == 0, result.describe()
    run = project / "runs" / "vicreg" / "version_0"
    weights = load_file(run / "backbone.safetensors")
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    assert json.loads((run / "backbone.json").read_text())["name"] == "test_resnet"


def test_finetune_from_the_exported_backbone_on_class_folders(readme_runs, project):
    result = readme_runs[2]
    assert result.returncode == 0, result.describe()
    run = project / "runs" / "finetune" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert (run / "classifier.onnx").stat().st_size > 1000
