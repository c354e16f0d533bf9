"""Pretraining on 2 CPU processes (DDP, gloo) ends with every callback the recipes ship.

``recipes/ddp.yaml`` as shipped, on the user's unlabeled folder (the online probe idle). The
callbacks ddp.yaml does not ship (``ReconstructionGrid`` of the reconstruction recipes, and the
probe with labels) run under DDP in ``tests/test_ddp_callbacks.py``: ddp.yaml with a hybrid
head and ``--trainer.callbacks+=lit_ssl.callbacks.ReconstructionGrid`` on class folders, also
2 gloo processes of ``lit-ssl fit``. As docs/ddp.md says for a CPU-only machine, with
``--trainer.sync_batchnorm false`` (torch's SyncBatchNorm refuses CPU modules: "SyncBatchNorm
layers only work with GPU modules"). The backbone is exported at the end. A hang fails on the
subprocess timeout instead of blocking the suite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import RECIPES, lit_ssl, small

SHIPPED = sorted(
    {
        name
        for path in RECIPES.glob("*.yaml")
        if "lit_ssl.SSLModule" in path.read_text()
        for name in re.findall(r"class_path: (lit_ssl\.callbacks\.\w+)", path.read_text())
    }
)
GRID = "lit_ssl.callbacks.ReconstructionGrid"
CPU_DDP = ["--trainer.devices", "2", "--trainer.precision", "32"]
CPU_DDP += ["--trainer.sync_batchnorm", "false"]
EXTRA = {"ddp": []}
DDP_CALLBACKS_TEST = Path(__file__).parents[1] / "test_ddp_callbacks.py"


def test_the_ddp_runs_cover_every_shipped_callback():
    covered = set(re.findall(r"lit_ssl\.callbacks\.\w+", (RECIPES / "ddp.yaml").read_text()))
    covered |= set(
        re.findall(r"callbacks\+=(lit_ssl\.callbacks\.\w+)", DDP_CALLBACKS_TEST.read_text())
    )
    assert set(SHIPPED) <= covered, f"not run under DDP: {set(SHIPPED) - covered}"


@pytest.mark.parametrize("recipe", list(EXTRA))
def test_pretrain_on_two_gloo_processes(recipe, fresh_project, unlabeled):
    args = ["fit", "--config", f"recipes/{recipe}.yaml", "--data.root", unlabeled.root]
    args += [*small(), *CPU_DDP, *EXTRA[recipe]]
    result = lit_ssl(*args, cwd=fresh_project, timeout=240)

    run = fresh_project / "runs" / recipe / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert json.loads((run / "backbone.json").read_text())["name"] == "test_resnet"
    assert (run / "backbone.safetensors").stat().st_size > 1000
    assert "Traceback" not in result.output, result.describe()
    if GRID in (RECIPES / f"{recipe}.yaml").read_text():
        assert list((run / "figures").glob("reconstructions_epoch*.png")), "no grid saved"
