"""Torch datasets over a sample table: decode once per sample, transform into one or more views.

The per-sample path reads the file once (or takes the array decoded at setup), converts it to
float32 [0, 1] with ``in_chans`` channels, and runs every view's policy on that one array. Each
sample is an unbatched :class:`~lit_ssl.data.batch.Batch`; ``collate_batch`` stacks them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lit_ssl.augment.views import MultiView
from lit_ssl.data.batch import Batch
from lit_ssl.data.io import BadImageError, convert_channels, decode, to_float

__all__ = ["FactoryDataset", "ImageStore", "worker_init_fn"]

log = logging.getLogger("lit_ssl.data")


class ImageStore:
    """Decoded images by index, from an in-memory cache or the disk.

    Args:
        paths: Image files.
        in_chans: Channels to return.
        bit_depth: Significant bits of 16-bit data (None infers per image).
        cache: Arrays decoded at setup, by path (None reads from disk every time).
        skip_bad: When a file fails to decode at run time, use the next readable one
            (with a warning) instead of raising.
        float_scale: Divisor of float images (1 or 255); None decides per image (see
            :func:`~lit_ssl.data.io.to_float`).
    """

    def __init__(
        self,
        paths: Sequence[str],
        in_chans: int,
        bit_depth: int | None = None,
        cache: dict[str, np.ndarray] | None = None,
        skip_bad: bool = True,
        float_scale: float | None = None,
    ):
        self.paths = list(paths)
        self.in_chans = in_chans
        self.bit_depth = bit_depth
        self.cache = cache
        self.skip_bad = skip_bad
        self.float_scale = float_scale

    def __len__(self) -> int:
        return len(self.paths)

    def _raw(self, index: int) -> np.ndarray:
        path = self.paths[index]
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        return decode(path).image  # multi-page TIFFs were named at the setup scan

    def image(self, index: int) -> np.ndarray:
        """float32 ``H x W x in_chans`` image in [0, 1] of sample ``index``."""
        return self.read(index)[0]

    def read(self, index: int) -> tuple[np.ndarray, int]:
        """Image of sample ``index`` and the index it really came from.

        The two differ only when the file became unreadable after setup and ``skip_bad`` is
        set: the next readable sample is used, so its label and path must go with it.
        """
        for attempt in range(len(self.paths)):
            current = (index + attempt) % len(self.paths)
            try:
                raw = self._raw(current)
            except BadImageError as error:
                if not self.skip_bad:
                    raise
                log.warning("skipping unreadable file at run time: %s", error)
                continue
            image = to_float(raw, self.bit_depth, self.float_scale)
            return convert_channels(image, self.in_chans), current
        raise BadImageError("no readable image left in the dataset")


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    image = np.clip(image.astype(np.float32, copy=False), 0.0, 1.0)
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class FactoryDataset(Dataset):
    """Samples of one split; each item an unbatched :class:`~lit_ssl.data.batch.Batch`.

    Items: ``views`` a list of ``(C, H, W)`` float tensors in [0, 1] (one per policy of
    ``transform``), ``labels`` an ``int`` (-1 unknown), ``clean`` the ``(C, H, W)`` clean view
    when ``transform`` has one, ``paths`` the source file (a ``str``), ``masks`` the defect
    mask ``(1, H, W)`` when ``masks`` is given (see :func:`read_mask`), else ``None``.

    Args:
        store: Decoded images.
        indices: Which samples of ``store`` form this split.
        labels: Label of every sample of ``store`` (-1 unknown).
        transform: Views to produce (one policy for single-image batches).
        masks: Mask file of every sample of ``store`` (``None``: none), with ``good_label``;
            only for resize-only single views (the mask is resized like the image).
        good_label: Label of the defect-free class (its images need no mask file).
    """

    def __init__(
        self,
        store: ImageStore,
        indices: np.ndarray,
        labels: np.ndarray,
        transform: MultiView,
        masks: list[str | None] | None = None,
        good_label: int | None = None,
    ):
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.masks = masks
        self.good_label = good_label

    def __len__(self) -> int:
        return len(self.indices)

    def reseed(self, seed: int) -> None:
        """Reseed every albumentations policy of this dataset (see :func:`worker_init_fn`)."""
        self.transform.reseed(seed)

    def __getitem__(self, item: int) -> Batch:
        image, index = self.store.read(int(self.indices[item]))
        views = [_to_tensor(v) for v in self.transform(image)]
        clean = views.pop() if self.transform.clean is not None else None
        label = int(self.labels[index])
        mask = None
        if self.masks is not None:
            size = tuple(views[0].shape[-2:])
            mask = read_mask(self.masks[index], label == self.good_label, size)
        return Batch(views, label, clean, self.store.paths[index], mask)


def read_mask(path: str | None, good: bool, size: tuple[int, int]) -> torch.Tensor:
    """A defect mask ``(1, H, W)`` resized to ``size`` (nearest): 1 defect, 0 good pixels.

    A good image without a mask file is all 0; any other image without one (a defect whose
    mask is missing, or an unknown label) is all -1, "unknown", which pixel metrics leave out.
    """
    if path is None:
        return torch.full((1, *size), 0.0 if good else -1.0)
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadImageError(f"cannot read mask {path}")
    if raw.ndim == 3:
        raw = raw.max(axis=2)
    resized = cv2.resize((raw > 0).astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(resized.astype(np.float32))[None]


def worker_init_fn(worker_id: int) -> None:
    """Reseed the worker's copy of the dataset's policies from the worker's torch seed.

    The torch seed differs per worker and per epoch (non-persistent workers get a new base seed
    every epoch; persistent workers keep advancing their own RNG), and it is reproducible when
    the DataLoader's generator is seeded. This fixes albumentations 2.0.8 composes, whose private
    RNG is otherwise copied unchanged into every worker.

    Args:
        worker_id: Index of the worker (unused; the seed already includes it).
    """
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)
