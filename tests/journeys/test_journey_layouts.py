"""Fine-tune from the exported backbone on each labelled layout a user brings.

``lit-ssl fit --config recipes/finetune.yaml --data.root ROOT --model.weights BACKBONE``: an MVTec
AD category and a VisA root (their train splits hold only good images, so a classifier needs
``--data.resplit true``, which the error without it says), and a CSV manifest with its own split.
"""

from __future__ import annotations

import pytest
import torch
from conftest import Result, make_project, run_many, small

BACKBONE = "runs/vicreg/version_0/backbone.safetensors"


@pytest.fixture(scope="session")
def finetuned(project, readme_runs, mvtec, visa, manifest, journey_pool) -> dict[str, Result]:
    """Each layout's fine-tune in a project of its own (with the README's backbone), 2 at a time."""
    assert readme_runs[1].returncode == 0, readme_runs[1].describe()
    jobs = {
        "mvtec": [mvtec.root, "--data.resplit", "true"],
        "visa": [visa.root, "--data.resplit", "true"],
        "csv": [manifest.root],
        "mvtec_without_resplit": [mvtec.root],
    }
    commands, folders = [], {}
    for name, (root, *extra) in jobs.items():
        folders[name] = make_project(project.parent / f"layout_{name}")
        weights = project / BACKBONE
        commands.append(
            ["fit", "--config", "recipes/finetune.yaml", "--data.root", str(root), *extra]
            + ["--model.weights", str(weights), *small()]
        )
    started = run_many(commands, cwds=[folders[n] for n in jobs], pool=journey_pool)
    return {name: job.result() for name, job in zip(jobs, started, strict=True)}


@pytest.mark.parametrize("layout", ["mvtec", "visa", "csv"])
def test_finetune_from_the_exported_backbone(layout, finetuned):
    result = finetuned[layout]
    assert result.returncode == 0, result.describe()
    run = result.cwd / "runs" / "finetune" / "version_0"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert (run / "classifier.onnx").stat().st_size > 1000


def test_csv_manifest_split_is_kept(finetuned, manifest):
    result = finetuned["csv"]
    assert result.returncode == 0, result.describe()
    assert "resplit=True" not in result.output  # the user's own split column, not a re-split


def test_mvtec_classifier_without_resplit_says_what_to_do(finetuned):
    result = finetuned["mvtec_without_resplit"]
    assert result.returncode == 2, result.describe()
    assert "--data.resplit true" in result.stderr, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert "usage:" not in result.stderr, result.describe()
    assert len(result.stderr.strip().splitlines()) <= 10, result.describe()
    assert not list((result.cwd / "runs").glob("*/version_*")), "a failed run left a folder"
