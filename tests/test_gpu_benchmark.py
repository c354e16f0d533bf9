"""benchmarks/gpu.py without a GPU: it refuses cleanly; its tables have the documented form."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("gpu")


def test_without_cuda_it_says_so_in_one_line_and_exits_2(gpu, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    output = tmp_path / "gpu.md"
    assert gpu.main(["--output", str(output)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "needs a CUDA GPU" in captured.err
    assert not output.exists(), "nothing measured, nothing written"


def test_tables_have_the_documented_columns(gpu):
    measured = {"head": "VICReg", "mode": "eager", "note": "", "ips": 1200.0}
    measured |= {"backbone_ips": 1500.0, "ratio": 0.8, "peak_gib": 20.5}
    measured["backbone_peak_gib"] = 15.0
    skipped = {"head": "MAE", "mode": "compiled", "note": "skipped: time budget (--budget-s)"}
    lines = gpu.head_table([measured, skipped]).splitlines()
    assert lines[0].startswith("| head | mode | images/s | backbone images/s | head / backbone")
    assert lines[2] == "| VICReg | eager | 1200 | 1500 | 0.80 (below) | 20.5 | 15.0 | |"
    assert lines[3].startswith("| MAE | compiled | — |") and "time budget" in lines[3]
    loader = gpu.loader_table([{"cache": "disk", "ips": 2400.0}], 1200.0, 8).splitlines()
    assert loader[2] == "| disk | 8 | 2400 | 1200 | 2.00 |"


def test_the_real_path_table_compares_the_cli_objects_with_the_bare_step(gpu):
    row = {"backbone": "resnet50", "data": "tiff", "cache": True, "augment_on": "device"}
    row |= {"precision": "bf16-mixed", "ips": 1955.0, "bare_ips": 2300.0, "data_wait": 0.04}
    lines = gpu.real_table([row]).splitlines()
    assert lines[0].startswith("| backbone | frames | cache | augment_on | precision |")
    cells = "| resnet50 | 2048² 16-bit TIFF | memory | device | bf16-mixed | 1955 | 2300 |"
    assert lines[2] == cells + " 0.85 | 0.04 |"


def test_the_real_path_runs_the_recipes_own_objects_on_cpu(gpu, tmp_path):
    import real_path

    folder = real_path.write_pngs(tmp_path / "png", count=4, size=64)
    case = real_path.Case("test_resnet", "png", cache=True, augment_on="device")
    settings = {"image_size": 32, "batch_size": 4, "workers": 0, "warmup": 1, "steps": 2}
    settings |= {"in_chans": 3, "accelerator": "cpu"}
    measured = real_path.real_rate(case, folder, settings, tmp_path / "work")
    assert measured["ips"] > 0 and measured["precision"] == "32-true"
    assert 0.0 <= measured["data_wait"] < 1.0
    assert (tmp_path / "work" / "runs" / "real_path" / "version_0" / "metrics.csv").is_file()
