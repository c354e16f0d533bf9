"""Every recipe parses (``--print_config``); two of them run a couple of steps in-process on the
package's labelled synthetic data (online probe active).

Every recipe is also run as the user types it, in a subprocess on the user's own folders, by
``tests/journeys/`` (pretraining: test_journey_pretrain.py; finetune: test_journey_readme.py).
"""

from __future__ import annotations

import pytest
import yaml
from _smoke import RECIPES, smoke_overrides

from lit_ssl.cli.main import main

ALL_RECIPES = sorted(RECIPES.glob("*.yaml"))
SSL_HEADS = {
    "simclr",
    "byol",
    "vicreg",
    "barlow_twins",
    "latent_prediction",
    "mae",
    "masked_reconstruction",
    "denoising_autoencoder",
    "hybrid",
    "distill",
}


def test_there_is_a_recipe_per_head_and_the_extra_ones():
    names = {path.stem for path in ALL_RECIPES}
    assert names >= SSL_HEADS
    assert {"finetune", "mvtec_ad", "ddp"} <= names


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.stem)
def test_recipe_parses(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = recipe.read_text()
    assert main(["fit", "--config", str(recipe), "--print_config"] + smoke_overrides(text)) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == yaml.safe_load(text)["model"]["class_path"]


IN_PROCESS = [RECIPES / "vicreg.yaml", RECIPES / "finetune.yaml"]


@pytest.mark.parametrize("recipe", IN_PROCESS, ids=lambda p: p.stem)
def test_recipe_runs_two_steps(recipe, tiny_factory_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = recipe.read_text()
    config = yaml.safe_load(text)
    assert config["model"]["class_path"].startswith("lit_ssl.")
    assert config["data"]["class_path"] == "lit_ssl.data.FactoryDataModule"
    args = ["fit", "--config", str(recipe), f"--data.root={tiny_factory_data}"]
    assert main(args + smoke_overrides(text)) == 0
    run = tmp_path / "runs" / recipe.stem / "version_0"
    assert (run / "config.yaml").is_file(), "the resolved config is saved in the run folder"
    assert (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    exported = list(run.glob("*.safetensors")) + list(run.glob("*.onnx"))
    assert exported, "fit ends by exporting deployable weights into the run folder"
