"""Kill a pretraining run, then resume it with the documented spelling ``--ckpt_path last``.

The first run is stopped with SIGKILL (no clean shutdown) once it has checkpointed at least two
steps; it is frozen (SIGSTOP) while its files are checked, so the kill never lands mid-write.
The resumed run must start from the killed run's newest ``last.ckpt`` (in ``runs/vicreg/``, a
different version folder) and continue its step count.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from conftest import TIMEOUT_S, command, environment, lit_ssl, small

FIT = ["fit", "--config", "recipes/vicreg.yaml"]


def _global_step(path: Path) -> int | None:
    """The checkpoint's step, or None while it is missing or half-written."""
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except (FileNotFoundError, EOFError, RuntimeError, KeyError, OSError):
        return None


def _run_until_checkpointed(args: list[str], cwd: Path, last: Path, steps: int) -> int:
    """Start ``lit-ssl ARGS``; SIGKILL it once ``last`` holds ``>= steps``; return its step."""
    log = (cwd / "killed_run.log").open("w")
    process = subprocess.Popen(
        [*command(), *args], cwd=cwd, env=environment(), stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if list(last.parent.glob("epoch=*.ckpt")):
                process.send_signal(signal.SIGSTOP)  # frozen: no checkpoint is being written
                step = _global_step(last)
                if step is not None and step >= steps:
                    process.kill()
                    process.wait()
                    return step
                process.send_signal(signal.SIGCONT)
            time.sleep(0.05)  # polling a running process, not waiting for time to pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    raise AssertionError(
        f"run ended (exit {process.returncode}) or timed out without {last} at step >= {steps}:\n"
        + (cwd / "killed_run.log").read_text()[-3000:]
    )


def test_kill_and_resume_with_ckpt_path_last(fresh_project, unlabeled):
    root = ["--data.root", str(unlabeled.root)]
    long_run = [*small(), "--trainer.max_steps", "1000", "--trainer.limit_train_batches", "1"]
    last = fresh_project / "runs" / "vicreg" / "version_0" / "checkpoints" / "last.ckpt"
    killed_at = _run_until_checkpointed([*FIT, *root, *long_run], fresh_project, last, steps=2)
    assert os.path.getsize(last) > 0
    before = _logged_steps(last.parents[1] / "metrics.csv")  # the killed run's rows

    target = killed_at + 2
    resume = [*small(), "--trainer.max_steps", str(target), "--trainer.limit_train_batches", "1"]
    result = lit_ssl(*FIT, *root, *resume, "--ckpt_path", "last", cwd=fresh_project)
    assert "Restored all states from the checkpoint" in result.output, result.describe()
    assert str(last.name) in result.output, result.describe()

    newest = max((fresh_project / "runs" / "vicreg").glob("version_*/checkpoints/last.ckpt"),
                 key=os.path.getmtime)  # fmt: skip
    assert _global_step(newest) == target, f"{newest} did not continue from step {killed_at}"
    steps = _logged_steps(newest.parents[1] / "metrics.csv")
    assert steps[: len(before)] == before, "resuming keeps the killed run's metrics rows"
    resumed = steps[len(before) :]  # appended by the resumed run
    assert resumed and min(resumed) >= killed_at, f"resumed run logged steps {resumed} (from 0?)"


def _logged_steps(metrics: Path) -> list[int]:
    if not metrics.is_file():
        return []
    with metrics.open(newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("step")]
