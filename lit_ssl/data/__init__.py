"""Factory image data: readers, dataset layouts, synthetic factory imagery, FactoryDataModule.

Public API: :class:`FactoryDataModule`, :class:`Batch` (what every loader yields, read by name),
:func:`as_batch`, :class:`ViewSpec`, :func:`read_image`, :func:`read_raw`,
:func:`list_images`, :class:`BadImageError`, :class:`Sample`, :func:`find_samples`,
:func:`detect_layout`, :func:`write_synthetic_dataset`, :func:`default_dataset`,
:func:`generate_image`, :func:`measure_energy`, :data:`MATERIALS`, :data:`DEFECTS`.
"""

from lit_ssl.data.batch import Batch, ViewSpec, as_batch, collate_batch
from lit_ssl.data.datamodule import FactoryDataModule
from lit_ssl.data.dataset import FactoryDataset, ImageStore, worker_init_fn
from lit_ssl.data.io import BadImageError, list_images, read_image, read_raw
from lit_ssl.data.layouts import LAYOUTS, Sample, detect_layout, find_samples
from lit_ssl.data.synthetic import (
    DEFECTS,
    MATERIALS,
    default_dataset,
    generate_image,
    measure_energy,
    write_synthetic_dataset,
)

__all__ = [
    "DEFECTS",
    "LAYOUTS",
    "MATERIALS",
    "BadImageError",
    "Batch",
    "FactoryDataModule",
    "FactoryDataset",
    "ImageStore",
    "Sample",
    "ViewSpec",
    "as_batch",
    "collate_batch",
    "default_dataset",
    "detect_layout",
    "find_samples",
    "generate_image",
    "list_images",
    "measure_energy",
    "read_image",
    "read_raw",
    "worker_init_fn",
    "write_synthetic_dataset",
]
