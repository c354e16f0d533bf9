"""The two records between model, data and callbacks: ``StepOutput`` (what a step hands to
callbacks, read by attribute) and ``DataInfo`` (what the data says about itself, read once)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lit_ssl.callbacks import OnlineProbe
from lit_ssl.data_info import DataInfo, data_info
from lit_ssl.step_output import StepOutput, step_output


def test_step_output_travels_under_one_key_next_to_lightnings_loss():
    labels = torch.tensor([0, 1, -1])
    record = StepOutput(torch.tensor(1.5), None, labels)
    outputs = record.as_outputs()
    assert set(outputs) == {"loss", "step"} and outputs["loss"] is record.loss
    assert step_output(outputs) is record and step_output(record) is record
    assert step_output(outputs).labels is labels


@pytest.mark.parametrize("outputs", [None, torch.tensor(1.0), {"loss": torch.tensor(1.0)}])
def test_outputs_of_other_modules_have_no_step_output(outputs):
    assert step_output(outputs) is None


def test_no_trainer_or_datamodule_says_nothing():
    assert data_info(None) == DataInfo()
    assert data_info(SimpleNamespace(datamodule=None)) == DataInfo()
    assert DataInfo().num_classes == 0


def test_data_info_reads_attributes_and_hyperparameters():
    datamodule = SimpleNamespace(
        class_names=["good", "defect"],
        type_names=["good", "crack", "scratch"],
        good_index=0,
        train_class_counts=[5, 7],
        in_chans=1,
        hparams={"image_size": 64, "num_workers": 2},
    )
    info = data_info(SimpleNamespace(datamodule=datamodule))
    assert info == DataInfo(("good", "defect"), ("good", "crack", "scratch"), 0, (5, 7), 64, 1, 2)
    assert info.num_classes == 2


def test_type_names_default_to_class_names_and_odd_values_are_left_out():
    datamodule = SimpleNamespace(class_names=["ok", "dent"], image_size="64", good_index=True)
    info = data_info(SimpleNamespace(datamodule=datamodule))
    assert info.type_names == ("ok", "dent")
    assert info.image_size is None and info.good_index is None


def test_online_probe_takes_the_datas_good_index_unless_given():
    datamodule = SimpleNamespace(class_names=["crack", "good"], good_index=1)
    trainer = SimpleNamespace(datamodule=datamodule)
    module = SimpleNamespace(backbone=SimpleNamespace(embed_dim=8))
    taken, given = OnlineProbe(), OnlineProbe(good_index=0)
    taken.setup(trainer, module, "fit")
    given.setup(trainer, module, "fit")
    assert (taken.num_classes, taken.good_index) == (2, 1)
    assert (given.num_classes, given.good_index) == (2, 0)
