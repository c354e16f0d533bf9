"""Distil a foundation model into the line's own backbone, then fine-tune the student.

The user has the teacher's weights as a file (here: a timm ``vit_small_patch14_dinov2`` state dict
in safetensors, randomly initialised: there are no downloadable weights on test machines) and
types the command of docs/choosing_a_head.md and recipes/distill.yaml:
``lit-ssl fit --config recipes/distill.yaml --data.root DIR --model.head.teacher_weights FILE``,
resumes it with ``--ckpt_path last``, and fine-tunes a classifier from the exported student with
``lit-ssl fit --config recipes/finetune.yaml --model.weights runs/distill/version_0/...``.
"""

from __future__ import annotations

import json

import timm
import torch
from conftest import lit_ssl, recipe_text, small
from safetensors.torch import load_file, save_file

DISTILL = ["fit", "--config", "recipes/distill.yaml"]
EXPORTED = "runs/distill/version_0/backbone.safetensors"


def test_distill_then_finetune_the_student(fresh_project, unlabeled, class_folders):
    torch.manual_seed(0)
    teacher = timm.create_model("vit_small_patch14_dinov2", num_classes=0)  # the recipe's teacher
    teacher_file = fresh_project / "dinov2_vits14.safetensors"
    save_file(teacher.state_dict(), str(teacher_file))
    sizes = small(recipe_text("distill"))

    args = [*DISTILL, "--data.root", unlabeled.root]
    args += ["--model.head.teacher_weights", teacher_file.name, *sizes]
    result = lit_ssl(*args, cwd=fresh_project)
    assert "Traceback" not in result.output, result.describe()
    assert "randomly initialised" not in result.output, "the teacher came from the file"
    run = fresh_project / "runs" / "distill" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    assert not [k for k in checkpoint["state_dict"] if ".teacher." in k], "teacher not saved"
    assert last.stat().st_size < teacher_file.stat().st_size, "checkpoints hold the student"

    exported = fresh_project / EXPORTED
    assert json.loads(exported.with_suffix(".json").read_text())["name"] == "test_resnet"
    student_keys = set(load_file(exported))
    assert not [k for k in student_keys if "blocks." in k], "the export is the student alone"

    resumed = lit_ssl(*args, "--trainer.max_steps", "3", "--ckpt_path", "last", cwd=fresh_project)
    assert "Restored all states from the checkpoint" in resumed.output, resumed.describe()
    assert torch.load(last, weights_only=True)["global_step"] == 3

    finetune = ["fit", "--config", "recipes/finetune.yaml", "--data.root", class_folders.root]
    tuned = lit_ssl(*finetune, "--model.weights", EXPORTED, *small(), cwd=fresh_project)
    assert "Traceback" not in tuned.output, tuned.describe()
    classifier = fresh_project / "runs" / "finetune" / "version_0"
    assert (
        torch.load(classifier / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    )
    assert (classifier / "classifier.onnx").stat().st_size > 1000
