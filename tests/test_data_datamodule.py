"""FactoryDataModule: batch contracts, views from the head, splits, bad files, reseeding."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lit_ssl.augment import policy
from lit_ssl.data import (
    Batch,
    FactoryDataModule,
    ViewSpec,
    collate_batch,
    write_synthetic_dataset,
)
from lit_ssl.data.synthetic import default_dataset

SIZE = 32


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(
        root, image_size=SIZE, n_train=24, n_test_good=8, n_per_defect=6, nuisance=0.3
    )


def _module(root: Path, **kwargs) -> FactoryDataModule:
    kwargs = {"image_size": SIZE, "batch_size": 8, **kwargs}
    dm = FactoryDataModule(root=str(root), **kwargs)
    dm.setup("fit")
    return dm


def test_ssl_batches_follow_the_contract(synthetic: Path) -> None:
    dm = _module(synthetic)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and batch.clean is None and batch.masks is None
    views, labels = batch.views, batch.labels
    assert isinstance(views, list) and len(views) == 2  # nobody asked: 2 views
    assert len(batch.paths) == 8 and all(p.startswith(str(synthetic)) for p in batch.paths)
    for view in views:
        assert view.shape == (8, 3, SIZE, SIZE) and view.dtype == torch.float32
        assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0
    assert labels.dtype == torch.long and labels.shape == (8,)
    assert not torch.equal(views[0], views[1])


def test_views_come_from_the_head_with_clean_view(synthetic: Path) -> None:
    dm = _module(synthetic, in_chans=1)
    dm.configure_views(3, clean_view=True)
    dataset = dm.train_dataloader().dataset
    item = dataset[0]
    assert len(item.views) == 3 and item.views[0].shape == (1, SIZE, SIZE)
    raw = dataset.store.image(int(dataset.indices[0]))
    clean = policy("minimal", SIZE, 1)(image=raw)["image"]
    np.testing.assert_allclose(item.clean.numpy()[0], clean[:, :, 0], atol=1e-6)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch.views) == 3 and batch.clean.shape == (8, 1, SIZE, SIZE)


def test_explicit_views_conflicting_with_head_is_an_error(synthetic: Path) -> None:
    dm = _module(synthetic, views=2)
    dm.configure_views(2)
    with pytest.raises(ValueError, match=r"views=2.*num_views=1"):
        dm.configure_views(1)


def test_classify_batches_labels_and_splits(synthetic: Path) -> None:
    dm = _module(synthetic, task="classify")
    assert dm.class_names[0] == "good" and dm.good_index == 0
    assert dm.class_names[1:] == sorted(dm.class_names[1:])
    assert dm.class_counts["good"] == 32 and dm.num_classes == 6
    train = next(iter(dm.train_dataloader()))
    assert len(train.views) == 1 and train.clean is None
    assert train.images.shape == (8, 3, SIZE, SIZE) and train.labels.min() >= 0
    val = next(iter(dm.val_dataloader()))
    assert len(val.views) == 1 and val.images.shape[1:] == (3, SIZE, SIZE)
    test = next(iter(dm.test_dataloader()))
    assert isinstance(test.paths, list) and isinstance(test.paths[0], str)
    assert len(test.paths) == test.labels.shape[0] == test.images.shape[0]
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert set(dm.labels[dm.splits == split].tolist()) == set(range(6))
    assert len(dm.predict_dataloader().dataset) == len(dm.samples)
    rows = dm.sample_table()
    assert len(rows) == len(dm.samples) and {r["split"] for r in rows} == {"train", "val", "test"}
    assert all((r["mask"] is None) == (r["label"] == "good") for r in rows)


def test_splits_are_deterministic(synthetic: Path) -> None:
    first, again = _module(synthetic, task="classify"), _module(synthetic, task="classify")
    other = _module(synthetic, task="classify", seed=1)
    np.testing.assert_array_equal(first.splits, again.splits)
    assert (first.splits != other.splits).any()


def test_layout_split_kept_and_label_fraction(synthetic: Path) -> None:
    kept = _module(synthetic, resplit=False)
    train = kept.labels[kept.splits == "train"]
    assert set(train.tolist()) == {0} and kept.split_sizes["test"] == 8 + 5 * 6
    few = _module(synthetic, task="ssl", label_fraction=0.25)
    train_labels = few.train_labels[few.splits == "train"]
    assert (train_labels == -1).mean() > 0.5 and set(train_labels[train_labels >= 0]) == set(
        range(6)
    )
    classify = _module(synthetic, task="classify", label_fraction=0.25)
    assert len(classify.train_dataloader().dataset) < classify.split_sizes["train"] / 2


def _class_tree(root: Path, n: int = 6) -> Path:
    image = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    for name in ("good", "dent"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i}.png"), image)
    return root


def test_bad_files_skipped_with_one_warning_or_raised(tmp_path: Path) -> None:
    root = _class_tree(tmp_path)
    (root / "good" / "zero.png").write_bytes(b"")
    (root / "dent" / "text.jpg").write_text("not an image")
    data = (root / "good" / "0.png").read_bytes()
    (root / "dent" / "cut.PNG").write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match=r"3 of 15 image files are unreadable") as record:
        dm = _module(root)
    message = str(record[0].message)
    assert all(name in message for name in ("zero.png", "text.jpg", "cut.PNG"))
    assert len(dm.samples) == 12
    with pytest.raises(ValueError, match="on_bad_file='skip'"):
        _module(root, on_bad_file="raise")


def test_empty_and_unreadable_folders_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "empty" / ".ipynb_checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        _module(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 1 files"), pytest.warns(UserWarning):
        _module(tmp_path / "bad")


def test_classify_on_unlabeled_data_fails_clearly(tmp_path: Path) -> None:
    root = _class_tree(tmp_path)
    with pytest.raises(ValueError, match="needs labels"):
        _module(root, task="classify", layout="unlabeled")


def test_dataset_level_bit_depth_for_16bit(tmp_path: Path) -> None:
    for name, top in (("good", 4095), ("dark", 600)):
        (tmp_path / name).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / name / f"{i}.tif"), np.full((16, 16), top, np.uint16))
    dm = _module(tmp_path, in_chans=1, task="classify")
    dark = [i for i, s in enumerate(dm.samples) if "dark" in s.path][0]
    assert dm._store.image(dark).max() == pytest.approx(600 / 4095)  # not re-scaled per image


def test_embedded_default_is_generated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIT_SSL_CACHE", str(tmp_path))
    dm = FactoryDataModule(batch_size=8)
    dm.prepare_data()
    dm.setup()
    assert Path(dm.root).parent == tmp_path and dm.good_index == 0
    stamp = (Path(dm.root) / "synthetic.json").stat().st_mtime_ns
    assert default_dataset() == Path(dm.root)
    assert (Path(dm.root) / "synthetic.json").stat().st_mtime_ns == stamp
    assert default_dataset(nuisance=0.0) != Path(dm.root)


def test_loader_settings_with_workers(synthetic: Path) -> None:
    loader = _module(synthetic, num_workers=2, pin_memory=False).train_dataloader()
    assert loader.persistent_workers and loader.worker_init_fn is not None
    assert loader.drop_last and not loader.pin_memory


# ---------------------------------------------------------------- albumentations RNG trap


@pytest.fixture(scope="module")
def identical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight copies of one image: views can only differ through the augmentation RNG."""
    root = tmp_path_factory.mktemp("identical")
    first = root / "0.png"
    cv2.imwrite(
        str(first), (np.random.default_rng(1).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    )
    for i in range(1, 8):
        shutil.copy(first, root / f"{i}.png")
    return root


def _digests(loader: DataLoader, epochs: int) -> list[str]:
    out = []
    for _ in range(epochs):
        for batch in loader:
            for view in batch.views:
                out += [hashlib.sha1(v.numpy().tobytes()).hexdigest() for v in view]
    return out


@pytest.mark.parametrize("persistent", [False, True])
def test_views_differ_across_workers_and_epochs_and_reproduce(
    identical: Path, persistent: bool
) -> None:
    def loader() -> DataLoader:
        dm = _module(identical, batch_size=2, num_workers=2, persistent_workers=persistent)
        return dm.train_dataloader()

    train = loader()
    seen = _digests(train, epochs=2)
    # a view whose random ops all come out as no-ops equals the image up to a flip/rotation, so
    # an exact collision now and then is chance; repeated RNG streams would repeat half of them
    assert len(seen) == 2 * len(train.dataset) * 2 and len(set(seen)) >= len(seen) - 2
    assert _digests(loader(), epochs=2) == seen


def test_without_reseeding_albumentations_repeats_views(identical: Path) -> None:
    """Documents the trap the worker_init_fn fixes (albumentations 2.0.8)."""
    dataset = _module(identical).train_dataloader().dataset
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_batch)
    seen = _digests(loader, epochs=2)
    assert len(set(seen)) < len(seen) / 2


def test_trainer_asks_for_views_before_loaders_are_built(synthetic: Path) -> None:
    """The data module reads the model's declared ``view_spec`` in its own setup."""
    import lightning as L

    class ThreeViews(L.LightningModule):
        view_spec = ViewSpec(3, clean=True)

        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.seen: list[tuple[int, bool]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append((len(batch.views), batch.clean is not None))
            return self.layer(batch.views[0].mean((2, 3))).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = ThreeViews()
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(
        model, datamodule=FactoryDataModule(root=str(synthetic), image_size=SIZE, batch_size=4)
    )
    assert model.seen == [(3, True), (3, True)]
    conflicting = FactoryDataModule(root=str(synthetic), image_size=SIZE, views=2, batch_size=4)
    with pytest.raises(ValueError, match=r"views=2.*num_views=3"):
        trainer.fit(ThreeViews(), datamodule=conflicting)
