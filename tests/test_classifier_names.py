"""A classifier built with ``class_names=None`` takes a two-class datamodule's names (VisA's
"normal"); explicit classes that differ from the data's still fail early."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lit_ssl.classify.classifier import DefectClassifier


def _setup(classifier: DefectClassifier, class_names: list[str]) -> None:
    classifier._trainer = SimpleNamespace(datamodule=SimpleNamespace(class_names=class_names))
    classifier.setup("fit")


def test_classes_none_takes_the_data_good_class_name():
    classifier = DefectClassifier("test_resnet")
    _setup(classifier, ["normal", "defect"])
    assert classifier.class_names == ["normal", "defect"] and classifier.good_index == 0
    assert classifier.hparams.class_names == ["normal", "defect"]
    assert classifier.hparams.good_class == "normal"  # a reload builds the same classifier
    assert classifier.val_metrics.class_names == ["normal", "defect"]


def test_explicit_classes_that_differ_from_the_data_fail():
    classifier = DefectClassifier("test_resnet", class_names=["good", "defect"])
    with pytest.raises(ValueError, match="differ from the classifier's"):
        _setup(classifier, ["normal", "defect"])


def test_classes_none_with_more_data_classes_fails():
    classifier = DefectClassifier("test_resnet")
    with pytest.raises(ValueError, match="differ from the classifier's"):
        _setup(classifier, ["good", "crack", "scratch"])
