"""A recipe run unchanged gets bf16-mixed on a CUDA machine and 32-true on CPU; the user wins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lit_ssl.cli.main import main
from lit_ssl.cli.precision import auto_precision, cpu_precision

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "vicreg.yaml")


def _printed_precision(args: list[str], capsys) -> object:
    assert main(["fit", "--config", RECIPE, *args, "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)["trainer"]["precision"]


def _fake_cuda(monkeypatch, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_a_shipped_recipe_on_cuda_gets_bf16_mixed_and_print_config_shows_it(monkeypatch, capsys):
    _fake_cuda(monkeypatch)
    assert _printed_precision([], capsys) == "bf16-mixed"


def test_on_cpu_the_same_recipe_stays_float32(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _printed_precision([], capsys) == "32-true"


def test_the_users_precision_always_wins(monkeypatch, capsys):
    _fake_cuda(monkeypatch)
    assert _printed_precision(["--trainer.precision", "32"], capsys) in (32, "32")


def test_the_gpu_default_falls_back_to_float32_on_a_cpu_run(monkeypatch):
    _fake_cuda(monkeypatch, bf16=False)
    assert auto_precision() == "16-mixed"
    assert cpu_precision("16-mixed", "cpu", explicit=False) == "32-true"
    assert cpu_precision("16-mixed", "cpu", explicit=True) == "16-mixed"  # asked for: kept
    assert cpu_precision("16-mixed", "auto", explicit=False) == "16-mixed"


@pytest.mark.parametrize("recipe", sorted((Path(RECIPE).parent).glob("*.yaml")))
def test_no_recipe_pins_float32(recipe):
    trainer = yaml.safe_load(recipe.read_text()).get("trainer", {}) or {}
    assert trainer.get("precision") not in (32, "32", "32-true"), recipe.name
