"""Defect detection from good images only, as recipes/anomaly.yaml says to run it: on an MVTec AD
category, from the README journey's self-supervised backbone; fit builds the bank, test reports."""

from __future__ import annotations

import re

import torch
from conftest import lit_ssl, small

BACKBONE = "runs/vicreg/version_0/backbone.safetensors"
CKPT = "runs/anomaly/version_0/checkpoints/last.ckpt"


def test_anomaly_detector_from_good_images_on_mvtec(fresh_project, project, readme_runs, mvtec):
    assert readme_runs[1].returncode == 0, readme_runs[1].describe()
    root = ["--data.root", mvtec.root]
    fit = ["fit", "--config", "recipes/anomaly.yaml", *root, "--model.weights", project / BACKBONE]
    lit_ssl(*fit, *small(), cwd=fresh_project)
    checkpoint = torch.load(fresh_project / CKPT, weights_only=True)
    assert checkpoint["global_step"] == 0, "building the bank takes no gradient step"
    bank = checkpoint["state_dict"]["memory_bank"]
    assert bank.ndim == 2 and bank.shape[0] > 0
    assert torch.isfinite(checkpoint["state_dict"]["threshold"])

    test = ["test", "--config", "recipes/anomaly.yaml", *root, "--ckpt_path", CKPT]
    result = lit_ssl(*test, *small(), cwd=fresh_project)
    auroc = re.search(r"test/image_auroc\s+([0-9.]+)", result.output)
    assert auroc, result.describe()
    assert float(auroc.group(1)) >= 0.6, result.describe()  # chance is 0.5
