"""``lit-ssl quickstart``: fair baselines, seed statistics, anomaly block (the --fast run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lit_ssl.cli.quickstart import (
    ANOMALY_RANDOM,
    ANOMALY_SSL,
    FLOOR,
    SCRATCH,
    SSL,
    BestValidation,
    QuickstartConfig,
    beyond_spread,
    run_quickstart,
    spread,
    tables,
)


def test_spread_and_beyond_spread_follow_the_paired_differences():
    assert spread([0.8]) == "0.800"
    assert spread([0.7, 0.9, 0.8]) == "0.800 [0.700, 0.900]"
    assert beyond_spread([0.9], [0.5]) == "n/a (1 seed)"
    assert beyond_spread([0.90, 0.91, 0.92], [0.60, 0.61, 0.62]) == "yes"
    assert beyond_spread([0.90, 0.60, 0.92], [0.60, 0.61, 0.62]) == "no"  # one seed flips
    assert beyond_spread([0.70, 0.90], [0.60, 0.70]) == "no"  # gap 0.15 < row range 0.2


def test_best_validation_restores_the_best_epochs_weights_and_threshold():
    module = torch.nn.Linear(2, 1)
    module.register_buffer("threshold", torch.tensor(0.5))
    best = BestValidation()
    for epoch, auroc in enumerate([0.6, 0.9, 0.7]):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
            module.threshold.fill_(epoch / 10)
        trainer = SimpleNamespace(
            sanity_checking=False, current_epoch=epoch, callback_metrics={"val/auroc": auroc}
        )
        best.on_validation_end(trainer, module)
    best.on_fit_end(trainer, module)
    assert best.best_epoch == 1
    assert torch.all(module.weight == 1.0) and float(module.threshold) == pytest.approx(0.1)


def test_tables_pair_each_row_with_the_ssl_row():
    row = {"auroc": 0.9, "average_precision": 0.9, "defect_f1": 0.8}
    row |= {"defect_recall": 0.8, "defect_precision": 0.8, "threshold": 0.5}
    seeds = [{SSL: dict(row), SCRATCH: row | {"auroc": 0.7 + i / 100}} for i in range(3)]
    for i, s in enumerate(seeds):
        s[SSL]["auroc"] = 0.9 + i / 100
        s[ANOMALY_SSL] = {"image_auroc": 0.8, "pixel_auroc": 0.9}
        s[ANOMALY_RANDOM] = {"image_auroc": 0.6, "pixel_auroc": 0.9}
    text = tables(seeds)
    assert "| supervised from scratch − SSL | -0.200 [-0.200, -0.200] | yes |" in text
    assert "0.910 [0.900, 0.920]" in text
    assert "-0.200 [-0.200, -0.200] (beyond seed spread: yes)" in text  # anomaly, image AUROC


def test_quickstart_fast_runs_every_baseline_and_the_anomaly_block(
    tiny_factory_data, tmp_path, capsys
):
    folder, root = str(tmp_path / "qs"), str(tiny_factory_data)
    cfg = QuickstartConfig.fast(output=folder, root=root, ssl_epochs=1)
    rows = run_quickstart(cfg)
    assert list(rows) == [SSL, SCRATCH, FLOOR, ANOMALY_SSL, ANOMALY_RANDOM]
    for name in (SSL, SCRATCH, FLOOR):
        (metrics,) = rows[name]
        assert 0.0 <= metrics["auroc"] <= 1.0 and 0.0 <= metrics["defect_recall"] <= 1.0
        assert metrics["best_epoch"] in {0.0, 1.0}  # the fast budget: at most 2 epochs
    assert Path(rows[SSL][0]["onnx"]).is_file()
    for name in (ANOMALY_SSL, ANOMALY_RANDOM):
        assert 0.0 <= rows[name][0]["image_auroc"] <= 1.0
        assert 0.0 <= rows[name][0]["pixel_auroc"] <= 1.0  # the synthetic data has masks
    printed = capsys.readouterr().out
    assert f"| {SCRATCH} − SSL |" in printed and "n/a (1 seed)" in printed
    results = (tmp_path / "qs" / "results.md").read_text()
    assert f"| {FLOOR} |" in results and "anomaly detection" in results
    assert (tmp_path / "qs" / "pretrain" / "backbone.safetensors").is_file()


def test_missing_weights_file_fails_before_any_training(tmp_path):
    cfg = QuickstartConfig.fast(output=str(tmp_path / "qs"), weights=str(tmp_path / "no.pth"))
    with pytest.raises(FileNotFoundError, match="--weights"):
        run_quickstart(cfg)
    assert not (tmp_path / "qs").exists()
