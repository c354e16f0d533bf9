"""Loaders built again give new order and views; training class counts; predict without labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from _defect_data import trainer_kwargs
from torch.utils.data import DataLoader

from lit_ssl.data import FactoryDataModule

SIZE = 32


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of distinct images: good 16, dent 8, scratch 8."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(0)
    for name, n in (("good", 16), ("dent", 8), ("scratch", 8)):
        (root / name).mkdir()
        for i in range(n):
            image = rng.integers(0, 255, (SIZE, SIZE, 3), endpoint=True).astype(np.uint8)
            assert cv2.imwrite(str(root / name / f"{i:02d}.png"), image)
    return root


def _module(root: Path, stage: str = "fit", **kwargs) -> FactoryDataModule:
    dm = FactoryDataModule(root=str(root), image_size=SIZE, batch_size=4, **kwargs)
    dm.setup(stage)
    return dm


def _digest(loader: DataLoader) -> list[str]:
    out = []
    for batch in loader:
        out += [hashlib.sha1(v.numpy().tobytes()).hexdigest() for v in batch.views]
    return out


# ---------------------------------------------------------------- item 10: seeding


def _observe(loader: DataLoader) -> tuple[list[int], torch.Tensor, list[str]]:
    """The sampler's order, the first view of sample 0, and every view of one pass."""
    return list(loader.sampler), loader.dataset[0].views[0], _digest(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_built_again_gives_new_order_and_views(classes: Path, workers: int) -> None:
    dm = _module(classes, num_workers=workers, persistent_workers=False)
    first = _observe(dm.train_dataloader())
    second = _observe(dm.train_dataloader())
    assert first[0] != second[0]  # order
    assert not torch.equal(first[1], second[1])  # views of one sample
    assert not set(first[2]) & set(second[2])  # views of one pass
    again = _observe(
        _module(classes, num_workers=workers, persistent_workers=False).train_dataloader()
    )
    assert again[0] == first[0] and torch.equal(again[1], first[1]) and again[2] == first[2]


def test_reload_every_epoch_under_a_trainer_does_not_repeat(classes: Path) -> None:
    class Record(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.seen: dict[int, list[str]] = {}

        def training_step(self, batch, batch_idx):
            views = batch.views
            digest = hashlib.sha1(views[0].numpy().tobytes()).hexdigest()
            self.seen.setdefault(self.current_epoch, []).append(digest)
            return self.layer(views[0].mean((2, 3))).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Record()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=0,
        reload_dataloaders_every_n_epochs=1,
        **trainer_kwargs(classes.parent, deterministic=False),
    )
    trainer.fit(
        model, datamodule=FactoryDataModule(root=str(classes), image_size=SIZE, batch_size=4)
    )
    assert len(model.seen[0]) == len(model.seen[1]) == 3
    assert not set(model.seen[0]) & set(model.seen[1])


# ---------------------------------------------------------------- item 11: training counts


def test_train_class_counts_follow_label_fraction_and_binary(classes: Path) -> None:
    full = _module(classes, task="classify")
    counts = full.train_class_counts
    assert isinstance(counts, list) and len(counts) == len(full.class_names) == 3
    assert sum(counts) == full.split_sizes["train"]
    train = full.labels[full.splits == "train"]
    assert counts == [int((train == i).sum()) for i in range(3)]
    few = _module(classes, task="classify", label_fraction=0.5)
    labels = [item.labels for item in few.train_dataloader().dataset]
    assert few.train_class_counts == [labels.count(i) for i in range(3)]
    assert sum(few.train_class_counts) < sum(counts)
    binary = _module(classes, task="classify", binary=True, label_fraction=0.5)
    assert binary.class_names == ["good", "defect"]
    assert binary.train_class_counts == [few.train_class_counts[0], sum(few.train_class_counts[1:])]


# ---------------------------------------------------------------- item 4: predict on new images


def test_classify_predicts_on_a_plain_folder_without_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = ["b.png", "a.png", "new/c.JPG", "new/d.tif"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (24, 24, 3), endpoint=True).astype(np.uint8)
        assert cv2.imwrite(str(tmp_path / name), image)
    (tmp_path / "new" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.warns(UserWarning, match="cut.png"):
        dm = _module(tmp_path, stage="predict", task="classify", binary=True)
    assert dm.skipped_files == [str((tmp_path / "new" / "cut.png").resolve())]
    paths, labels = [], []
    for batch in dm.predict_dataloader():
        assert len(batch.views) == 1 and batch.images.shape[1:] == (3, SIZE, SIZE)
        paths += batch.paths
        labels += batch.labels.tolist()
    expected = sorted(str((tmp_path / n).resolve()) for n in names)
    assert paths == expected and labels == [-1] * 4
    for stage in ("fit", "validate", "test"):
        with pytest.raises(ValueError, match="needs labels"):
            dm.setup(stage)
    with pytest.raises(ValueError, match="needs labels"):
        dm.train_dataloader()
