"""FactoryDataModule: a folder of factory images (or the embedded synthetic data) to batches.

Batches: every loader, every stage and task, yields one :class:`~lit_ssl.data.batch.Batch`
read by name: ``views`` (a list of float32 ``(B, C, H, W)`` tensors in [0, 1]), ``labels`` (a
LongTensor ``(B,)``, -1 where unknown), ``clean`` (the resize-only image when the model's head
asked for it, else None), ``paths`` (list of str) and ``masks``: ``(B, 1, H, W)`` defect masks
in the single-view stages (classify train without ``crop_size``, where a tiled classifier
takes tile labels from them; classify val, anomaly train/val, test, predict) of a dataset that
has mask files (MVTec AD, VisA, CSV ``mask`` column), through the image's geometry (resize,
letterbox padding as -1, flips and rotations of an augmented view); 1 defect, 0 good, -1
unknown (a defect image without its mask file); else None.

- ``task="ssl"``, train/val: as many augmented ``views`` as the model's ``view_spec`` asks for.
- ``task="classify"`` train/val, and test and predict of both tasks: one view (augmented for
  classify train, resize only otherwise). Test covers the test split, predict every readable
  sample of the dataset (sorted by path). Predicting needs no labels, even with
  ``task="classify"`` (labels are then -1): a plain folder of new images can be given as
  ``root``.

Views: with ``views=None`` the data module reads the model's needs in :meth:`setup`, from
``trainer.lightning_module.view_spec`` (:class:`~lit_ssl.data.batch.ViewSpec`; ``SSLModule``
has one); without a trainer, call :meth:`configure_views`.

Seeding: every loader's shuffling and augmentation seed comes from ``(seed, rank, stage, epoch,
build)``, ``build`` counting how many times that stage's loader was built in that epoch, so a
loader built again (``reload_dataloaders_every_n_epochs``, or calling ``train_dataloader()`` each
epoch) gives a new order and new views, while a fresh data module with the same seed reproduces
the first one (and a resumed run the same epoch's).

Native resolution (``crop_size``): in the augmented stages (ssl train/val, classify train)
every view is a ``crop_size`` window of the decoded frame (native dtype until cut), then the
view's policy resizes it to ``image_size`` (aspect kept: longest side, centred zero padding), so
``crop_size == image_size`` keeps the pixels. ssl views of one sample overlap (each within
``crop_size // 2`` of the first window); classify: good images get a random window, defect images
with a mask a window holding defect pixels, defect images without one the whole frame. The other
stages always see the whole frame, letterboxed (see :mod:`lit_ssl.data.crops`).

Augmentation on the device (``augment_on``): with ``"device"`` the workers of the augmented
stages only decode, cut and letterbox windows in their native dtype
(:class:`~lit_ssl.data.batch.FrameBatch`: uint8/uint16 stay integers, with the scaling that
``ImageStore.finish`` would apply), and :meth:`FactoryDataModule.on_after_batch_transfer` runs
the presets batched on the device (:mod:`lit_ssl.augment.device`), every sample with its own
parameters. ``"auto"`` does that when the trainer's accelerator is CUDA and every policy has a
device version (``surface``, ``object``, ``minimal``), else the albumentations policies run in
the workers as on the CPU. Evaluation batches (classify val, test, predict, anomaly) are always
made in the workers (resize only).

Several crops per decode (``crops_per_frame``): with ``crop_size``, one decode of a frame gives
``crops_per_frame`` independent training samples; the loaders then read
``batch_size // crops_per_frame`` frames per batch, so a batch still holds ``batch_size``
samples, and an epoch visits every frame once (``crops_per_frame`` samples from each).

No mean/std normalisation happens here; it lives inside the Backbone.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader

from lit_ssl.allow_list import register_checkpoint_class
from lit_ssl.augment.device import DEVICE_PRESETS, device_capable
from lit_ssl.augment.views import MultiView, multi_view
from lit_ssl.data.batch import FrameBatch, ViewSpec, collate_batch
from lit_ssl.data.crops import WindowSampler, check_crop_size
from lit_ssl.data.dataset import FactoryDataset, ImageStore, worker_init_fn
from lit_ssl.data.device_views import DeviceViews
from lit_ssl.data.io import (
    IMAGE_EXTENSIONS,
    WalkReport,
    declared_depth,
    infer_bit_depth,
    multipage_message,
)
from lit_ssl.data.layouts import LAYOUTS, Sample, find_samples
from lit_ssl.data.scan import (
    Scaling,
    ScanResult,
    cache_notice,
    infer_scaling,
    sample_paths,
    sample_stats,
    scan_files,
)
from lit_ssl.data.synthetic import default_dataset
from lit_ssl.data.table import (
    assign_splits,
    class_names_of,
    encode_labels,
    good_index,
    hide_labels,
    train_classes_message,
)

__all__ = ["FactoryDataModule"]

log = logging.getLogger("lit_ssl.data")
_STAGE_OFFSET = {"train": 0, "val": 1, "test": 2, "predict": 3}
_MAX_NAMED = 20
_LABELED_STAGES = (None, "fit", "validate", "test")
TASKS = ("ssl", "classify", "anomaly")
AUGMENT_ON = ("auto", "cpu", "device")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_crops_per_frame(crops: int, crop_size: int | None, batch_size: int) -> None:
    if isinstance(crops, bool) or not isinstance(crops, int) or crops < 1:
        raise ValueError(f"crops_per_frame={crops!r}; use a whole number >= 1")
    if crops == 1:
        return
    _check(
        crop_size is not None,
        f"crops_per_frame={crops} needs crop_size (crops of the native frame); set crop_size "
        "or use crops_per_frame=1",
    )
    _check(
        batch_size % crops == 0,
        f"batch_size={batch_size} is not divisible by crops_per_frame={crops}: a batch holds "
        f"batch_size // crops_per_frame frames, crops_per_frame samples each; use a batch_size "
        f"that is a multiple of {crops}",
    )


@register_checkpoint_class
class FactoryDataModule(L.LightningDataModule):
    """Factory inspection images for self-supervised pretraining or defect classification.

    Args:
        root: Dataset folder or CSV manifest; None uses the embedded synthetic factory data
            (generated once into ``$LIT_SSL_CACHE`` or ``~/.cache/lit_ssl``).
        layout: ``"auto"`` or one of ``mvtec``, ``visa``, ``class_folders``, ``csv``,
            ``unlabeled`` (see :mod:`lit_ssl.data.layouts`).
        task: ``"ssl"`` (multi-view batches), ``"classify"`` (image batches) or
            ``"anomaly"`` (image batches, resize only, for ``AnomalyDetector``: the layout's
            good train images build the memory bank; no defects needed in train, no labels
            needed at all).
        policy: Augmentation preset name or YAML path, or one per view.
        views: Number of augmented views; None lets the model decide (its ``view_spec``, read
            in :meth:`setup`, or :meth:`configure_views`), 2 if nobody does.
        image_size: Side of the square images given to the model. Every frame is resized
            with its aspect ratio kept (longest side to ``image_size``, then centred zero
            padding; masks are padded with -1, unknown): a 256 x 2048 strip is not squashed.
        crop_size: Train on ``crop_size x crop_size`` windows of the native pixels instead of
            whole frames (high-resolution frames, line-scan strips): each augmented view
            (ssl train/val, classify train) is a random window, resized to ``image_size``
            (``crop_size == image_size``: no resize at all). ssl views of one sample come
            from overlapping windows; for classify a masked defect image's window holds
            defect pixels and an unmasked one uses the whole frame (a warning counts them).
            Frames smaller than the window are zero-padded. Evaluation stages see whole
            frames. None (default): whole frames everywhere. At least 8.
        in_chans: Channels given to the model (mono/RGB converted as needed).
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        val_fraction: Fraction of each class held out for validation (when the layout has none).
        test_fraction: Fraction of each labeled class held out for test (when the layout has
            none); unlabeled images never go to test.
        seed: Seed of splits, label subsets, shuffling and augmentation.
        on_bad_file: ``"skip"`` unreadable files (one warning naming them) or ``"raise"``.
        label_fraction: Fraction of training labels kept per class (few-label experiments);
            hidden labels become -1 (ssl) or are dropped from training (classify).
        binary: Merge every defect type into one ``"defect"`` class (labels: 0 good,
            1 defect); splits stay stratified by defect type.
        resplit: Drop the layout's own splits (MVTec/VisA train/test, a CSV's split column) and
            split the whole dataset, stratified. None (default) keeps them, except for the
            synthetic data this package generates (``root=None``, or a tree holding the
            ``synthetic.json`` that :func:`~lit_ssl.data.write_synthetic_dataset` writes), which
            is re-split so a classifier trains on its defects. With the layout's split kept,
            ``task="classify"`` refuses to fit when train holds only good images (MVTec AD,
            VisA): pass ``resplit=True`` then. A layout without a val split gives val from train
            only (``val_fraction`` of it, stratified); test stays test.
        category: One object of a multi-object dataset: the VisA ``object`` column, or a
            sub-folder of ``root`` (an MVTec AD category) used as the root.
        bit_depth: Significant bits of 16-bit images (it wins over a TIFF's declared bits);
            None: a TIFF's declared 9-15 bits, else one depth for the whole dataset inferred
            at setup from the largest value of a fixed sample of the files (all of them up to
            64; the same with or without ``verify_files``), with a warning saying so.
        cache_images: Keep decoded images (native dtype) in memory: None (default) up to the
            ``cache_limit_mb`` budget, the rest read from disk (a one-line warning counts
            both); True every image, no budget (with ``verify_files=False`` too: the files
            are then decoded at setup to fill it); False none. The cache is filled at setup,
            so with ``verify_files=False`` and None nothing is cached.
        cache_limit_mb: Byte budget of the cache in MiB; None (default) is 25 % of the
            machine's physical memory.
        verify_files: Decode every file at setup to find bad files early (recommended). The
            pixel scaling does not depend on it.
        pin_memory: Pin batches in memory; None pins when CUDA is available.
        persistent_workers: Keep workers alive between epochs (when ``num_workers > 0``).
        drop_last: Drop the last incomplete training batch (never for ``task="anomaly"``,
            whose bank keeps every good image; ignored if the split is smaller
            than one batch).
        nuisance: Nuisance strength of the embedded synthetic data (``root=None`` only).
        synthetic_material: Material of the embedded synthetic data (``root=None`` only).
        synthetic_size: Image side of the embedded synthetic data (``root=None`` only).
        keep_layout_split: Deprecated (the layout's split is kept by default); ``True`` means
            ``resplit=False``. Removed in the next release.
        augment_on: Where the augmented stages' policies run (ssl train/val, classify train):
            ``"cpu"`` in the workers (albumentations); ``"device"`` batched on the model's
            device after the transfer (workers only decode and letterbox windows in their
            native dtype; presets ``surface``, ``object``, ``minimal`` only); ``"auto"``
            (default) the device when the trainer runs on CUDA and every policy is one of
            those presets, else the CPU.
        crops_per_frame: With ``crop_size``: training samples cut from one decode of a frame
            (each its own window and views); ``batch_size`` still counts samples (a batch holds
            ``batch_size // crops_per_frame`` frames), so it must be divisible by it. 1 (default):
            one decode per sample.

    Examples:
        >>> dm = FactoryDataModule(image_size=32, crop_size=32, crops_per_frame=4, batch_size=8)
        >>> dm.hparams.augment_on, dm.hparams.crops_per_frame
        ('auto', 4)
    """

    def __init__(
        self,
        root: str | None = None,
        layout: str = "auto",
        task: Literal["ssl", "classify", "anomaly"] = "ssl",
        policy: str | list[str] = "surface",
        views: int | None = None,
        image_size: int = 64,
        crop_size: int | None = None,
        in_chans: int = 3,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        on_bad_file: Literal["skip", "raise"] = "skip",
        label_fraction: float = 1.0,
        binary: bool = False,
        resplit: bool | None = None,
        category: str | None = None,
        bit_depth: int | None = None,
        cache_images: bool | None = None,
        cache_limit_mb: float | None = None,
        verify_files: bool = True,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        drop_last: bool = True,
        nuisance: float = 0.5,
        synthetic_material: str = "metal",
        synthetic_size: int = 64,
        keep_layout_split: bool | None = None,
        augment_on: Literal["auto", "cpu", "device"] = "auto",
        crops_per_frame: int = 1,
    ):
        super().__init__()
        _check(augment_on in AUGMENT_ON, f"augment_on={augment_on!r}; use one of {AUGMENT_ON}")
        _check_crops_per_frame(crops_per_frame, crop_size, batch_size)
        if augment_on == "device" and not device_capable(policy):
            raise ValueError(
                f"augment_on='device' cannot run policy={policy!r}: use a device preset "
                f"({', '.join(DEVICE_PRESETS)}) or augment_on='cpu'\n"
                "YAML policies and 'natural' are albumentations pipelines that run in the CPU "
                "workers (augment_on='auto' falls back to them)"
            )
        _check(task in TASKS, f"task={task!r}; use one of {TASKS}")
        _check(layout in (*LAYOUTS, "auto"), f"layout={layout!r}; use 'auto' or one of {LAYOUTS}")
        _check(on_bad_file in ("skip", "raise"), f"on_bad_file={on_bad_file!r}; use skip|raise")
        _check(views is None or views >= 1, f"views={views}; use a positive number or None")
        _check(image_size >= 8, f"image_size={image_size}; use at least 8 pixels")
        check_crop_size(crop_size)
        _check(
            cache_limit_mb is None or cache_limit_mb >= 0,
            f"cache_limit_mb={cache_limit_mb}; use a size in MiB >= 0, or None (25% of RAM)",
        )
        _check(batch_size >= 1 and num_workers >= 0, "batch_size >= 1 and num_workers >= 0")
        _check(0 < label_fraction <= 1, f"label_fraction={label_fraction}; must be in (0, 1]")
        if keep_layout_split is not None:
            warnings.warn(
                "keep_layout_split is deprecated and will be removed: the layout's split is "
                "kept by default; pass resplit=True (--data.resplit true) to re-split",
                DeprecationWarning,
                stacklevel=2,
            )
            if keep_layout_split and resplit is None:
                resplit = False
        self.save_hyperparameters()
        self.resplit = resplit
        self.root = root
        self.task = task
        self.num_views = views or 2
        self.clean_view = False
        self.samples: list[Sample] = []
        self.resolved_layout: str | None = None
        self._skipped: list[str] = []
        self._builds: Counter[tuple[str, int]] = Counter()
        self._ready = False
        self._told_unmasked = False
        self._told_cpu = False
        self._device_views: dict[str, DeviceViews] = {}

    # ------------------------------------------------------------------ views

    # It reads the model's ``view_spec`` in its own ``setup`` (``SSLModule`` checks this).
    adopts_view_spec = True

    def configure_views(self, num_views: int, clean_view: bool = False) -> None:
        """Set the number of views the model's head needs.

        :meth:`setup` calls it with the ``view_spec`` of the trainer's model; call it yourself
        when building loaders without a trainer.

        Args:
            num_views: Augmented views per sample.
            clean_view: Append the resize-only ("minimal") image as an extra last view.

        Raises:
            ValueError: The constructor was given a different explicit ``views``.
        """
        explicit = self.hparams.views
        if explicit is not None and explicit != num_views:
            raise ValueError(
                f"the data module was configured with views={explicit} but the model's head "
                f"needs num_views={num_views}; remove data.views or set it to {num_views}"
            )
        _check(num_views >= 1, f"num_views={num_views}; must be positive")
        self.num_views = num_views
        self.clean_view = clean_view

    # ------------------------------------------------------------------ setup

    def prepare_data(self) -> None:
        """Generate the embedded synthetic dataset once (``root=None`` only)."""
        if self.hparams.root is None:
            self._synthetic_root()

    def _synthetic_root(self) -> Path:
        hp = self.hparams
        return default_dataset(hp.nuisance, hp.synthetic_size, 3, hp.synthetic_material, 0)

    def setup(self, stage: str | None = None) -> None:
        """List, verify, label and split the samples (once; later calls only check the stage).

        Args:
            stage: Lightning stage. Every split is prepared together; ``"predict"`` accepts
                data without labels even for ``task="classify"``.

        Raises:
            ValueError: No readable image; ``task="classify"`` without labels (except for
                predict) or, for fit, with a train split of one class.
        """
        if not self._ready:
            self._prepare()
        self._check_stage(stage)
        self._adopt_view_spec()

    def _adopt_view_spec(self) -> None:
        """Views the trainer's model declares (``view_spec``), if it is attached and has one."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        spec = getattr(model, "view_spec", None)
        if isinstance(spec, ViewSpec):
            self.configure_views(spec.num_views, spec.clean)

    def _prepare(self) -> None:
        hp = self.hparams
        root = Path(hp.root) if hp.root else self._synthetic_root()
        self.root = str(root)
        report = WalkReport()
        self.resolved_layout, samples = find_samples(root, hp.layout, hp.category, report)
        self._report_skipped(report.skipped)
        _check(bool(samples), self._empty_message(root))
        scan = self._scan(samples)
        self._skipped = sorted({*scan.bad, *self._skipped})
        self.samples = [s for s in samples if s.path not in scan.bad]
        _check(bool(self.samples), f"none of the {len(samples)} files under {root} is readable")
        scaling = self._scaling(samples, scan)  # every listed file: the same sample either way
        self._label_and_split(root)
        self._store = ImageStore(
            [s.path for s in self.samples],
            hp.in_chans,
            hp.bit_depth if hp.bit_depth is not None else scaling.bit_depth,
            scan.cache,
            skip_bad=hp.on_bad_file == "skip",
            float_scale=scaling.float_scale,
            trust_declared=hp.bit_depth is None,
            declared={
                path: stats.declared_bits
                for path, stats in scan.stats.items()
                if declared_depth(stats.declared_bits) is not None
            },
        )
        self._ready = True
        self._log_summary()

    def _check_stage(self, stage: str | None) -> None:
        if self.task != "classify" or stage not in _LABELED_STAGES:
            return
        if not self.class_names:
            raise ValueError(
                f"task='classify' needs labels to {stage or 'fit'} but layout "
                f"{self.resolved_layout!r} has none; use class folders, an MVTec/VisA tree or a "
                "CSV manifest with a label column (predicting needs no labels)"
            )
        message = train_classes_message(self.labels, self.splits)
        if stage in (None, "fit") and message is not None:
            raise ValueError(message)

    def _report_skipped(self, skipped: dict[str, str]) -> None:
        if not skipped:
            return
        names = sorted(skipped)
        listed = "\n  ".join(f"{n}: {skipped[n]}" for n in names[:_MAX_NAMED])
        more = f"\n  ... and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
        message = f"{len(names)} path(s) under the dataset root cannot be listed:\n  {listed}{more}"
        if self.hparams.on_bad_file == "raise":
            raise ValueError(f"{message}\nremove or fix them, or set on_bad_file='skip'")
        warnings.warn(f"{message}\nthey are skipped", stacklevel=4)
        self._skipped = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]

    def _empty_message(self, root: Path) -> str:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        return (
            f"no images found under {root} (layout {self.resolved_layout!r}); expected files "
            f"with extensions {extensions} (any case); hidden files and folders are ignored"
        )

    def _scan(self, samples: list[Sample]) -> ScanResult:
        hp = self.hparams
        if not hp.verify_files and hp.cache_images is not True:
            if hp.cache_limit_mb is not None and hp.cache_images is None:
                warnings.warn(
                    f"cache_limit_mb={hp.cache_limit_mb} is unused: with verify_files=False "
                    "nothing is decoded at setup, so nothing is cached; set verify_files=True "
                    "or cache_images=True to fill the cache",
                    stacklevel=4,
                )
            return ScanResult()
        if not hp.verify_files:
            log.warning(
                "cache_images=True: every file is decoded once at setup to fill the cache, as "
                "verify_files=True does (unreadable files are found and skipped there too)"
            )
        paths = [s.path for s in samples]
        scan = scan_files(paths, hp.cache_images, hp.cache_limit_mb, min(8, os.cpu_count() or 1))
        if scan.bad:
            self._report_bad(scan.bad, len(paths))
        if scan.multipage:
            warnings.warn(multipage_message(scan.multipage), stacklevel=4)
        notice = cache_notice(scan, hp.cache_limit_mb is None)
        if notice is not None:
            warnings.warn(notice, stacklevel=4)
        self._check_crop_fits(scan.largest)
        return scan

    def _check_crop_fits(self, largest: tuple[int, int]) -> None:
        crop = self.hparams.crop_size
        if crop is not None and 0 < max(largest) < crop:
            warnings.warn(
                f"crop_size={crop} is larger than every frame (largest {largest[0]} x "
                f"{largest[1]} px): each crop is a whole frame zero-padded to {crop} px; use a "
                "smaller crop_size, or None",
                stacklevel=5,
            )

    def _report_bad(self, bad: dict[str, str], total: int) -> None:
        names = sorted(bad)
        listed = "\n  ".join(bad[n] for n in names[:_MAX_NAMED])
        more = f"\n  ... and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
        message = f"{len(bad)} of {total} image files are unreadable:\n  {listed}{more}"
        if self.hparams.on_bad_file == "raise":
            raise ValueError(f"{message}\nfix or delete them, or set on_bad_file='skip'")
        warnings.warn(f"{message}\nthey are skipped (on_bad_file='skip')", stacklevel=3)

    def _scaling(self, samples: list[Sample], scan: ScanResult) -> Scaling:
        """The dataset's bit depth and float scale, from a fixed sample of the listed files
        (their scan statistics when verified, else decoded here), so pixels are the same with
        and without ``verify_files``; says loudly what it inferred."""
        hp = self.hparams
        total = len(samples)
        picked = sample_paths([s.path for s in samples])
        if scan.scanned:
            stats = {p: scan.stats[p] for p in picked if p in scan.stats}
        else:
            stats = sample_stats(picked, min(8, os.cpu_count() or 1))
        scaling = infer_scaling(stats)
        which = (
            f"all {scaling.sampled} readable file(s)"
            if len(picked) == total
            else f"{scaling.sampled} file(s) spread over the {total}"
        )
        if hp.bit_depth is None and scaling.bit_depth is not None:
            bits = scaling.bit_depth
            warnings.warn(
                f"16-bit images are scaled as {bits}-bit (divided by {2**bits - 1}), inferred "
                f"from the largest value ({scaling.top_uint16}) of {which}; the same for every "
                "image; set bit_depth (--data.bit_depth) to state the camera's depth",
                stacklevel=4,
            )
        if scaling.float_scale == 255.0:
            warnings.warn(
                f"float images hold values up to {scaling.top_float:.6g} ({which}), above 1: "
                "they are read as 0-255 data and every float image is divided by 255 (not "
                "clipped); save them in [0, 1] or as 8/16-bit integers if that is wrong",
                stacklevel=4,
            )
        if scan.scanned:
            self._check_scaling(scaling, scan, which)
        return scaling

    def _check_scaling(self, scaling: Scaling, scan: ScanResult, which: str) -> None:
        """Warn when files the scan decoded (outside the sample) go beyond the scaling."""
        hp = self.hparams
        whole = infer_scaling(scan.stats)
        bits = hp.bit_depth if hp.bit_depth is not None else scaling.bit_depth
        if hp.bit_depth is None and whole.top_uint16 > 2 ** (bits or 16) - 1:
            warnings.warn(
                f"16-bit images hold values up to {whole.top_uint16}, above the "
                f"{bits}-bit white inferred from {which}: those pixels are clipped to 1; set "
                f"bit_depth={infer_bit_depth(whole.top_uint16)} (--data.bit_depth)",
                stacklevel=5,
            )
        if whole.top_float is not None and whole.top_float > 1.0 and scaling.float_scale != 255:
            warnings.warn(
                f"float images hold values up to {whole.top_float:.6g}, but none of {which} "
                "went above 1: values above 1 are clipped to 1; save them in [0, 1] or as "
                "8/16-bit integers",
                stacklevel=5,
            )

    def _resplit(self, root: Path) -> bool:
        if self.resplit is not None:
            return bool(self.resplit)
        made_here = self.hparams.root is None or (root / "synthetic.json").is_file()
        if made_here:
            log.info("synthetic data made by lit_ssl: re-splitting it (pass resplit=False to keep)")
        return made_here

    def _label_and_split(self, root: Path) -> None:
        hp = self.hparams
        self.class_names = class_names_of(self.samples)
        self.labels = encode_labels(self.samples, self.class_names)
        self.type_names, self.types = list(self.class_names), self.labels.copy()  # kept whole
        self.splits = assign_splits(
            self.samples,
            self.labels,
            hp.val_fraction,
            hp.test_fraction,
            hp.seed,
            self._resplit(root),
        )
        train = np.flatnonzero(self.splits == "train")
        self.train_labels = hide_labels(self.labels, train, hp.label_fraction, hp.seed)
        if hp.binary and self.class_names:
            self._merge_defect_types()

    def _merge_defect_types(self) -> None:
        good = good_index(self.class_names)
        if good is None:
            raise ValueError(
                f"binary=True needs a defect-free class named good/ok/normal; classes are "
                f"{self.class_names}"
            )
        names = [self.class_names[good], "defect"]
        self.labels, self.train_labels = (
            np.where(labels < 0, labels, (labels != good).astype(labels.dtype))
            for labels in (self.labels, self.train_labels)
        )
        self.class_names = names

    def _log_summary(self) -> None:
        log.info(
            "data: %s layout at %s; classes %s; splits %s",
            self.resolved_layout,
            self.root,
            self.class_counts,
            self.split_sizes,
        )

    # ------------------------------------------------------------------ facts

    def _require_setup(self) -> None:
        if not self._ready:
            raise RuntimeError("call setup() first (the Trainer does it before fitting)")

    @property
    def good_index(self) -> int | None:
        """Index of the defect-free class (0), or None if no class is named good/ok/normal.

        Its name is ``class_names[good_index]`` (``DefectClassifier(good_class=...)``)."""
        self._require_setup()
        return good_index(self.class_names)

    @property
    def good_class(self) -> int | None:
        """Deprecated: the index of the good class; use ``good_index``."""
        warnings.warn(
            "FactoryDataModule.good_class (an index) is deprecated; use good_index, and "
            "class_names[good_index] for its name (DefectClassifier's good_class).",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.good_index

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabeled)."""
        self._require_setup()
        return len(self.class_names)

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class over the whole dataset (``"unlabeled"`` for unknown labels)."""
        self._require_setup()
        names = [*self.class_names, "unlabeled"]
        return dict(Counter(names[label] for label in self.labels.tolist()))

    @property
    def train_class_counts(self) -> list[int]:
        """Training labels actually used per class, aligned with :attr:`class_names`.

        Counts the train split after ``label_fraction`` (hidden labels are not counted) and
        ``binary``; the basis of "balanced" class weights.
        """
        self._require_setup()
        used = self.train_labels[(self.splits == "train") & (self.train_labels >= 0)]
        return np.bincount(used, minlength=len(self.class_names)).tolist()

    @property
    def skipped_files(self) -> list[str]:
        """Image files left out at setup because they are unreadable (named in a warning)."""
        self._require_setup()
        return list(self._skipped)

    @property
    def split_sizes(self) -> dict[str, int]:
        """Images per split."""
        self._require_setup()
        return {
            split: int((self.splits == split).sum())
            for split in _STAGE_OFFSET
            if split != "predict"
        }

    def sample_table(self) -> list[dict[str, str | int | None]]:
        """The sample table, one row per sample (handy for logging or a pandas DataFrame).

        Returns:
            Rows with ``path``, ``label`` (name or None), ``target`` (int, -1 unknown),
            ``split`` and ``mask`` (path or None).
        """
        self._require_setup()
        return [
            {
                "path": s.path,
                "label": s.label,
                "target": int(target),
                "split": str(split),
                "mask": s.mask,
            }
            for s, target, split in zip(self.samples, self.labels, self.splits, strict=True)
        ]

    # ------------------------------------------------------------------ loaders

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0

    def _next_seed(self, stage: str) -> int:
        trainer = getattr(self, "trainer", None)
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        build = self._builds[(stage, epoch)]
        self._builds[(stage, epoch)] += 1
        entropy = [self.hparams.seed % 2**64, self._rank(), _STAGE_OFFSET[stage], epoch, build]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def _augmented(self, stage: str) -> bool:
        """Whether ``stage`` draws augmented views (else resize only)."""
        return (stage == "train" and self.task != "anomaly") or (
            stage == "val" and self.task == "ssl"
        )

    def _views(self, stage: str, num_views: int, clean: bool, seed: int) -> MultiView:
        hp = self.hparams
        names = hp.policy if self._augmented(stage) else "minimal"
        return multi_view(names, num_views, hp.image_size, hp.in_chans, clean, seed)

    def _indices(self, split: str, labels: np.ndarray, labeled_only: bool) -> np.ndarray:
        if split == "all":
            return np.arange(len(self.samples))
        indices = np.flatnonzero(self.splits == split)
        if labeled_only:
            indices = indices[labels[indices] >= 0]
        if len(indices) == 0:
            raise ValueError(
                f"the {split} split is empty (split sizes {self.split_sizes}); add images or "
                "change val_fraction/test_fraction"
            )
        return indices

    def augments_on_device(self) -> bool:
        """Whether the augmented stages run their policies on the device (``augment_on``).

        ``"auto"`` means yes when the attached trainer's accelerator is CUDA and every policy
        has a device version; a YAML policy (or ``natural``) then stays on the CPU, said once.
        """
        hp = self.hparams
        if hp.augment_on != "auto":
            return hp.augment_on == "device"
        trainer = getattr(self, "trainer", None)
        on_gpu = trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)
        if on_gpu and not device_capable(hp.policy):
            if not self._told_cpu:
                self._told_cpu = True
                log.warning(
                    "augment_on='auto': policy %r has no device version, so augmentation "
                    "runs in the CPU workers (device presets: %s)",
                    hp.policy,
                    ", ".join(DEVICE_PRESETS),
                )
            return False
        return on_gpu

    def _policy_names(self, count: int) -> list[str]:
        names = self.hparams.policy
        names = [names] if isinstance(names, str) else list(names)
        return names * count if len(names) == 1 else names

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run the device policies on a :class:`~lit_ssl.data.batch.FrameBatch` (on the device).

        Other batches pass unchanged. Lightning calls it after moving each batch to the
        model's device (``augment_on="device"``, or ``"auto"`` on CUDA).
        """
        if isinstance(batch, FrameBatch):
            views = self._device_views.get(batch.stage)
            return batch.as_batch() if views is None else views(batch)
        return batch

    def _loader(self, stage: str) -> DataLoader:
        hp = self.hparams
        seed = self._next_seed(stage)
        device = self._augmented(stage) and self.augments_on_device()
        dataset = self._dataset(stage, seed, device)
        if device:
            count = len(dataset.transform.policies)
            clean = dataset.transform.clean is not None
            self._device_views[stage] = DeviceViews(self._policy_names(count), clean, seed)
        workers, train = hp.num_workers, stage == "train"
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        batch_size = hp.batch_size // dataset.crops_per_frame  # frames per batch
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0 and hp.persistent_workers,
            worker_init_fn=worker_init_fn if workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),
            collate_fn=collate_batch,
            drop_last=self._drop_last(stage, len(dataset), batch_size),
        )

    def _drop_last(self, stage: str, size: int, batch_size: int) -> bool:
        """Drop the last incomplete training batch; never for anomaly (the bank keeps every
        good image) nor when the split is smaller than one batch."""
        hp = self.hparams
        train = stage == "train" and self.task != "anomaly"
        return train and hp.drop_last and size >= batch_size

    def _dataset(self, stage: str, seed: int, device: bool = False) -> FactoryDataset:
        self._require_setup()
        split = "all" if stage == "predict" else stage
        classify = self.task == "classify"
        if classify and stage != "predict":
            self._check_stage(
                {"train": "fit", "val": "validate"}[stage] if stage != "test" else stage
            )
        labels = self.train_labels if stage == "train" else self.labels
        indices = self._indices(split, labels, labeled_only=classify and stage != "predict")
        single = classify or self.task == "anomaly" or stage in ("test", "predict")
        if single:
            transform = self._views(stage, 1, False, seed)
        else:
            transform = self._views(stage, self.num_views, self.clean_view, seed)
        augmented = self._augmented(stage)
        whole = self.hparams.crop_size is None or not augmented
        masks = self._mask_files() if single and whole else None  # crops carry none
        good = good_index(self.class_names)
        crops = crop_masks = None
        if augmented and self.hparams.crop_size is not None:
            crops = WindowSampler(self.hparams.crop_size, seed)
            if classify:
                crop_masks = [s.mask for s in self.samples]
                self._tell_unmasked(indices, labels, good)
        types = self.types if stage in ("val", "test", "predict") else None
        return FactoryDataset(
            self._store,
            indices,
            labels,
            transform,
            masks,
            good,
            crops,
            crop_masks,
            types,
            native_size=self.hparams.image_size if device else None,
            crops_per_frame=self.hparams.crops_per_frame if crops is not None else 1,
            stage=stage,
        )

    def _tell_unmasked(self, indices: np.ndarray, labels: np.ndarray, good: int | None) -> None:
        """Warn once how many defect training images have no mask (whole-frame views)."""
        if self._told_unmasked:
            return
        unmasked = [
            i for i in indices.tolist() if labels[i] != good and self.samples[i].mask is None
        ]
        if unmasked:
            self._told_unmasked = True
            warnings.warn(
                f"crop_size={self.hparams.crop_size}: {len(unmasked)} of {len(indices)} "
                "training images are defect images without a mask file, so their training "
                "view is the whole frame (letterboxed), not a crop; add masks (MVTec "
                "ground_truth/, VisA, a CSV mask column) to crop around their defects",
                stacklevel=4,
            )

    def _mask_files(self) -> list[str | None] | None:
        """Every sample's mask file, or None when the dataset has no masks at all."""
        files = [s.mask for s in self.samples]
        return files if any(f is not None for f in files) else None

    def train_dataloader(self) -> DataLoader:
        """Training batches (augmented views for ssl, one augmented view for classify)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches (augmented views for ssl, one resized image for classify)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches (one resized view, labels, paths) of the test split."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches (one resized view, labels, paths) over every sample."""
        return self._loader("predict")
