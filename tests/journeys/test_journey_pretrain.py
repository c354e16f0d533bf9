"""Pretrain every shipped SSL recipe on the user's unlabeled folder, as the recipe says to run it.

``lit-ssl fit --config recipes/<recipe>.yaml --data.root DIR`` (the recipe's own "Run:" line) with
the size overrides only. ``vicreg`` is the README journey's run (same command); ``ddp`` has its
own journey (2 processes); ``mvtec_ad`` is pointed at the MVTec AD category it is written for.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SSL_RECIPES, recipe_text


def test_every_ssl_recipe_is_covered():
    assert len(SSL_RECIPES) >= 11, SSL_RECIPES
    assert {"vicreg", "mae", "hybrid", "mvtec_ad", "ddp"} <= set(SSL_RECIPES)


@pytest.mark.parametrize("recipe", [r for r in SSL_RECIPES if r != "ddp"])
def test_pretrain_recipe_on_users_folder(recipe, request):
    if recipe == "vicreg":
        result = request.getfixturevalue("readme_runs")[0]
        project = request.getfixturevalue("project")
    else:
        result = request.getfixturevalue("pretrained")[recipe].result()
        project = request.getfixturevalue("pretrain_project")
    assert result.returncode == 0, result.describe()
    folder = project / "runs" / recipe / "version_0"
    checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert (folder / "backbone.safetensors").stat().st_size > 1000
    assert (folder / "config.yaml").is_file(), "the resolved config is saved in the run folder"
    assert (folder / "metrics.csv").stat().st_size > 0
    expected = "test_vit" if "heads.MAE" in recipe_text(recipe) else "test_resnet"
    assert json.loads((folder / "backbone.json").read_text())["name"] == expected
    assert "Traceback" not in result.output, result.describe()
    if "layout: mvtec" not in recipe_text(recipe) and "OnlineProbe" in recipe_text(recipe):
        said = [line for line in result.output.splitlines() if "OnlineProbe" in line]
        assert len(said) == 1, f"the idle online probe should say so once, said: {said}"
