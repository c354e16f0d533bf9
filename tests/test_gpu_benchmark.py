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
