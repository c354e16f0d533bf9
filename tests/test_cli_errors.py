"""CLI errors: one or two lines that say what to do, exit code 2, no traceback, no run folder.

Most cases call ``main`` in-process (the same code path, seconds instead of a process start);
the console script itself is run for a data error and for ``LIT_SSL_DEBUG=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _smoke import RECIPES
from _smoke import TINY as SMOKE_TINY

from lit_ssl.cli.main import _remove_empty_run_folder, main

LIT_SSL = Path(sys.executable).parent / "lit-ssl"
TINY = [
    *SMOKE_TINY,
    "--trainer.max_steps=2",
]


def _fit(recipe: str, *extra: str) -> list[str]:
    return ["fit", "--config", str(RECIPES / f"{recipe}.yaml"), *TINY, *extra]


def _error_lines(stderr: str) -> list[str]:
    """The ``lit-ssl: error:`` line and what follows it (Python warnings ignored)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("lit-ssl: error: ")]
    assert starts, f"no 'lit-ssl: error:' line in:\n{stderr}"
    return lines[starts[-1] :]


def _assert_short_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in stderr
    lines = _error_lines(stderr)
    assert len(lines) <= 2, lines
    text = "\n".join(lines)
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


CASES = {
    "missing data folder": (_fit("vicreg", "--data.root=no_such_line"), ["does not exist", "root"]),
    "root is a file": (_fit("vicreg", "--data.root=notes.txt"), ["is a file", "folder"]),
    "unknown key": (
        _fit("vicreg", "--model.learning_rate=0.1"),
        ["--model.learning_rate", "--model.help lit_ssl.SSLModule"],
    ),
    "wrong type": (_fit("vicreg", "--data.batch_size=many"), ["--data.batch_size", "int", "many"]),
    "MAE on a CNN": (_fit("mae"), ["ViT", "MaskedReconstruction"]),
    "bad checkpoint path": (
        _fit("vicreg", "--ckpt_path=runs/vicreg/version_3/checkpoints/last.ckpt"),
        ["no such checkpoint", "'last'"],
    ),
    "nothing to resume": (_fit("vicreg", "--ckpt_path=last"), ["no last.ckpt", "without"]),
    "missing config file": (["fit", "--config", "recipes/vicreg.yml"], ["--config", "vicreg.yml"]),
    "export: no checkpoint": (["export", "missing.ckpt"], ["missing.ckpt"]),
    "synth: missing argument": (["synth"], ["output", "lit-ssl synth --help"]),
    "preview: wrong type": (["preview", "--views", "x"], ["--views", "lit-ssl preview --help"]),
    "diagnose: missing folder": (["diagnose", "--data.root", "no_such_line"], ["no_such_line"]),
    "model and data disagree": (
        [*_fit("anomaly", "--model.in_chans=1", "--data.in_chans=3")],
        ["different in_chans", "--model.in_chans V --data.in_chans V"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_two_lines_and_exit_2(case, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not images")
    args, needles = CASES[case]
    code = main(args)
    _assert_short_error(code, capfd.readouterr().err, *needles)
    assert not (tmp_path / "runs").exists(), "a failed run leaves no run folder behind"


def test_console_script_prints_only_the_error(tmp_path):
    """The installed command after Lightning has started: stderr holds the error alone."""
    environ = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    environ.pop("LIT_SSL_DEBUG", None)
    args = [str(LIT_SSL), *_fit("vicreg", "--data.root=no_such_line")]
    result = subprocess.run(
        args, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300
    )
    stderr = [line for line in result.stderr.splitlines() if "Warning" not in line]
    assert len(stderr) <= 2, result.stderr
    _assert_short_error(result.returncode, result.stderr, "does not exist", "data.root")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("how", ["--debug", "LIT_SSL_DEBUG=1"])
def test_debug_shows_the_traceback(how, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    args = _fit("vicreg", "--model.lr=fast")
    if how == "--debug":
        args.append("--debug")
    else:
        monkeypatch.setenv("LIT_SSL_DEBUG", "1")
    assert main(args) == 2
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err and "ArgumentError" in err
    assert _error_lines(err)[0].startswith("lit-ssl: error: --model.lr: expected float")


def _folder(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "runs" / "vicreg" / "version_0"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("step\n")
    return folder


@pytest.mark.parametrize(
    ("files", "resumed", "removed"),
    [
        (["config.yaml", "hparams.yaml", "metrics.csv"], False, True),
        (["config.yaml", "checkpoints/last.ckpt"], False, False),
        (["config.yaml", "figures/embeddings_pca.png"], False, False),
        (["config.yaml"], True, False),
    ],
)
def test_failed_run_folder_removed_only_when_it_holds_nothing(tmp_path, files, resumed, removed):
    folder = _folder(tmp_path, *files)
    record = {"folder": folder, "resumed": resumed, "new_parents": list(folder.parents[:2])}
    _remove_empty_run_folder(record)
    assert folder.exists() is not removed
    assert (tmp_path / "runs").exists() is not removed


def test_logged_metrics_keep_the_folder(tmp_path):
    folder = _folder(tmp_path, "config.yaml")
    (folder / "metrics.csv").write_text("step,loss\n0,1.5\n")
    _remove_empty_run_folder({"folder": folder})
    assert (folder / "metrics.csv").is_file()
