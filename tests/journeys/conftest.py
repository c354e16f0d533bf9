"""Fixtures of the journey tests: the user's folders, a project folder, and ``lit-ssl`` itself.

Journeys run the documented ``lit-ssl`` commands in a subprocess, in a project folder that holds a
copy of ``recipes/`` (so ``--config recipes/X.yaml`` is typed as the docs write it), with only
the size overrides below. Trees and the README's pretraining run are session-scoped: later
journeys reuse the exported backbone and the fine-tuned classifier instead of training again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import trees

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"

SMALL = [
    "--model.backbone", "test_resnet",
    "--data.image_size", "32",
    "--data.num_workers", "0",
    "--data.batch_size", "8",
    "--trainer.accelerator", "cpu",
    "--trainer.max_steps", "2",
    "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2",
]  # fmt: skip
TIMEOUT_S = 180  # a hang fails the journey instead of blocking the suite


def small(recipe_text: str = "") -> list[str]:
    """SMALL, with a tiny ViT at 32 px for ViT-only heads (MAE) and the teacher's input at 56 px
    (a 4x4 patch grid of the recipe's ViT teacher, not 224 px) for Distillation."""
    if "heads.MAE" in recipe_text:
        return [*SMALL[2:], "--model.backbone", "test_vit", "--model.image_size", "32"]
    if "heads.Distillation" in recipe_text:
        return [*SMALL, "--model.head.init_args.teacher_image_size", "56"]
    return list(SMALL)


@dataclass
class Result:
    """A finished ``lit-ssl`` command."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    cwd: Path | None = None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        tail = "\n".join(self.output.strip().splitlines()[-25:])
        return f"lit-ssl {' '.join(self.args)}\n-> exit {self.returncode}\n{tail}"


def command() -> list[str]:
    """``lit-ssl`` with the interpreter running the tests."""
    return [sys.executable, "-m", "lit_ssl.cli"]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env.update(PYTHONWARNINGS="ignore::DeprecationWarning")
    return env


def run(args: Sequence[str], cwd: Path, timeout: float = TIMEOUT_S) -> Result:
    """Run ``lit-ssl ARGS`` in ``cwd`` and return what it did (no assertion)."""
    try:
        done = subprocess.run(
            [*command(), *args],
            cwd=cwd,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        out = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout or ""
        err = error.stderr.decode() if isinstance(error.stderr, bytes) else error.stderr or ""
        return Result(list(args), -9, out, err + f"\n[timed out after {timeout:.0f} s]", cwd)
    return Result(list(args), done.returncode, done.stdout, done.stderr, cwd)


def lit_ssl(*args: str | Path, cwd: Path, rc: int = 0, timeout: float = TIMEOUT_S) -> Result:
    """Run ``lit-ssl ARGS`` in ``cwd`` and assert its exit code."""
    result = run([str(a) for a in args], cwd, timeout)
    assert result.returncode == rc, result.describe()
    return result


def run_many(
    commands: Sequence[Sequence[str | Path]],
    cwd: Path | None = None,
    cwds: Sequence[Path] | None = None,
    pool: Executor | None = None,
) -> list[Future[Result]]:
    """Start independent commands on ``pool`` (two at a time: start-up is one core's imports).

    Args:
        commands: ``lit-ssl`` arguments of each command.
        cwd: One folder for all of them, or
        cwds: one folder per command.
        pool: The session's pool (``journey_pool``); a private 2-worker pool when None.

    Returns:
        One future per command; ``.result()`` waits for it.
    """
    folders = list(cwds) if cwds is not None else [cwd] * len(commands)
    assert len(folders) == len(commands) and all(folders), "give cwd or one cwd per command"
    executor = pool or ThreadPoolExecutor(2)
    jobs = [
        executor.submit(run, [str(a) for a in c], f) for c, f in zip(commands, folders, strict=True)
    ]
    if pool is None:
        executor.shutdown(wait=False)
    return jobs


@pytest.fixture(scope="session")
def journey_pool():
    """Two commands at a time in the background while a journey's serial chain runs in front."""
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)  # after -x: queued commands never start


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user_data")


@pytest.fixture(scope="session")
def unlabeled(data_dir) -> trees.Tree:
    return trees.write_unlabeled(data_dir / "line3")


@pytest.fixture(scope="session")
def class_folders(data_dir) -> trees.Tree:
    return trees.write_class_folders(data_dir / "line3_labelled")


@pytest.fixture(scope="session")
def mvtec(data_dir) -> trees.Tree:
    return trees.write_mvtec(data_dir / "mvtec_ad" / "bottle")


@pytest.fixture(scope="session")
def visa(data_dir) -> trees.Tree:
    return trees.write_visa(data_dir / "VisA")


@pytest.fixture(scope="session")
def manifest(data_dir) -> trees.Tree:
    return trees.write_csv_manifest(data_dir / "line4")


@pytest.fixture(scope="session")
def new_images(data_dir) -> trees.Tree:
    return trees.write_new_images(data_dir / "incoming")


def make_project(folder: Path) -> Path:
    """A user's project folder: a copy of the shipped recipes, nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(RECIPES, folder / "recipes")
    return folder


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """The shared project folder of the README journey (pretrain -> export -> fine-tune)."""
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def fresh_project(tmp_path) -> Path:
    """A project folder of one journey's own (runs/ starts empty)."""
    return make_project(tmp_path / "project")


def readme_commands(substitutions: dict[str, str]) -> list[list[str]]:
    """The ``lit-ssl`` commands of README.md's "Your own images" block, folders substituted.

    Continuation lines are joined and comments dropped; each ``fit`` and ``predict`` gets the
    size overrides appended (later flags win), nothing else changes.
    """
    text = (REPO / "README.md").read_text()
    section = text.split("## Your own images", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "lit-ssl", f"README command is not lit-ssl: {line}"
        words = [substitutions.get(w, w) for w in words[1:]]
        if words[0] in ("fit", "predict"):
            words += small()
        commands.append(words)
    return commands


@pytest.fixture(scope="session")
def readme_runs(project, unlabeled, class_folders, new_images) -> list[Result]:
    """README "Your own images", in order: pretrain VICReg, export it, fine-tune from it,
    predict on new images."""
    folders = {"/data/line3": str(unlabeled.root), "/data/line3_labelled": str(class_folders.root)}
    folders["/data/line3_new"] = str(new_images.root)
    commands = readme_commands(folders)
    assert [c[0] for c in commands] == ["fit", "export", "fit", "predict"], commands
    return [run(args, project) for args in commands]


@pytest.fixture(scope="session")
def classifier_ckpt(project, readme_runs) -> Path:
    """The fine-tuned classifier of the README journey (fails if that journey failed)."""
    assert readme_runs[2].returncode == 0, readme_runs[2].describe()
    return project / "runs" / "finetune" / "version_0" / "checkpoints" / "last.ckpt"


SSL_RECIPES = sorted(p.stem for p in RECIPES.glob("*.yaml") if "lit_ssl.SSLModule" in p.read_text())
SHARED = {"vicreg": "README journey", "ddp": "DDP journey"}  # pretrained by those journeys


def recipe_text(recipe: str) -> str:
    return (RECIPES / f"{recipe}.yaml").read_text()


@pytest.fixture(scope="session")
def pretrain_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("pretrain_project"))


@pytest.fixture(scope="session")
def pretrained(pretrain_project, unlabeled, mvtec, journey_pool) -> dict[str, Future[Result]]:
    """``lit-ssl fit --config recipes/<recipe>.yaml --data.root DIR`` for every SSL recipe but
    the shared ones, in one project folder, started in the background."""
    recipes = [r for r in SSL_RECIPES if r not in SHARED]
    commands = []
    for recipe in recipes:
        text = recipe_text(recipe)
        root = mvtec.root if "layout: mvtec" in text else unlabeled.root
        commands.append(["fit", "--config", f"recipes/{recipe}.yaml", "--data.root", root])
        commands[-1] += small(text)
    jobs = run_many(commands, pretrain_project, pool=journey_pool)
    return dict(zip(recipes, jobs, strict=True))


@pytest.fixture(scope="session", autouse=True)
def _pretrain_early(request):
    """Start the recipe pretrainings first when their journey is collected (they overlap the
    README chain instead of running after it)."""
    if any(item.path.name == "test_journey_pretrain.py" for item in request.session.items):
        request.getfixturevalue("pretrained")
