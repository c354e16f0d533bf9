"""The typed batch: what FactoryDataModule yields for every stage and task, read by name, and
the plain tuples of a user's own DataLoader still training SSLModule and DefectClassifier."""

from __future__ import annotations

from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _defect_data import trainer_kwargs
from lightning.pytorch.utilities import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_ssl import DefectClassifier, SSLModule
from lit_ssl.data import Batch, FactoryDataModule, ViewSpec, as_batch, collate_batch
from lit_ssl.heads import SSLHead, VICReg
from lit_ssl.heads.base import HeadOutput

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32
CLASSES = {"good": 8, "dent": 6}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of random PNGs (good 8, dent 6)."""
    root = tmp_path_factory.mktemp("class_folders")
    rng = np.random.default_rng(0)
    for name, n in CLASSES.items():
        (root / name).mkdir()
        for i in range(n):
            image = rng.integers(0, 255, (40, 40, 3), endpoint=True).astype(np.uint8)
            assert cv2.imwrite(str(root / name / f"{i}.png"), image)
    return root


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(**trainer_kwargs(tmp_path, max_steps=1, limit_val_batches=0, **kwargs))


def _check(batch: Batch, views: int, batch_size: int, root: Path) -> None:
    assert isinstance(batch, Batch) and len(batch.views) == views and batch.clean is None
    for view in batch.views:
        assert view.shape == (batch_size, 3, SIZE, SIZE) and view.dtype == torch.float32
        assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0
    assert batch.images is batch.views[0]
    assert batch.labels.dtype == torch.long and batch.labels.shape == (batch_size,)
    assert len(batch.paths) == batch_size and all(p.startswith(str(root)) for p in batch.paths)
    assert batch.masks is None


@pytest.mark.parametrize("task", ["ssl", "classify"])
def test_every_stage_yields_a_batch_read_by_name(folders: Path, task: str) -> None:
    dm = FactoryDataModule(str(folders), task=task, image_size=SIZE, batch_size=4)
    dm.setup("fit")
    views = 2 if task == "ssl" else 1  # nobody declared views: 2 for ssl
    train = next(iter(dm.train_dataloader()))
    _check(train, views, 4, folders)
    if task == "classify":
        assert train.labels.min() >= 0
    val = next(iter(dm.val_dataloader()))
    _check(val, views, val.labels.shape[0], folders)
    for loader in (dm.test_dataloader(), dm.predict_dataloader()):
        batch = next(iter(loader))
        _check(batch, 1, batch.labels.shape[0], folders)
    by_path = {row["path"]: row["target"] for row in dm.sample_table()}
    predicted = [b for b in dm.predict_dataloader()]
    paths = [p for b in predicted for p in b.paths]
    assert paths == sorted(by_path)  # predict covers every sample, sorted by path
    labels = torch.cat([b.labels for b in predicted]).tolist()
    assert labels == [by_path[p] for p in paths]


def test_the_batch_moves_to_the_device_and_pins_as_one_record() -> None:
    batch = Batch([torch.rand(2, 3, 4, 4)], torch.tensor([0, -1]), paths=["a.png", "b.png"])
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, Batch) and moved.clean is None and moved.paths == ["a.png", "b.png"]
    item = Batch([torch.rand(3, 4, 4)], 1, torch.rand(3, 4, 4), "a.png")
    stacked = collate_batch([item, item])
    assert stacked.views[0].shape == (2, 3, 4, 4) and stacked.clean.shape == (2, 3, 4, 4)
    assert stacked.labels.tolist() == [1, 1] and stacked.paths == ["a.png", "a.png"]
    taken = stacked.take(1)
    assert taken.views[0].shape[0] == taken.clean.shape[0] == len(taken.paths) == 1


def test_as_batch_reads_the_plain_tuples() -> None:
    views, labels = [torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)], torch.tensor([1, 0])
    two = as_batch((views, labels))
    assert two.views == views and two.labels is labels and two.clean is None
    clean = as_batch((views, labels), clean_last=True)
    assert clean.views == views[:1] and clean.clean is views[1]
    image = as_batch((views[0], [0, 1], ["a", "b"]))
    assert image.views == [views[0]] and image.labels.tolist() == [0, 1]
    assert image.paths == ["a", "b"]
    bare = as_batch(views[0])
    assert bare.labels.tolist() == [-1, -1] and bare.paths is None
    assert as_batch((views[0], ("a", "b"))).paths == ["a", "b"]
    assert as_batch(two) is two
    with pytest.raises(TypeError, match=r"\(views, labels\)"):
        as_batch({"views": views})


class PlainViews(Dataset):
    """A user's own dataset: ``(views, label)``, the clean image last if asked for."""

    def __init__(self, num_views: int = 2, clean: bool = False, n: int = 8) -> None:
        self.num_views, self.clean, self.n = num_views, clean, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        x = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(index))
        views = [(x * (0.8 + 0.1 * i)).clamp(0, 1) for i in range(self.num_views)]
        return views + ([x] if self.clean else []), index % 2


def test_plain_views_labels_loader_trains_ssl_module(tmp_path: Path) -> None:
    module = SSLModule("test_resnet", VICReg(hidden_dim=32, out_dim=32))
    before = [p.detach().clone() for p in module.backbone.parameters()]
    trainer = _trainer(tmp_path)
    trainer.fit(module, DataLoader(PlainViews(), batch_size=4))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    after = list(module.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


class PlainImages(Dataset):
    """A user's own classification dataset: ``(image, label)`` (no ``labels`` attribute)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        image = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(index))
        return image, index % 2


def test_plain_images_labels_loader_trains_defect_classifier(tmp_path: Path) -> None:
    classifier = DefectClassifier("test_resnet", class_names=["good", "dent"], save_figures=False)
    trainer = _trainer(tmp_path)
    trainer.fit(classifier, DataLoader(PlainImages(), batch_size=4))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert classifier.class_weights.tolist() == [1.0, 1.0]  # counted through as_batch
    rows = classifier.predict_step((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, -1])), 0)
    assert [r["label"] for r in rows] == ["good", None] and rows[0]["path"] is None


class CleanSpy(SSLHead):
    """A head asking for one view plus the clean one; records what it receives."""

    family = "reconstruction"
    num_views = 1
    clean_view = True

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.received: list[int] = []

    def forward(self, backbone, views, return_reconstructions=False) -> HeadOutput:
        self.received.append(len(views))
        loss = F.mse_loss(views[0] * self.weight, views[-1]) + 0 * backbone(views[0]).sum()
        return HeadOutput(loss=loss)


class SeeBatches(L.Callback):
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch)


def test_a_clean_view_head_gets_clean_set(folders: Path, tmp_path: Path) -> None:
    head = CleanSpy()
    module = SSLModule("test_resnet", head)
    assert module.view_spec == ViewSpec(1, clean=True)
    seen = SeeBatches()
    dm = FactoryDataModule(str(folders), image_size=SIZE, batch_size=4)
    _trainer(tmp_path, callbacks=[seen]).fit(module, datamodule=dm)
    batch = seen.batches[0]
    assert isinstance(batch, Batch) and len(batch.views) == 1
    assert batch.clean is not None and batch.clean.shape == (4, 3, SIZE, SIZE)
    assert head.received == [2]  # the augmented view, then the clean one
    # a plain loader gives the clean view last; SSLModule reads it into Batch.clean
    plain = next(iter(DataLoader(PlainViews(num_views=1, clean=True), batch_size=4)))
    assert module.to_batch(plain).clean is plain[0][-1]
    with pytest.raises(ValueError, match="clean view"):
        module.training_step(Batch(batch.views, batch.labels), 0)
