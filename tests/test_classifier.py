"""DefectClassifier: SSL weights in, fine-tuning, class weights, thresholds, predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _defect_data import (
    BINARY,
    CLASSES,
    ClassifyDataset,
    SSLDataset,
    UncountedDataset,
    loader,
    trainer_kwargs,
)

import lit_ssl.classify.thresholds as thresholds_module
from lit_ssl import SSLModule
from lit_ssl.callbacks import DefectFinetuning
from lit_ssl.classify.classifier import DefectClassifier, balanced_class_weights, focal_loss
from lit_ssl.classify.predictions import PredictionsCSVWriter, write_predictions_csv
from lit_ssl.heads import VICReg

FRACTIONS = [0.5, 0.25, 0.25]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """SSLModule pretrained for 2 steps; its exported backbone and its checkpoint.

    A GroupNorm backbone: with BatchNorm, 2 SSL steps leave running statistics far from
    the data, and the few fine-tuning steps a fast test affords are dominated by the
    train/eval statistics mismatch (BatchNorm handling is tested in test_finetune.py).
    """
    root = tmp_path_factory.mktemp("ssl")
    L.seed_everything(0)
    ssl = SSLModule("test_efficientnet_gn", head=VICReg(hidden_dim=64, out_dim=64))
    trainer = L.Trainer(max_steps=2, **trainer_kwargs(root))
    trainer.fit(ssl, loader(SSLDataset(64), shuffle=True))
    ckpt = root / "ssl.ckpt"
    trainer.save_checkpoint(ckpt)
    weights = ssl.export_backbone(root / "backbone.safetensors")
    return ssl, weights, ckpt


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pretrain_export_finetune_beats_chance(pretrained, tmp_path):
    ssl, weights, _ = pretrained
    L.seed_everything(0)
    clf = DefectClassifier(weights=str(weights), class_names=CLASSES, lr=1e-2)
    assert clf.backbone.name == "test_efficientnet_gn"  # architecture read from the json
    assert _same_state(clf.backbone, ssl.backbone)
    finetuning = DefectFinetuning(unfreeze_at_epoch=1, backbone_lr_factor=0.1)
    trainer = L.Trainer(max_epochs=6, callbacks=[finetuning], **trainer_kwargs(tmp_path))
    trainer.fit(
        clf,
        loader(ClassifyDataset(192, FRACTIONS, seed=1), shuffle=True),
        loader(ClassifyDataset(96, FRACTIONS, seed=2)),
    )
    assert bool(clf.threshold_from_validation)
    test_data = ClassifyDataset(96, FRACTIONS, seed=3, with_paths=True)
    results = trainer.test(clf, loader(test_data), verbose=False)[0]
    print({k: round(v, 3) for k, v in results.items()})
    assert results["test/auroc"] > 0.9  # chance is 0.5
    assert results["test/average_precision"] > 0.8  # chance is 0.5
    assert results["test/defect_recall_at_threshold"] > 0.8  # target 0.99 on validation
    assert results["test/threshold"] == pytest.approx(float(clf.threshold))
    for name in CLASSES:
        assert f"test/recall_at_threshold/{name}" in results
    for stage in ("val", "test"):
        assert (tmp_path / "figures" / f"{stage}_confusion_matrix.png").stat().st_size > 0
        assert (tmp_path / "figures" / f"{stage}_roc.png").stat().st_size > 0


def test_weights_must_match_requested_architecture(pretrained, tmp_path):
    _, weights, ckpt = pretrained
    with pytest.raises(ValueError, match="backbone='resnet18'.*test_efficientnet_gn"):
        DefectClassifier("resnet18", weights=str(weights))
    with pytest.raises(ValueError, match="in_chans=1"):
        DefectClassifier(weights=str(weights), in_chans=1)
    with pytest.raises(ValueError, match="backbone='resnet18'"):
        DefectClassifier("resnet18", weights=str(ckpt))
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(weights.read_bytes())  # no json next to it
    with pytest.raises(FileNotFoundError, match="json"):
        DefectClassifier(weights=str(bare))
    plain = DefectClassifier("test_efficientnet_gn", weights=str(bare))
    assert plain.backbone.name == "test_efficientnet_gn"


def test_from_ssl_checkpoint_and_module(pretrained):
    ssl, _, ckpt = pretrained
    from_ckpt = DefectClassifier.from_ssl(ckpt, class_names=BINARY)
    assert from_ckpt.backbone.name == "test_efficientnet_gn"
    assert _same_state(from_ckpt.backbone, ssl.backbone)
    from_module = DefectClassifier.from_ssl(ssl, class_names=CLASSES, head="mlp")
    assert _same_state(from_module.backbone, ssl.backbone)
    assert from_module.backbone is not ssl.backbone  # a copy: fine-tuning leaves SSL intact
    assert from_module.hparams.class_names == CLASSES
    with pytest.raises(TypeError, match="SSLModule"):
        DefectClassifier.from_ssl(torch.nn.Linear(2, 2))


def test_checkpoint_reloads_from_hparams_alone(tmp_path):
    clf = DefectClassifier(
        "test_resnet", class_names=CLASSES, head="mlp", loss="focal", label_smoothing=0.1
    )
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=2, **trainer_kwargs(tmp_path)
    )
    trainer.fit(
        clf,
        loader(ClassifyDataset(64, FRACTIONS, seed=1)),
        loader(ClassifyDataset(64, FRACTIONS, seed=2)),
    )
    path = tmp_path / "clf.ckpt"
    trainer.save_checkpoint(path)
    reloaded = DefectClassifier.load_from_checkpoint(path)
    assert reloaded.class_names == CLASSES and reloaded.hparams.head == "mlp"
    assert float(reloaded.threshold) == float(clf.threshold)
    assert bool(reloaded.threshold_from_validation)
    assert reloaded.input_size.tolist() == [32, 32]
    images = torch.rand(4, 3, 32, 32)
    clf.eval()
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.predict_scores(images), clf.predict_scores(images))


def _defect_recall_at_argmax(clf: DefectClassifier, data: ClassifyDataset) -> float:
    clf.eval()
    with torch.no_grad():
        preds = clf(data.images).argmax(dim=1)
    defects = data.labels != clf.good_index
    return float((preds[defects] != clf.good_index).float().mean())


def test_balanced_weights_improve_defect_recall_on_imbalanced_data(tmp_path):
    # faint defects: classes overlap, so the decision boundary depends on the class prior
    train = ClassifyDataset(200, [0.95, 0.05], seed=4, binary=True, strength=0.2)  # 10 defects
    evaluation = ClassifyDataset(100, [0.5, 0.5], seed=5, binary=True, strength=0.2)
    recalls = {}
    for weighting in ("balanced", "none"):
        L.seed_everything(0)
        clf = DefectClassifier("test_resnet", class_names=BINARY, class_weights=weighting, lr=5e-2)
        # counts by one pass over the loader when the data exposes no labels/class_counts
        data = UncountedDataset(train) if weighting == "balanced" else train
        trainer = L.Trainer(
            max_epochs=3,
            limit_val_batches=0,
            callbacks=[DefectFinetuning(unfreeze_at_epoch=100)],  # linear probe: fast
            **trainer_kwargs(tmp_path),
        )
        trainer.fit(clf, loader(data, shuffle=True))
        recalls[weighting] = _defect_recall_at_argmax(clf, evaluation)
        if weighting == "balanced":
            expected = torch.tensor([200 / (2 * 190), 200 / (2 * 10)])
            torch.testing.assert_close(clf.class_weights, expected)
    print(recalls)
    assert recalls["balanced"] >= recalls["none"] + 0.2


def test_threshold_is_chosen_on_validation_never_on_test(tmp_path, monkeypatch):
    stages = []
    real = thresholds_module.select_threshold

    def spy(scores, targets, *args, **kwargs):
        stages.append((trainer.state.stage.value, scores.numel()))
        return real(scores, targets, *args, **kwargs)

    monkeypatch.setattr(thresholds_module, "select_threshold", spy)
    clf = DefectClassifier("test_resnet", class_names=BINARY, threshold_mode="f1")
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, **trainer_kwargs(tmp_path))
    val = ClassifyDataset(48, [0.5, 0.5], seed=2, binary=True)
    trainer.fit(clf, loader(ClassifyDataset(64, [0.5, 0.5], seed=1, binary=True)), loader(val))
    assert stages == [("validate", 48)]
    threshold = float(clf.threshold)
    # a test split with a very different score distribution (all defects, brighter)
    test = ClassifyDataset(40, [0.0, 1.0], seed=3, binary=True, strength=1.0, with_paths=True)
    results = trainer.test(clf, loader(test), verbose=False)[0]
    assert stages == [("validate", 48)]  # not called again
    assert float(clf.threshold) == threshold
    assert clf.state_dict()["threshold"].item() == threshold
    assert results["test/threshold"] == pytest.approx(threshold)


def test_predict_rows_and_csv(tmp_path):
    clf = DefectClassifier("test_resnet", class_names=CLASSES, default_threshold=0.5).eval()
    data = ClassifyDataset(20, FRACTIONS, seed=6, with_paths=True)
    path = tmp_path / "out" / "predictions.csv"
    trainer = L.Trainer(callbacks=[PredictionsCSVWriter(path)], **trainer_kwargs(tmp_path))
    predictions = trainer.predict(clf, loader(data, batch_size=8))
    rows = [row for batch in predictions for row in batch]
    assert len(rows) == 20
    assert {"path", "defect_score", "predicted_class", "is_defect", "label"} <= rows[0].keys()
    with torch.no_grad():
        scores, _ = clf.predict_scores(data.images)
    torch.testing.assert_close(torch.tensor([r["defect_score"] for r in rows]), scores)
    for row in rows:
        assert row["is_defect"] == (row["defect_score"] >= 0.5)
        assert (row["predicted_class"] != "good") == row["is_defect"]
    with path.open() as handle:
        written = list(csv.DictReader(handle))
    assert [r["path"] for r in written] == [f"img_{i:04d}.png" for i in range(20)]
    assert written[0].keys() >= {"path", "defect_score", "predicted_class", "p_good"}
    assert float(written[3]["defect_score"]) == pytest.approx(rows[3]["defect_score"])
    again = write_predictions_csv(predictions, tmp_path / "again.csv")
    assert again.read_text() == path.read_text()


def test_decision_rule_multiclass():
    clf = DefectClassifier(
        "test_resnet", class_names=["scratch", "good", "dent"], good_class="good"
    )
    probs = torch.tensor([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.05, 0.15, 0.8]])
    scores = 1 - probs[:, 1]
    assert clf.decide(scores, probs, 0.5).tolist() == [1, 1, 2]
    assert clf.decide(scores, probs, 0.3).tolist() == [1, 0, 2]  # defect class even if good wins


def test_losses_and_weights():
    logits, labels = torch.randn(16, 3), torch.randint(0, 3, (16,))
    weight = torch.tensor([0.5, 2.0, 1.0])
    expected = F.cross_entropy(logits, labels, weight=weight)
    torch.testing.assert_close(focal_loss(logits, labels, 0.0, weight), expected)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(focal_loss(logits, labels, 0.0, label_smoothing=0.1), expected)
    assert focal_loss(logits, labels, 2.0) < F.cross_entropy(logits, labels)
    weights = balanced_class_weights(torch.tensor([190, 10, 0]))
    torch.testing.assert_close(weights, torch.tensor([200 / 570, 200 / 30, 0.0]))


def test_invalid_arguments_fail_early():
    with pytest.raises(ValueError, match="good_class"):
        DefectClassifier("test_resnet", class_names=["ok", "bad"])
    with pytest.raises(ValueError, match="class_weights"):
        DefectClassifier("test_resnet", class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="head"):
        DefectClassifier("test_resnet", head="transformer")
    with pytest.raises(ValueError, match="unique"):
        DefectClassifier("test_resnet", class_names=["good", "a", "a"])


def test_factory_datamodule_end_to_end(tmp_path):
    data_module = pytest.importorskip("lit_ssl.data")
    root = data_module.write_synthetic_dataset(
        tmp_path / "mvtec",
        image_size=32,
        n_train=24,
        n_test_good=12,
        n_per_defect=12,
        defects=("scratch", "spot"),
    )
    dm = data_module.FactoryDataModule(
        root=str(root), task="classify", image_size=32, batch_size=16, drop_last=False
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names[dm.good_index] == "good"
    clf = DefectClassifier("test_resnet", class_names=list(dm.class_names))
    trainer = L.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(clf, datamodule=dm)
    assert bool(clf.threshold_from_validation)
    assert clf.class_weights.sum() > 0 and torch.isfinite(clf.class_weights).all()
    results = trainer.test(clf, datamodule=dm, verbose=False)[0]
    assert 0.0 <= results["test/auroc"] <= 1.0
    predictions = trainer.predict(clf, datamodule=dm)
    path = write_predictions_csv(predictions, tmp_path / "predictions.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(Path(row["path"]).is_file() for row in rows), rows[0]["path"]
    wrong = DefectClassifier("test_resnet", class_names=list(reversed(dm.class_names)))
    with pytest.raises(ValueError, match="class_names=datamodule.class_names"):
        L.Trainer(max_epochs=1, **trainer_kwargs(tmp_path)).fit(wrong, datamodule=dm)


def test_balanced_weights_count_only_the_training_labels_used(tmp_path):
    """label_fraction < 1 and a test split with another class mix: the weights are
    n / (C * n_c) over the kept training labels, not over train + val + test."""
    from PIL import Image

    from lit_ssl.data import FactoryDataModule

    rng = np.random.default_rng(0)
    lines = ["path,label,split"]
    mix = {"train": (20, 10), "val": (4, 4), "test": (4, 16)}
    for split, counts in mix.items():
        for name, count in zip(("good", "scratch"), counts, strict=True):
            for i in range(count):
                relative = f"{split}_{name}_{i:02d}.png"
                Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(
                    tmp_path / relative
                )
                lines.append(f"{relative},{name},{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    dm = FactoryDataModule(
        str(tmp_path / "manifest.csv"),
        task="classify",
        image_size=32,
        batch_size=8,
        label_fraction=0.5,
        drop_last=False,
    )
    dm.setup("fit")
    assert dm.class_names == ["good", "scratch"]
    kept = torch.zeros(2, dtype=torch.long)
    for batch in dm.train_dataloader():
        labels = batch.labels
        kept += torch.bincount(labels[labels >= 0], minlength=2)
    assert kept.sum() < 30  # label_fraction hid some training labels
    n, classes = kept.sum().item(), 2
    expected = torch.tensor([n / (classes * kept[0].item()), n / (classes * kept[1].item())])
    everything = torch.tensor([28, 30])
    assert not torch.allclose(balanced_class_weights(everything), expected, atol=0.05)

    clf = DefectClassifier("test_resnet", class_names=dm.class_names)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, **trainer_kwargs(tmp_path))
    trainer.fit(clf, datamodule=dm)
    torch.testing.assert_close(clf.class_weights, expected.float())
