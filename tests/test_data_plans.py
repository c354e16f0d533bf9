"""The task x stage table of FactoryDataModule: every pair covered, and the rows it is read by."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from lit_ssl.data.plans import LOADER_STAGES, PLANS, STAGES, TASKS, StagePlan, loader_stages, plan


def test_every_task_and_stage_has_a_plan() -> None:
    assert set(PLANS) == {(task, stage) for task in TASKS for stage in STAGES}
    assert all(isinstance(row, StagePlan) for row in PLANS.values())


def test_the_rows_the_loaders_rely_on() -> None:
    assert plan("ssl", "train") == StagePlan(
        augmented=True,
        views="model",
        labelled_only=False,
        masks=False,
        drop_last=True,
        types=False,
    )
    assert plan("ssl", "val").views == "model" and plan("ssl", "val").augmented
    assert plan("classify", "train").aimed and plan("classify", "train").labelled_only
    assert plan("classify", "val").labelled_only and not plan("classify", "val").augmented
    assert not plan("classify", "predict").labelled_only  # new images need no labels
    anomaly = plan("anomaly", "train")
    assert not anomaly.augmented and not anomaly.drop_last and anomaly.masks  # the bank


def test_only_training_may_drop_and_only_model_views_are_unmasked() -> None:
    for (task, stage), row in PLANS.items():
        assert not row.drop_last or stage == "train", (task, stage)
        assert row.masks == (row.views == 1), (task, stage)
        assert row.types == (stage != "train"), (task, stage)
        assert row.views == 1 or row.augmented, (task, stage)


def test_lightning_stages_map_to_loader_stages() -> None:
    assert loader_stages("fit") == ("train", "val") and loader_stages(None) == LOADER_STAGES[None]
    assert loader_stages("predict") == ("predict",) and loader_stages("tune") == ()


def test_plans_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        plan("ssl", "train").augmented = False  # type: ignore[misc]
