"""The presets on the device (lit_ssl.augment.device), run here on CPU tensors.

Same parameter ranges as the albumentations presets (distributions of per-sample statistics
compared on the same inputs), defects kept (a 1-px line), per-sample parameters, masks through
the same geometry, and the data module's device path scaling 8- and 16-bit data exactly as its
CPU path does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from lightning.pytorch.accelerators import CUDAAccelerator

from lit_ssl.augment import policy
from lit_ssl.augment.device import DevicePolicy, device_capable
from lit_ssl.augment.policies import seed_policy
from lit_ssl.data import FactoryDataModule
from lit_ssl.data.batch import Batch, FrameBatch, ViewSpec, as_batch
from lit_ssl.data.device_views import DeviceViews

SIZE, N = 32, 600
# two-sample Kolmogorov-Smirnov critical value at alpha = 0.001 for 600 vs 600 samples
KS_LIMIT = 1.95 * np.sqrt(2 / N)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def _same_distribution(a: np.ndarray, b: np.ndarray) -> bool:
    """KS statistic under its alpha = 0.001 limit and the 5/50/95 % quantiles within a tenth of
    the 5-95 % spread of ``a``."""
    spread = np.quantile(a, 0.95) - np.quantile(a, 0.05)
    quantiles = all(
        abs(np.quantile(a, q) - np.quantile(b, q)) < 0.1 * spread for q in (0.05, 0.5, 0.95)
    )
    return _ks(a, b) < KS_LIMIT and quantiles


def _texture() -> np.ndarray:
    """A mono 32 px texture, period 8 (so half-image means carry no texture), mean 0.5."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return 0.5 + 0.15 * np.sin(2 * np.pi * x / 8) * np.sin(2 * np.pi * y / 8)


def _cpu(compose: A.Compose, image: np.ndarray, n: int = N) -> np.ndarray:
    seed_policy(compose, 0)
    return np.stack([compose(image=image[:, :, None])["image"][:, :, 0] for _ in range(n)])


def _device(name: str, image: np.ndarray, n: int = N) -> np.ndarray:
    images = torch.from_numpy(image)[None, None].repeat(n, 1, 1, 1)
    out, _ = DevicePolicy(name)(images, torch.Generator().manual_seed(0))
    return out[:, 0].numpy()


def _stats(out: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    half = SIZE // 2
    sides = np.abs(out[:, :, :half].mean((1, 2)) - out[:, :, half:].mean((1, 2)))
    sides += np.abs(out[:, :half].mean((1, 2)) - out[:, half:].mean((1, 2)))
    return {
        "brightness": out.mean((1, 2)) - image.mean(),
        "contrast": out.std((1, 2)) / image.std(),
        "gradient": sides,
    }


@pytest.fixture(scope="module")
def outputs() -> dict[str, dict[str, dict[str, np.ndarray]]]:
    image = _texture()
    return {
        name: {
            "cpu": _stats(_cpu(policy(name, SIZE, 1), image), image),
            "device": _stats(_device(name, image), image),
        }
        for name in ("surface", "object")
    }


@pytest.mark.parametrize("name", ["surface", "object"])
@pytest.mark.parametrize("stat", ["brightness", "contrast", "gradient"])
def test_same_distribution_of_per_sample_statistics(outputs, name: str, stat: str) -> None:
    cpu, device = outputs[name]["cpu"][stat], outputs[name]["device"][stat]
    quantiles = [np.quantile(x, [0.05, 0.5, 0.95]).round(3) for x in (cpu, device)]
    assert _same_distribution(cpu, device), (_ks(cpu, device), quantiles)


def test_the_comparison_sees_a_narrower_brightness_range() -> None:
    """The tolerance can fail: brightness/contrast +-0.2 instead of +-0.3 is told apart."""
    image = _texture()
    narrow = A.Compose(
        [A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.8)], strict=True
    )
    wide = A.Compose(
        [A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.8)], strict=True
    )
    narrow_stats, wide_stats = _stats(_cpu(narrow, image), image), _stats(_cpu(wide, image), image)
    assert not _same_distribution(wide_stats["brightness"], narrow_stats["brightness"])
    assert not _same_distribution(wide_stats["contrast"], narrow_stats["contrast"])


def _blob_position(out: np.ndarray) -> np.ndarray:
    weights = np.clip(out - 0.5, 0, None)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    total = weights.sum((1, 2))
    return np.stack([(weights * x).sum((1, 2)) / total, (weights * y).sum((1, 2)) / total], 1)


@pytest.mark.parametrize("name", ["surface", "object"])
def test_geometry_moves_a_spot_as_the_cpu_preset_does(name: str) -> None:
    image = np.full((SIZE, SIZE), 0.5, np.float32)
    image[6:9, 10:13] = 1.0  # a bright spot off the centre
    geometry = A.Compose(list(policy(name, SIZE, 1).transforms)[: 7 if name == "surface" else 4])
    cpu = _blob_position(_cpu(geometry, image))
    images = torch.from_numpy(image)[None, None].repeat(N, 1, 1, 1)
    device, _ = DevicePolicy(name).geometry(images, torch.Generator().manual_seed(0))
    device = _blob_position(device[:, 0].numpy())
    for axis in (0, 1):
        assert _ks(cpu[:, axis], device[:, axis]) < KS_LIMIT, axis


def _line_contrast(out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    on = (out * (mask == 1)).sum((1, 2)) / (mask == 1).sum((1, 2))
    off = (out * (mask == 0)).sum((1, 2)) / (mask == 0).sum((1, 2))
    return (off - on) / off


def test_a_one_pixel_line_survives_on_the_device_as_on_the_cpu() -> None:
    image = np.full((SIZE, SIZE), 0.6, np.float32)
    image[:, 15] = 0.3  # a hairline scratch, half as bright
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[:, 15] = 1
    compose = policy("surface", SIZE, 1, seed=0)
    cpu_images, cpu_masks = [], []
    for _ in range(200):
        out = compose(image=image[:, :, None], mask=mask)
        cpu_images.append(out["image"][:, :, 0])
        cpu_masks.append(out["mask"])
    cpu = _line_contrast(np.stack(cpu_images), np.stack(cpu_masks))
    images = torch.from_numpy(image)[None, None].repeat(200, 1, 1, 1)
    masks = torch.from_numpy(mask)[None, None].repeat(200, 1, 1, 1)
    out, out_masks = DevicePolicy("surface")(images, torch.Generator().manual_seed(0), masks)
    device = _line_contrast(out[:, 0].numpy(), out_masks[:, 0].numpy())
    assert np.quantile(cpu, 0.05) > 0.2 and np.quantile(device, 0.05) > 0.2
    assert abs(np.median(cpu) - np.median(device)) < 0.1


def test_every_sample_gets_its_own_parameters() -> None:
    images = torch.from_numpy(_texture())[None, None].repeat(16, 1, 1, 1)
    out, _ = DevicePolicy("surface")(images, torch.Generator().manual_seed(1))
    flat = out.flatten(1)
    distance = torch.cdist(flat, flat) + torch.eye(16) * 1e9
    assert distance.min() > 1e-2
    means = out.mean((1, 2, 3))
    assert means.std() > 0.05  # brightness differs across the batch, not one shared draw
    again, _ = DevicePolicy("surface")(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again)  # a fixed seed reproduces the batch


@pytest.mark.parametrize("name", ["surface", "object"])
def test_masks_land_where_the_image_pixels_land(name: str) -> None:
    rng = np.random.default_rng(0)
    images = torch.zeros(32, 1, SIZE, SIZE)
    for i in range(32):
        for _ in range(4):
            top, left = rng.integers(2, SIZE - 6, size=2)
            images[i, 0, top : top + 4, left : left + 4] = 1.0
    masks = images.clone()
    out, out_masks = DevicePolicy(name).geometry(images, torch.Generator().manual_seed(0), masks)
    marked, bright = out_masks > 0.5, out > 0.5
    agree = (marked == bright).float().mean()
    assert agree > 0.97, float(agree)
    assert bright[marked].float().mean() > 0.9


def test_reflected_borders_never_black_and_minimal_is_the_identity() -> None:
    ones = torch.ones(64, 1, SIZE, SIZE)
    for name in ("surface", "object"):
        out, _ = DevicePolicy(name).geometry(ones, torch.Generator().manual_seed(0))
        assert out.min() > 0.999, name
    images = torch.rand(4, 3, SIZE, SIZE)
    out, _ = DevicePolicy("minimal")(images, torch.Generator())
    assert out is images


def test_unknown_policies_have_no_device_version() -> None:
    assert device_capable(["surface", "object", "minimal"])
    assert not device_capable("natural") and not device_capable("mine.yaml")
    with pytest.raises(ValueError, match="augment_on='cpu'"):
        DevicePolicy("natural")


# ------------------------------------------------------------------ the data module's path


def _module(root: Path | None, **kwargs) -> FactoryDataModule:
    settings = {"image_size": SIZE, "batch_size": 4, "val_fraction": 0.0, "test_fraction": 0.0}
    dm = FactoryDataModule(root=None if root is None else str(root), **settings | kwargs)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def frames16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 48 x 48 16-bit TIFFs holding 12-bit values (scaled by 4095, inferred)."""
    root = tmp_path_factory.mktemp("frames16")
    rng = np.random.default_rng(0)
    for i in range(8):
        frame = rng.integers(0, 4096, size=(48, 48), dtype=np.uint16)
        tifffile.imwrite(root / f"f{i}.tif", frame)
    return root


@pytest.mark.parametrize("kind", ["uint16 crops", "uint8 whole frames", "rgb to mono"])
def test_device_path_scales_exactly_as_the_cpu_path(frames16: Path, kind: str) -> None:
    if kind == "uint16 crops":
        root, settings = frames16, {"in_chans": 1, "crop_size": SIZE}
    else:
        channels = 1 if kind == "rgb to mono" else 3
        root, settings = None, {"in_chans": channels, "synthetic_size": SIZE}
    batches = {}
    for where in ("cpu", "device"):
        dm = _module(root, policy="minimal", augment_on=where, **settings)
        dm.configure_views(2, clean_view=True)
        raw = next(iter(dm.train_dataloader()))
        if where == "device":
            assert isinstance(raw, FrameBatch)
            expected = torch.uint16 if kind == "uint16 crops" else torch.uint8
            assert raw.frames.dtype == expected  # native dtype until the device
        batches[where] = dm.on_after_batch_transfer(raw, 0)
    cpu, device = batches["cpu"], batches["device"]
    assert cpu.paths == device.paths
    atol = 1e-6 if kind == "rgb to mono" else 0.0  # luminance: float32 rounding only
    for a, b in zip([*cpu.views, cpu.clean], [*device.views, device.clean], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_augmented_device_batches_and_masks(tmp_path: Path) -> None:
    dm = _module(None, augment_on="device", policy="surface")
    dm.configure_views(3, clean_view=True)
    raw = next(iter(dm.train_dataloader()))
    assert raw.frames.shape == (4, 1, 3, SIZE, SIZE)  # one letterboxed frame, three views
    batch = dm.on_after_batch_transfer(raw, 0)
    assert len(batch.views) == 3 and batch.clean.shape == (4, 3, SIZE, SIZE)
    assert not torch.equal(batch.views[0], batch.views[1])
    unaugmented = as_batch(raw)  # a loader read without the hook: unaugmented images
    torch.testing.assert_close(unaugmented.images, batch.clean)
    # a mask goes through the view's geometry with its image
    frames = torch.zeros(8, 1, 1, SIZE, SIZE, dtype=torch.uint8)
    frames[:, :, :, 4:12, 20:28] = 255
    masks = (frames[:, 0] > 0).float()
    raw = FrameBatch(frames, torch.zeros(8), torch.full((8,), 1 / 255), torch.ones(8), None, masks)
    views = DeviceViews(["object"], seed=3)(raw._replace(in_chans=1))
    bright = views.images > 0.5 * views.images.amax((1, 2, 3), keepdim=True)
    assert (bright == (views.masks > 0.5)).float().mean() > 0.97


def test_augment_on_choices_and_yaml_policies(tmp_path: Path, caplog) -> None:
    yaml_policy = tmp_path / "mine.yaml"
    yaml_policy.write_text("x: 1\n")
    with pytest.raises(ValueError, match="augment_on='cpu'") as error:
        FactoryDataModule(policy=str(yaml_policy), augment_on="device")
    assert len(str(error.value).splitlines()) == 2
    with pytest.raises(ValueError, match="augment_on"):
        FactoryDataModule(augment_on="gpu")
    gpu = SimpleNamespace(accelerator=CUDAAccelerator())
    cpu = SimpleNamespace(accelerator=object())
    assert not FactoryDataModule().augments_on_device()  # no trainer: CPU
    dm = FactoryDataModule()
    dm.trainer = cpu
    assert not dm.augments_on_device()
    dm.trainer = gpu
    assert dm.augments_on_device()  # auto on CUDA: the device
    dm = FactoryDataModule(policy=str(yaml_policy))
    dm.trainer = gpu
    with caplog.at_level(logging.WARNING, logger="lit_ssl.data"):
        assert not dm.augments_on_device() and not dm.augments_on_device()
    said = [r.getMessage() for r in caplog.records if "no device version" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    assert FactoryDataModule(augment_on="device").augments_on_device()


class _Spy(L.LightningModule):
    """Records what its training step receives."""

    view_spec = ViewSpec(2)

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[Batch] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch)
        return self.layer(batch.views[0].mean((1, 2, 3))[:, None]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_trainer_runs_the_device_policy_after_the_transfer() -> None:
    dm = FactoryDataModule(image_size=SIZE, batch_size=4, augment_on="device")
    spy = _Spy()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(spy, datamodule=dm)
    assert len(spy.seen) == 2 and all(type(b) is Batch for b in spy.seen)
    for batch in spy.seen:
        assert len(batch.views) == 2 and batch.views[0].dtype == torch.float32
        assert not torch.equal(batch.views[0], batch.views[1])  # augmented, not the fallback
