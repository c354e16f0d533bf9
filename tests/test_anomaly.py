"""Anomaly detection from good images only: the memory bank parts alone, then the detector."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from _defect_data import trainer_kwargs
from _gloo import join_gloo

from lit_ssl.anomaly import (
    AnomalyDetector,
    false_alarm_threshold,
    greedy_coreset,
    nearest_distances,
)
from lit_ssl.data import FactoryDataModule, write_synthetic_dataset


def test_nearest_distances_equal_brute_force():
    queries, bank = torch.randn(50, 8), torch.randn(70, 8)
    expected = torch.cdist(queries, bank).min(1).values
    torch.testing.assert_close(
        nearest_distances(queries, bank, block=16), expected, atol=1e-4, rtol=0
    )


def test_greedy_coreset_covers_better_than_a_random_subset():
    points = torch.cat([torch.randn(400, 16), torch.randn(8, 16) + 12.0])  # a rare far cluster
    keep = greedy_coreset(points, 0.05, projection_dim=None)
    assert keep.unique().numel() == keep.numel() == 20
    radius = nearest_distances(points, points[keep]).max()
    random = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(0))[:20]
    assert radius < nearest_distances(points, points[random]).max()
    assert (keep >= 400).any(), "the rare cluster must be kept"
    assert greedy_coreset(points, 1.0).numel() == points.shape[0]
    with pytest.raises(ValueError, match="fraction"):
        greedy_coreset(points, 0.0)


def _textures(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=generator)
    return F.interpolate(low, size=(64, 64), mode="bilinear").clamp(0, 1) * 0.5 + 0.25


def test_the_map_points_at_the_defect_and_the_defect_scores_highest():
    torch.manual_seed(0)
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5).eval()
    detector.add_good(_textures(16, seed=0))
    detector.build_bank()
    good = _textures(6, seed=1)
    defect = good.clone()
    defect[:, :, 40:52, 8:20] = 1.0  # a bright spot, bottom left
    with torch.no_grad():
        maps, scores = detector(torch.cat([good, defect]))
    assert maps.shape == (12, 1, 64, 64)
    assert scores[6:].min() > scores[:6].max()
    peak = maps[6:].flatten(1).argmax(1)
    rows, cols = peak // 64, peak % 64
    assert ((rows >= 32) & (cols < 32)).all(), "the map's peak is not at the defect"


def test_fit_builds_the_bank_validation_sets_the_threshold_test_reports(tmp_path):
    root = write_synthetic_dataset(
        tmp_path / "line", image_size=48, n_train=32, n_test_good=8, n_per_defect=4, seed=0
    )
    data = FactoryDataModule(
        str(root), task="classify", binary=True, image_size=48, batch_size=16, resplit=True
    )
    torch.manual_seed(0)
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.25)
    trainer = L.Trainer(max_epochs=1, **trainer_kwargs(tmp_path))
    trainer.fit(detector, data)
    assert detector.memory_bank.ndim == 2 and detector.memory_bank.shape[0] > 0
    assert torch.isfinite(detector.threshold)
    assert trainer.global_step == 0  # no gradient steps: the bank is the model
    (result,) = trainer.test(detector, data, verbose=False)
    assert result["test/image_auroc"] >= 0.75
    assert result["test/pixel_auroc"] >= 0.75  # the synthetic data has masks: chance is 0.5


def test_the_bank_and_threshold_travel_in_the_checkpoint(tmp_path):
    detector = AnomalyDetector("test_resnet", coreset_fraction=0.5)
    detector.add_good(_textures(4, seed=0))
    detector.build_bank()
    detector.threshold.fill_(0.5)
    path = tmp_path / "anomaly.ckpt"
    checkpoint = {"state_dict": detector.state_dict(), "hyper_parameters": dict(detector.hparams)}
    detector.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    loaded = AnomalyDetector.load_from_checkpoint(path).eval()
    torch.testing.assert_close(loaded.memory_bank, detector.memory_bank)
    images = _textures(2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[1], detector.eval()(images)[1])
    assert float(loaded.threshold) == 0.5


def _bank_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    join_gloo(rank, store)
    try:
        torch.manual_seed(0)  # the same backbone on both ranks, as DDP makes it
        detector = AnomalyDetector("test_resnet", coreset_fraction=1.0).eval()
        detector.add_good(_textures(2 + rank, seed=rank))  # ranks hold 2 and 3 images
        detector.build_bank()
        if rank == 0:
            torch.save(detector.memory_bank, out)
    finally:
        dist.destroy_process_group()


def test_ddp_bank_holds_every_ranks_good_patches(tmp_path):
    import sys

    import torch.multiprocessing as mp

    out = tmp_path / "bank.pt"
    mp.start_processes(
        _bank_worker,
        args=(str(tmp_path / "store"), str(out)),
        nprocs=2,
        join=True,
        start_method="fork" if sys.platform == "linux" else "spawn",
    )
    bank = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    single = AnomalyDetector("test_resnet", coreset_fraction=1.0).eval()
    single.add_good(_textures(2, seed=0))
    single.add_good(_textures(3, seed=1))
    single.build_bank()
    assert bank.shape == single.memory_bank.shape  # not half of it
    torch.testing.assert_close(bank, single.memory_bank)


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_the_threshold_flags_the_target_share_of_good_images(rate):
    scores = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    threshold = false_alarm_threshold(scores, rate)
    flagged = (scores > threshold).float().mean()
    assert flagged <= rate and flagged >= rate - 0.002


def test_coreset_scores_stay_within_the_coreset_radius_of_the_full_bank():
    bank = torch.randn(600, 12)
    queries = torch.randn(200, 12)
    keep = greedy_coreset(bank, 0.1, projection_dim=None)
    assert keep.numel() == 60
    radius = nearest_distances(bank, bank[keep]).max()
    full, core = nearest_distances(queries, bank), nearest_distances(queries, bank[keep])
    assert (core >= full - 1e-5).all()
    assert (core - full).max() <= radius + 1e-5  # triangle inequality: a stated tolerance


def test_test_batches_carry_masks_resized_like_the_images(tmp_path):
    root = write_synthetic_dataset(
        tmp_path / "line", image_size=48, n_train=8, n_test_good=4, n_per_defect=2, seed=0
    )
    data = FactoryDataModule(str(root), task="anomaly", image_size=32, batch_size=64)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    assert batch.masks.shape == (len(batch.labels), 1, 32, 32)
    good = batch.labels == data.good_index
    assert (batch.masks[good] == 0).all()
    assert set(batch.masks[~good].unique().tolist()) <= {0.0, 1.0}
    assert (batch.masks[~good].flatten(1).amax(1) == 1).all(), "every defect has its region"
    train = next(iter(data.train_dataloader()))
    assert train.views[0].shape[-2:] == (32, 32) and len(train.views) == 1
