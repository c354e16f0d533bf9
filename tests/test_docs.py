"""Every code snippet in README.md and docs/ runs.

``python`` blocks of a page run in order in one namespace; ``bash`` blocks run their
``lit-ssl`` commands in-process, in order, in a scratch folder, with two conventions:

* dataset paths under ``/data/`` point at a small generated factory dataset, ``/tmp/``
  at the test's scratch folder;
* each command gets seconds-long settings appended (tiny backbone, 32 px, 2 steps,
  ``--fast``, few images), the same overrides the recipe tests use.

Install lines (venv/pip) and the test command are exercised by CI itself (``.ci/run``)
and skipped here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _smoke import smoke_overrides

from lit_ssl.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(python|bash)\n(.*?)```", re.S)
# installs are CI's own job (.ci/run); the test suite cannot run itself
SKIPPED_PREFIXES = ("python3 -m venv", "pip ", ".venv/bin/pip", ".venv/bin/python -m pytest")
DATASET = re.compile(r"/data/(?:line3_labelled|line3_new|line3|mvtec_ad/\w+)")


def _blocks(page: Path) -> list[tuple[str, str]]:
    return FENCE.findall(page.read_text())


def _commands(block: str) -> list[str]:
    """Shell lines of a block, continuations joined, comments and install lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        for part in (p.strip() for p in line.split("&&")):
            if part and not part.startswith("#") and not part.startswith(SKIPPED_PREFIXES):
                commands.append(part)
    return commands


def _smoke(args: list[str]) -> list[str]:
    command = args[0]
    if command in ("fit", "validate", "test", "predict"):
        recipe = args[args.index("--config") + 1] if "--config" in args else ""
        text = (ROOT / recipe).read_text() if recipe else ""
        return [a.replace("recipes/", f"{ROOT}/recipes/", 1) for a in args] + smoke_overrides(text)
    extras = {
        "synth": [
            "--image-size",
            "32",
            "--n-train",
            "16",
            "--n-test-good",
            "8",
            "--n-per-defect",
            "4",
            "--overwrite",
        ],
        "diagnose": ["--num-images", "60", "--quiet"],
        "preview": ["--image-size", "32"],
    }
    return args + extras.get(command, [])


def _run_shell(block: str, dataset: Path, scratch: Path) -> None:
    for command in _commands(block):
        command = DATASET.sub(str(dataset), command.replace("/tmp/", f"{scratch}/"))
        args = shlex.split(command)
        program = Path(args[0]).name
        assert program == "lit-ssl", f"docs snippet runs an unknown program: {command}"
        if args[1] == "quickstart":
            continue  # run once, with assertions on its table, in test_quickstart.py
        try:
            status = main(_smoke(args[1:]))
        except SystemExit as exit_:  # --print_config and --help exit after printing
            status = exit_.code or 0
        assert status == 0, f"docs command failed: {command}"


SNIPPET_PAGES = [page for page in PAGES if _blocks(page)]


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=lambda p: p.name)
def test_page_snippets_run(page, tiny_factory_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for language, code in _blocks(page):
        if language == "python":
            exec(compile(DATASET.sub(str(tiny_factory_data), code), str(page), "exec"), namespace)
        else:
            _run_shell(code, tiny_factory_data, tmp_path)


def test_every_docs_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert page.name in index, f"docs/index.md does not link {page.name}"
