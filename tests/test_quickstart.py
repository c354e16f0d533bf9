"""``lit-ssl quickstart``: fair baselines, seed statistics, anomaly block (the --fast run)."""

from __future__ import annotations

import os
import subprocess
import sys
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


NOISE = (
    "Tip:",  # Lightning's litlogger advertisement
    "eval mode",
    "Deprecat",
    "deprecated",
    "no optimizer",
    "will override existing callbacks",
    "GPU available",
)


def test_quickstart_fast_runs_every_baseline_and_the_anomaly_block_quietly(
    tiny_factory_data, tmp_path
):
    """``lit-ssl quickstart --fast`` as a user types it: every row, and no Lightning noise."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    command = [sys.executable, "-m", "lit_ssl.cli", "quickstart", "--fast"]
    command += ["--output", "qs", "--root", str(tiny_factory_data)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert [noise for noise in NOISE if noise in output] == [], output[-3000:]
    assert done.stderr.strip() == "", done.stderr[-3000:]  # stderr: real problems only
    results = (tmp_path / "qs" / "results.md").read_text()
    for name in (SSL, SCRATCH, FLOOR):
        row = next(line for line in results.splitlines() if line.startswith(f"| {name} |"))
        assert row.split("|")[-2].strip() in {"0", "1"}  # best epoch within the 2-epoch budget
    assert f"| {SCRATCH} − SSL |" in done.stdout and "n/a (1 seed)" in done.stdout
    assert f"| {ANOMALY_SSL} |" in results and f"| {ANOMALY_RANDOM} |" in results
    assert "| recall at the threshold, per defect type | " in results  # every type's column
    assert "anomaly image AUROC against good, per defect type" in results
    assert (tmp_path / "qs" / "pretrain" / "backbone.safetensors").is_file()
    assert (tmp_path / "qs" / "finetune_ssl" / "classifier.onnx").is_file()


def test_unknown_subcommand_and_help_list_every_subcommand(capsys):
    from lit_ssl.cli.main import main

    assert main(["bogus"]) == 2
    err = capsys.readouterr().err
    assert "'bogus' is not a lit-ssl subcommand" in err
    for name in ("fit", "predict", "export", "quickstart", "diagnose", "synth", "preview"):
        assert name in err
    assert main(["--help"]) == 0
    assert "Subcommands: fit, validate, test, predict, diagnose, export" in capsys.readouterr().out


def test_quiet_filter_drops_lightnings_noise_and_keeps_the_rest():
    import logging

    from lit_ssl.cli.quiet import _DropNoise

    def shown(message: str) -> bool:
        record = logging.LogRecord("lightning.pytorch.x", logging.INFO, "", 0, message, (), None)
        return bool(_DropNoise().filter(record))

    assert not shown("💡 Tip: For seamless cloud logging, try installing litlogger")
    assert not shown("GPU available: False, used: False")
    assert shown("Restoring states from the checkpoint path at last.ckpt")


def test_missing_weights_file_fails_before_any_training(tmp_path):
    cfg = QuickstartConfig.fast(output=str(tmp_path / "qs"), weights=str(tmp_path / "no.pth"))
    with pytest.raises(FileNotFoundError, match="--weights"):
        run_quickstart(cfg)
    assert not (tmp_path / "qs").exists()
