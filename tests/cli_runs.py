"""``lit-ssl`` run in-process on folders a test writes (the journeys type the same commands in a
subprocess): shared by test_predict, test_export_classifier and the ``finetuned`` fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_ssl.cli.main import main

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "finetune.yaml"
SIZE = ["--data.image_size", "32", "--data.num_workers", "0", "--trainer.accelerator", "cpu"]
FIT = [
    "--model.backbone",
    "test_resnet",
    "--trainer.max_steps",
    "2",
    "--trainer.max_epochs",
    "1",
    "--data.batch_size",
    "8",
]


def run_lit_ssl(args: list[str], cwd: Path, capsys: pytest.CaptureFixture | None = None) -> str:
    """``lit-ssl ARGS`` in ``cwd``, in this process (the journeys run it as a subprocess);
    asserts exit 0 and returns what it printed when ``capsys`` is given."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        code = main(args)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    assert code == 0, out[-3000:] + err[-3000:]
    return out + err


def write_png(path: Path, rng: np.random.Generator, defect: bool = False) -> None:
    image = (rng.random((32, 32, 3)) * 120 + 60).astype(np.uint8)
    if defect:
        image[12:15, 4:28] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_class_folders(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, count in (("good", 24), ("scratch", 16)):
        for i in range(count):
            write_png(root / name / f"{i:02d}.png", rng, defect=name == "scratch")
    return root
