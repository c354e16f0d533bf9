"""FactoryDataModule: a folder of factory images (or the embedded synthetic data) to batches.

Batches: every loader, every stage and task, yields one :class:`~lit_ssl.data.batch.Batch`
read by name: ``views`` (a list of float32 ``(B, C, H, W)`` tensors in [0, 1]), ``labels`` (a
LongTensor ``(B,)``, -1 where unknown), ``clean`` (the resize-only image when the model's head
asked for it, else None), ``paths`` (list of str), ``types`` (defect types, evaluation stages)
and ``masks``: ``(B, 1, H, W)`` defect masks of a dataset that has mask files (MVTec AD, VisA,
CSV ``mask`` column) in the single-view stages that see whole frames, through the image's
geometry (resize, letterbox padding as -1, flips and rotations of an augmented view); 1 defect,
0 good, -1 unknown (a defect image without its mask file); else None.

Which stage of which task gets what is one table, :data:`lit_ssl.data.plans.PLANS`: ssl
train/val get as many augmented views as the model's ``view_spec`` asks for; every other stage
one view, augmented for classify train, resize only otherwise. Test covers the test split,
predict every readable sample (sorted by path); predicting needs no labels, even with
``task="classify"`` (labels are then -1): a plain folder of new images can be given as ``root``.

Views: with ``views=None`` the data module reads the model's needs in :meth:`setup`, from
``trainer.lightning_module.view_spec`` (:class:`~lit_ssl.data.batch.ViewSpec`; ``SSLModule``
has one); without a trainer, call :meth:`configure_views`.

The samples, labels, splits and scaling are a plain
:class:`~lit_ssl.data.sample_table.SampleTable` built at setup; this class holds the Lightning
hooks (setup, loaders, ``on_after_batch_transfer``) and reads the table and the plans.

Seeding: every loader's shuffling and augmentation seed comes from ``(seed, rank, stage, epoch,
build)`` (:class:`~lit_ssl.data.seeding.LoaderSeeds`), so a loader built again gives a new
order and new views, while a fresh data module with the same seed reproduces the first one.

Native resolution (``crop_size``): the augmented stages cut every view out of the decoded frame
(:mod:`lit_ssl.data.crops`); the other stages always see the whole frame, letterboxed. With
``crops_per_frame``, one decode gives that many training samples; the loaders read
``batch_size // crops_per_frame`` frames per batch, so a batch still holds ``batch_size``
samples, and an epoch visits every frame once.

Augmentation on the device (``augment_on``): the workers of the augmented stages only decode
and cut, and :meth:`FactoryDataModule.on_after_batch_transfer` runs the presets batched on the
device (:mod:`lit_ssl.data.device_views`). Evaluation batches are always made in the workers.

No mean/std normalisation happens here; it lives inside the Backbone.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader

from lit_ssl.allow_list import register_checkpoint_class
from lit_ssl.augment.device import DEVICE_PRESETS, device_capable
from lit_ssl.data.arguments import check_arguments, check_num_views
from lit_ssl.data.batch import FrameBatch, ViewSpec
from lit_ssl.data.dataset import FactoryDataset, ImageStore
from lit_ssl.data.device_views import DeviceViews, policy_names
from lit_ssl.data.layouts import Sample
from lit_ssl.data.loaders import stage_dataset, stage_loader, unmasked_defects
from lit_ssl.data.plans import loader_stages, plan
from lit_ssl.data.sample_table import FromTable, SampleTable, TableOptions
from lit_ssl.data.seeding import LoaderSeeds
from lit_ssl.data.synthetic import default_dataset

__all__ = ["FactoryDataModule"]

log = logging.getLogger("lit_ssl.data")


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
        augment_on: Literal["auto", "cpu", "device"] = "auto",
        crops_per_frame: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_arguments(self.hparams)
        self.root = root
        self.task = task
        self.num_views = views or 2
        self.clean_view = False
        self.table: SampleTable | None = None
        self._seeds = LoaderSeeds(seed)
        self._told_unmasked = False
        self._told_cpu = False
        self._device_views: dict[str, DeviceViews] = {}

    # ------------------------------------------------------------------ views

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
        check_num_views(num_views, self.hparams.views)
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
        if self.table is None:
            self._prepare()
        self._check_labels(loader_stages(stage))
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
        options = TableOptions(**{f.name: hp[f.name] for f in fields(TableOptions)})
        table = SampleTable.build(root, options, synthetic=hp.root is None)
        self._store = ImageStore(
            table.paths,
            hp.in_chans,
            hp.bit_depth if hp.bit_depth is not None else table.scaling.bit_depth,
            table.scan.cache,
            skip_bad=hp.on_bad_file == "skip",
            float_scale=table.scaling.float_scale,
            trust_declared=hp.bit_depth is None,
            declared=table.declared_depths(),
        )
        self.table = table
        log.info(
            "data: %s layout at %s; classes %s; splits %s",
            table.layout,
            self.root,
            table.class_counts,
            table.split_sizes,
        )

    def _check_labels(self, stages: tuple[str, ...]) -> None:
        """Labels are there for every labelled-only loader of ``stages`` (and, for training,
        two classes in train)."""
        if any(plan(self.task, stage).labelled_only for stage in stages):
            lightning_stage = {"train": "fit", "val": "validate"}.get(stages[0], stages[0])
            training = "train" in stages and plan(self.task, "train").labelled_only
            self._table().check_labels(f"task={self.task!r}", lightning_stage, training)

    # ------------------------------------------------------------------ facts

    def _table(self) -> SampleTable:
        if self.table is None:
            raise RuntimeError("call setup() first (the Trainer does it before fitting)")
        return self.table

    @property
    def samples(self) -> list[Sample]:
        """The readable samples (empty before :meth:`setup`)."""
        return [] if self.table is None else self.table.samples

    @property
    def resolved_layout(self) -> str | None:
        """The layout the root was read as (None before :meth:`setup`)."""
        return None if self.table is None else self.table.layout

    class_names = FromTable(
        "class_names", "Names of the label indices, the good class first (empty: unlabelled)."
    )
    type_names = FromTable(
        "labelling.type_names", "Defect type names (class names before a binary merge)."
    )
    labels = FromTable("labelling.labels", "Integer label per sample (-1 unknown).")
    types = FromTable("labelling.types", "Defect type per sample (-1 unknown).")
    splits = FromTable("labelling.splits", "Split per sample (train, val, test).")
    train_labels = FromTable(
        "labelling.train_labels", "``labels`` with those hidden by label_fraction at -1."
    )
    good_index = FromTable(
        "good_index",
        "Index of the defect-free class (0), or None if no class is named good/ok/normal; its "
        "name is ``class_names[good_index]`` (``DefectClassifier(good_class=...)``).",
        RuntimeError,
    )
    class_counts = FromTable(
        "class_counts",
        "Images per class over the whole dataset (``unlabeled``: unknown).",
        RuntimeError,
    )
    train_class_counts = FromTable(
        "train_class_counts",
        "Training labels actually used per class, aligned with ``class_names`` (after "
        "``label_fraction`` and ``binary``); the basis of balanced class weights.",
        RuntimeError,
    )
    split_sizes = FromTable("split_sizes", "Images per split.", RuntimeError)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabeled)."""
        return len(self._table().class_names)

    @property
    def skipped_files(self) -> list[str]:
        """Image files left out at setup because they are unreadable (named in a warning)."""
        return list(self._table().skipped_files)

    def sample_table(self) -> list[dict[str, str | int | None]]:
        """The sample table, one row per sample (handy for logging or a pandas DataFrame).

        Returns:
            Rows with ``path``, ``label`` (name or None), ``target`` (int, -1 unknown),
            ``split`` and ``mask`` (path or None).
        """
        return self._table().rows()

    # ------------------------------------------------------------------ device augmentation

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

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run the device policies on a :class:`~lit_ssl.data.batch.FrameBatch` (on the device).

        Other batches pass unchanged. Lightning calls it after moving each batch to the
        model's device (``augment_on="device"``, or ``"auto"`` on CUDA).
        """
        if isinstance(batch, FrameBatch):
            views = self._device_views.get(batch.stage)
            return batch.as_batch() if views is None else views(batch)
        return batch

    # ------------------------------------------------------------------ loaders

    def _next_seed(self, stage: str) -> int:
        trainer = getattr(self, "trainer", None)
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        rank = int(trainer.global_rank) if trainer is not None else 0
        return self._seeds.next(stage, rank, epoch)

    def _loader(self, stage: str) -> DataLoader:
        table, stage_plan, hp = self._table(), plan(self.task, stage), self.hparams
        seed = self._next_seed(stage)
        device = stage_plan.augmented and self.augments_on_device()
        self._check_labels((stage,))
        views = (self.num_views, self.clean_view)
        dataset = stage_dataset(table, self._store, stage, stage_plan, hp, views, seed, device)
        if stage_plan.aimed and dataset.crops is not None:
            self._tell_unmasked(table, dataset)
        if device:
            count = len(dataset.transform.policies)
            clean = dataset.transform.clean is not None
            self._device_views[stage] = DeviceViews(policy_names(hp.policy, count), clean, seed)
        return stage_loader(dataset, stage_plan, hp, seed, shuffle=stage == "train")

    def _tell_unmasked(self, table: SampleTable, dataset: FactoryDataset) -> None:
        """Warn once how many defect training images have no mask (whole-frame views)."""
        if self._told_unmasked:
            return
        unmasked = unmasked_defects(table, dataset.indices, dataset.labels)
        if unmasked:
            self._told_unmasked = True
            warnings.warn(
                f"crop_size={self.hparams.crop_size}: {unmasked} of {len(dataset.indices)} "
                "training images are defect images without a mask file, so their training "
                "view is the whole frame (letterboxed), not a crop; add masks (MVTec "
                "ground_truth/, VisA, a CSV mask column) to crop around their defects",
                stacklevel=4,
            )

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
