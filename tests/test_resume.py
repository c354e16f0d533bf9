"""Resume: last.ckpt during an epoch and on SIGTERM; ``--ckpt_path last`` continues in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _smoke import RECIPES
from _smoke import TINY as SMOKE_TINY
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_ssl.cli.lightning_cli import PeriodicLastCheckpoint, newest_last_checkpoint
from lit_ssl.cli.main import main

TINY = [
    *SMOKE_TINY,
    "--trainer.devices=1",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_model_summary=false",
]


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


class _AtStep(Callback):
    """Records the global_step stored in last.ckpt after each batch; may raise at a step."""

    def __init__(self, last: Path, raise_at: int | None = None, error: type = SIGTERMException):
        self.last, self.raise_at, self.error = last, raise_at, error
        self.seen: dict[int, int | None] = {}

    def on_train_batch_end(self, trainer, *args) -> None:
        step = trainer.global_step
        self.seen[step] = _step(self.last) if self.last.is_file() else None
        if step == self.raise_at:
            raise self.error()


def _trainer(tmp_path: Path, every: int, spy: _AtStep) -> Trainer:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    return Trainer(
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=0,
        callbacks=[checkpoint, PeriodicLastCheckpoint(every), spy],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def test_last_checkpoint_refreshed_every_n_steps_within_the_epoch(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    spy = _AtStep(last)
    _trainer(tmp_path, every=2, spy=spy).fit(BoringModel())
    assert spy.seen == {1: None, 2: 2, 3: 2, 4: 4, 5: 4}
    # the epoch-end save writes the same file, not a last-v1.ckpt next to it
    assert sorted(p.name for p in last.parent.iterdir()) == ["epoch=0-step=5.ckpt", "last.ckpt"]
    assert _step(last) == 5


def test_sigterm_saves_last_but_an_error_keeps_the_last_good_one(tmp_path):
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(SIGTERMException):
        _trainer(tmp_path / "a", every=0, spy=_AtStep(last, raise_at=3)).fit(BoringModel())
    assert _step(last) == 3

    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError):
        _trainer(tmp_path / "b", every=2, spy=_AtStep(last, 3, ValueError)).fit(BoringModel())
    assert _step(last) == 2, "a failing step must not overwrite the last good checkpoint"


def test_invalid_period_is_refused():
    with pytest.raises(ValueError, match="every_n_steps"):
        PeriodicLastCheckpoint(-1)


def test_newest_last_checkpoint_picks_the_highest_version(tmp_path):
    assert newest_last_checkpoint(tmp_path) is None
    for version in (2, 10, 3):
        folder = tmp_path / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(b"")
    (tmp_path / "version_11" / "checkpoints").mkdir(parents=True)  # a run with no checkpoint
    assert newest_last_checkpoint(tmp_path) == tmp_path / "version_10/checkpoints/last.ckpt"


def test_ckpt_path_last_resumes_in_the_same_version_folder(
    tiny_factory_data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "--config", str(RECIPES / "vicreg.yaml"), f"--data.root={tiny_factory_data}"]
    fit += TINY
    assert main([*fit, "--trainer.max_steps=3"]) == 0
    runs = tmp_path / "runs" / "vicreg"
    last = runs / "version_0" / "checkpoints" / "last.ckpt"
    assert _step(last) == 3

    assert main([*fit, "--trainer.max_steps=5", "--ckpt_path", "last"]) == 0
    assert _step(last) == 5, "training continued from step 3 rather than restarting"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    assert (
        "ckpt_path: runs/vicreg/version_0/checkpoints/last.ckpt"
        in (runs / "version_0" / "config.yaml").read_text()
    )

    assert main([*fit, "--trainer.max_steps=6", f"--ckpt_path={last.resolve()}"]) == 0
    assert _step(last) == 6, "an explicit path into a run folder also continues there"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
