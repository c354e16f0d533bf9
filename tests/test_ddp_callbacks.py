"""``recipes/ddp.yaml`` on 2 real CPU processes (gloo) with every callback the recipes ship.

Rank-0-only code must not call collectives (``trainer.log_dir`` broadcasts): the run has to
finish, export the backbone and write its figures, and a hang must fail the test (timeout)
instead of blocking CI.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from lit_ssl.callbacks.run_folder import run_dir

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150  # a healthy run takes ~25 s on 2 shared cores; a hang waits forever

# A reconstruction head (for ReconstructionGrid) whose joint-embedding part gathers across
# ranks (VICReg's statistics): both kinds of collectives in one run.
HYBRID = """\
model:
  init_args:
    head:
      class_path: lit_ssl.heads.Hybrid
      init_args:
        reconstruction:
          class_path: lit_ssl.heads.MaskedReconstruction
          init_args:
            mask_patch_size: 8
        joint_embedding:
          class_path: lit_ssl.heads.VICReg
          init_args:
            hidden_dim: 64
            out_dim: 64
"""


def _class_folders(root: Path) -> Path:
    """good/ and scratch/ PNGs (72x90): labels, so the probe's collectives run too."""
    rng = np.random.default_rng(0)
    for name, count in (("good", 20), ("scratch", 12)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 255, (90, 72, 3), dtype=np.uint8)
            if name == "scratch":
                image[40:43, 10:60] = 255
            Image.fromarray(image).save(root / name / f"{name}{i:02d}.png")
    return root


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; on timeout kill the group (DDP children)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)  # Lightning picks a free port
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"DDP fit hung (> {TIMEOUT_S} s); output tail:\n{output[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


@pytest.mark.skipif(sys.platform != "linux", reason="2 gloo processes; CI runs Linux")
def test_ddp_recipe_with_every_callback_finishes_and_writes_outputs(tmp_path):
    data = _class_folders(tmp_path / "line")
    overlay = tmp_path / "ddp_hybrid.yaml"
    overlay.write_text(HYBRID)
    lit_ssl = Path(sys.executable).parent / "lit-ssl"
    command = [
        str(lit_ssl),
        "fit",
        "--config",
        str(REPO / "recipes" / "ddp.yaml"),
        "--config",
        str(overlay),
        "--trainer.callbacks+=lit_ssl.callbacks.ReconstructionGrid",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.sync_batchnorm=false",  # SyncBatchNorm needs GPUs
        "--trainer.precision=32",
        "--trainer.max_steps=2",
        "--model.backbone=test_resnet",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--data.num_workers=0",
        f"--data.root={data}",
    ]
    result = _run(command, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]

    versions = list((tmp_path / "runs").glob("*/version_*"))
    assert len(versions) == 1, versions  # no stray folder from rank 1's logger
    run = versions[0]
    assert "Exported" in result.stdout
    assert (run / "backbone.safetensors").stat().st_size > 0
    assert (run / "backbone.json").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    figures = run / "figures"
    for name in ("embeddings_pca.png", "reconstructions_epoch000.png"):
        assert (figures / name).stat().st_size > 0, name
    with (run / "metrics.csv").open() as f:
        columns = set(next(csv.reader(f)))
    for key in ("probe/train_acc", "probe/val_acc", "probe/knn_acc", "collapse/std_ratio"):
        assert key in columns, key


def test_run_dir_calls_no_collective(tmp_path, monkeypatch):
    trainer = L.Trainer(
        logger=CSVLogger(tmp_path, name="run"), default_root_dir=tmp_path, accelerator="cpu"
    )

    def broadcast(*args, **kwargs):
        raise AssertionError("run_dir must not broadcast (a collective)")

    expected = Path(trainer.log_dir)
    monkeypatch.setattr(trainer.strategy, "broadcast", broadcast)
    assert run_dir(trainer) == expected
    assert expected.is_dir() and expected.name == "version_0"


def test_run_dir_without_logger_is_the_root_dir(tmp_path):
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path / "root", accelerator="cpu")
    assert run_dir(trainer) == tmp_path / "root"
    assert (tmp_path / "root").is_dir()
