"""Overrides that turn any recipe or documented `lit-ssl` command into a seconds-long run."""

from __future__ import annotations

from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.max_steps=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
]
DATA = ["--data.image_size=32", "--data.batch_size=8", "--data.num_workers=0"]
# The smallest fit a CLI test can start: tiny backbone, 32 px, CPU, no progress bar.
TINY = [
    "--model.backbone=test_resnet",
    *DATA,
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
]


# Distillation: the recipe's teacher at a 56 px input (a 4x4 patch grid) instead of 224 px.
SMALL_TEACHER = ["--model.head.init_args.teacher_image_size=56"]


def smoke_overrides(recipe_text: str) -> list[str]:
    """Tiny backbone, 32 px, 2 steps on CPU; a ViT for ViT-only heads (MAE); a small teacher
    input for Distillation."""
    if "heads.MAE" in recipe_text:
        model = ["--model.backbone=test_vit", "--model.image_size=32"]
    else:
        model = ["--model.backbone=test_resnet"]
    if "heads.Distillation" in recipe_text:
        model += SMALL_TEACHER
    if "sync_batchnorm: true" in recipe_text:
        model.append("--trainer.sync_batchnorm=false")  # SyncBatchNorm needs CUDA modules
    return TRAINER + DATA + model
