"""Per-defect-type evidence: recall at the threshold and AUROC against good, per type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lit_ssl.per_type import PerTypeEvidence, TypeEvidence, callouts


def test_each_type_gets_its_recall_and_auroc_against_good():
    evidence = PerTypeEvidence(["good", "crack", "scratch", "hole"])
    scores = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.8, 0.25, 0.15, 0.6])
    types = torch.tensor([0, 0, 0, 1, 1, 2, 2, -1])  # -1: unknown type, left out
    evidence.update(scores[:4], scores[:4] > 0.5, types[:4])  # two batches
    evidence.update(scores[4:], scores[4:] > 0.5, types[4:])
    result = evidence.compute()
    assert set(result) == {"crack", "scratch"}  # no hole in the test set: no row
    assert result["crack"] == TypeEvidence(images=2, caught=2, auroc=1.0)
    assert result["scratch"].caught == 0 and result["scratch"].recall == 0.0
    # scratch scores 0.25, 0.15 against good 0.1, 0.2, 0.3: 3 of 6 pairs ranked right
    assert result["scratch"].auroc == pytest.approx(0.5)


def test_a_type_caught_less_than_half_the_time_is_called_out_in_one_line():
    lines = callouts(
        {
            "scratch": TypeEvidence(images=8, caught=0, auroc=0.57),
            "crack": TypeEvidence(images=8, caught=7, auroc=0.99),
            "spot": TypeEvidence(images=4, caught=2, auroc=None),  # exactly half: not called
        }
    )
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("defect type 'scratch': caught in 0 of 8 test images")
    assert "AUROC against good 0.57" in lines[0]


def test_without_good_images_the_auroc_is_none_not_a_made_up_number():
    evidence = PerTypeEvidence(["ok", "dent"])
    evidence.update(torch.tensor([0.7, 0.2]), torch.tensor([True, False]), torch.tensor([1, 1]))
    assert evidence.compute() == {"dent": TypeEvidence(images=2, caught=1, auroc=None)}


def test_good_index_must_name_a_class():
    with pytest.raises(ValueError, match="good_index=3"):
        PerTypeEvidence(["good", "dent"], good_index=3)


def test_binary_test_batches_keep_each_images_defect_type(tiny_factory_data):

    from lit_ssl.data import FactoryDataModule

    data = FactoryDataModule(
        root=str(tiny_factory_data), task="classify", binary=True, image_size=32, num_workers=0
    )
    data.setup("test")
    assert data.class_names == ["good", "defect"]
    assert data.type_names[0] == "good" and "scratch" in data.type_names
    batch = next(iter(data.test_dataloader()))
    names = [data.type_names[t] for t in batch.types.tolist()]
    assert names == [Path(p).parent.name for p in batch.paths]  # test/<type>/x.png
    assert (batch.labels == (batch.types != 0).long()).all()
    assert next(iter(data.train_dataloader())).types is None  # training batches carry none


ANOMALY = Path(__file__).resolve().parents[1] / "recipes" / "anomaly.yaml"
TINY = ["--config", str(ANOMALY), "--model.backbone", "test_resnet", "--data.image_size", "32"]
TINY += ["--data.num_workers", "0", "--trainer.accelerator", "cpu"]


def test_detector_test_reports_every_mvtec_defect_type_in_metrics_csv(tmp_path, capsys):
    from cli_runs import run_lit_ssl

    from lit_ssl.data import write_synthetic_dataset

    write_synthetic_dataset(
        tmp_path / "mv", image_size=32, n_train=8, n_test_good=4, n_per_defect=2, seed=0
    )
    (tmp_path / "mv" / "synthetic.json").unlink()  # a user's MVTec tree: its split is kept
    run_lit_ssl(["fit", *TINY, "--data.root", "mv"], tmp_path)
    ckpt = "runs/anomaly/version_0/checkpoints/last.ckpt"
    run_lit_ssl(["test", *TINY, "--data.root", "mv", "--ckpt_path", ckpt], tmp_path, capsys)
    types = ("scratch", "crack", "spot", "hole", "contamination")
    # Lightning's results table goes to whatever stdout its console captured first (under
    # xdist another test's): metrics.csv is what this run certainly wrote
    metrics = tmp_path / "runs" / "anomaly" / "version_1" / "metrics.csv"  # the test run
    header = set(metrics.read_text().splitlines()[0].split(","))
    assert {f"test/defect_recall_at_threshold/{name}" for name in types} <= header
    assert {f"test/auroc_vs_good/{name}" for name in types} <= header


def test_a_type_caught_less_than_half_the_time_is_called_out_after_test(tiny_factory_data, caplog):
    import lightning as L

    from lit_ssl.anomaly import AnomalyDetector
    from lit_ssl.data import FactoryDataModule

    data = FactoryDataModule(root=str(tiny_factory_data), task="anomaly", image_size=32)
    data.hparams.num_workers = 0
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5, save_figures=False)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(detector, datamodule=data)
    detector.threshold.fill_(1e6)  # flags nothing: every type has recall 0
    with caplog.at_level("WARNING", logger="lit_ssl.per_type"):
        results = trainer.test(detector, datamodule=data, verbose=False)[0]
    assert results["test/defect_recall_at_threshold/scratch"] == 0.0
    called = [r.getMessage() for r in caplog.records if r.name == "lit_ssl.per_type"]
    assert len(called) == 5 and all("\n" not in line for line in called)
    assert any(re.match(r"defect type 'scratch': caught in 0 of \d+ test", x) for x in called)


def test_compute_after_the_states_were_synced_into_tensors():
    """Under DDP torchmetrics turns the list states into one gathered tensor each."""
    evidence = PerTypeEvidence(["good", "dent"])
    evidence.scores = torch.tensor([0.1, 0.9, 0.2, 0.5])
    evidence.flagged = torch.tensor([False, True, False, False])
    evidence.types = torch.tensor([0, 1, 1, 0])
    assert evidence.compute() == {"dent": TypeEvidence(images=2, caught=1, auroc=0.75)}
