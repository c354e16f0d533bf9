"""The lit-ssl command: tools and the run folder (errors: test_cli_errors.py)."""

from __future__ import annotations

import json
from pathlib import Path

from _smoke import RECIPES, smoke_overrides

from lit_ssl.cli.main import main, recipe_name


def _fit(recipe: str, data_root: Path, *extra: str) -> None:
    path = RECIPES / f"{recipe}.yaml"
    args = ["fit", "--config", str(path), f"--data.root={data_root}"]
    assert main(args + smoke_overrides(path.read_text()) + list(extra)) == 0


def test_recipe_name_is_the_config_stem():
    assert recipe_name(["fit", "--config", "recipes/byol.yaml"]) == "byol"
    assert recipe_name(["fit", "--config=x/vicreg.yaml", "--trainer.max_epochs", "3"]) == "vicreg"
    assert recipe_name(["fit"]) == "default"


def test_export_synth_and_preview(tiny_factory_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("simclr", tiny_factory_data)
    checkpoint = tmp_path / "runs" / "simclr" / "version_0" / "checkpoints" / "last.ckpt"
    assert main(["export", str(checkpoint), "--output", "out/backbone.safetensors"]) == 0
    config = json.loads((tmp_path / "out" / "backbone.json").read_text())
    assert config["name"] == "test_resnet"

    synth_args = ["synth", "synth_out", "--image-size", "32", "--n-train", "4"]
    synth_args += ["--n-test-good", "2", "--n-per-defect", "1", "--nuisance", "1.0"]
    assert main(synth_args) == 0
    info = json.loads((tmp_path / "synth_out" / "synthetic.json").read_text())
    assert info["nuisance"] == 1.0
    assert len(list((tmp_path / "synth_out" / "train" / "good").glob("*.png"))) == 4

    image = next((tiny_factory_data / "test" / "scratch").glob("*.png"))
    args = ["preview", "--image", str(image), "--policy", "surface", "--views", "4"]
    assert main(args + ["--image-size", "32", "--output", "preview.png"]) == 0
    assert (tmp_path / "preview.png").stat().st_size > 1000
