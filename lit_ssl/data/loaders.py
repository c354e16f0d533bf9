"""One stage's dataset and DataLoader, from its row of :data:`~lit_ssl.data.plans.PLANS`, the
:class:`~lit_ssl.data.sample_table.SampleTable` and the data module's options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lit_ssl.augment.views import multi_view
from lit_ssl.data.batch import collate_batch
from lit_ssl.data.crops import WindowSampler
from lit_ssl.data.dataset import FactoryDataset, ImageStore, worker_init_fn
from lit_ssl.data.plans import StagePlan
from lit_ssl.data.sample_table import SampleTable

__all__ = ["stage_dataset", "stage_loader", "unmasked_defects"]


def stage_dataset(
    table: SampleTable,
    store: ImageStore,
    stage: str,
    stage_plan: StagePlan,
    options: Mapping[str, Any],
    views: tuple[int, bool],
    seed: int,
    device: bool = False,
) -> FactoryDataset:
    """The dataset of one loader stage.

    Args:
        table: The sample table.
        store: Its decoded images.
        stage: ``train``, ``val``, ``test`` or ``predict``.
        stage_plan: What the stage gets.
        options: The data module's hyperparameters (``policy``, ``image_size``, ``in_chans``,
            ``crop_size``, ``crops_per_frame``).
        views: The model's ``(num_views, clean_view)`` (for ``views="model"`` stages).
        seed: Seed of the stage's augmentation and windows.
        device: Leave the policies to the device (native-dtype windows, letterboxed).
    """
    labelling = table.labelling
    labels = labelling.train_labels if stage == "train" else labelling.labels
    indices = table.indices(
        "all" if stage == "predict" else stage, labels, stage_plan.labelled_only
    )
    many = stage_plan.views == "model"
    transform = multi_view(
        options["policy"] if stage_plan.augmented else "minimal",
        views[0] if many else 1,
        options["image_size"],
        options["in_chans"],
        views[1] and many,
        seed,
    )
    crop_size = options["crop_size"]
    cropped = stage_plan.augmented and crop_size is not None
    aimed = cropped and stage_plan.aimed
    return FactoryDataset(
        store,
        indices,
        labels,
        transform,
        table.mask_files() if stage_plan.masks and not cropped else None,  # crops carry none
        table.good_index,
        WindowSampler(crop_size, seed) if cropped else None,
        [s.mask for s in table.samples] if aimed else None,
        labelling.types if stage_plan.types else None,
        native_size=options["image_size"] if device else None,
        crops_per_frame=options["crops_per_frame"] if cropped else 1,
        stage=stage,
    )


def unmasked_defects(table: SampleTable, indices: np.ndarray, labels: np.ndarray) -> int:
    """How many of ``indices`` are defect images without a mask file."""
    good, samples = table.good_index, table.samples
    return sum(labels[i] != good and samples[i].mask is None for i in indices.tolist())


def stage_loader(
    dataset: FactoryDataset,
    stage_plan: StagePlan,
    options: Mapping[str, Any],
    seed: int,
    shuffle: bool,
) -> DataLoader:
    """The DataLoader of one stage's dataset.

    Args:
        dataset: The stage's dataset.
        stage_plan: What the stage gets (``drop_last``).
        options: The data module's hyperparameters (``batch_size``, ``num_workers``,
            ``pin_memory``, ``persistent_workers``, ``drop_last``).
        seed: Seed of the shuffling.
        shuffle: Shuffle the samples (training).
    """
    workers = options["num_workers"]
    pin = options["pin_memory"]
    batch_size = options["batch_size"] // dataset.crops_per_frame  # frames per batch
    # never for a split smaller than one batch: it would give no batch at all
    drop_last = stage_plan.drop_last and options["drop_last"] and len(dataset) >= batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin is None else pin,
        persistent_workers=workers > 0 and options["persistent_workers"],
        worker_init_fn=worker_init_fn if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_batch,
        drop_last=drop_last,
    )
