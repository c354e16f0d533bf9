"""Torch datasets over a sample table: decode once per sample, transform into one or more views.

The per-sample path reads the file once (or takes the array decoded at setup), converts it to
float32 [0, 1] with ``in_chans`` channels (one scaling for the whole dataset, see
:class:`ImageStore`), and runs every view's policy on that one array. With
a :class:`~lit_ssl.data.crops.WindowSampler` (``crop_size``), each view is first cut out of the
native-dtype frame (a 16-bit frame stays 16-bit until then) and only that window is converted.
Each sample is an unbatched :class:`~lit_ssl.data.batch.Batch`; ``collate_batch`` stacks them.

With ``native_size`` (``augment_on="device"``) no float conversion and no policy runs here:
the windows (or the whole frame) are letterboxed to ``native_size`` in their native dtype and
returned as an unbatched :class:`~lit_ssl.data.batch.FrameBatch` with the sample's scaling
(:meth:`ImageStore.unit_scale`); the policy runs on the device. With ``crops_per_frame > 1``
an item is a list of that many samples cut from one decode of the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from lit_ssl.augment.policies import letterbox
from lit_ssl.augment.views import MultiView
from lit_ssl.data.batch import Batch, FrameBatch
from lit_ssl.data.crops import WindowSampler, cut, defect_points
from lit_ssl.data.decoding import decode
from lit_ssl.data.integrity import BadImageError
from lit_ssl.data.once import warn_once
from lit_ssl.data.pixels import convert_channels, declared_depth, to_float

__all__ = ["FactoryDataset", "ImageStore", "worker_init_fn"]

log = logging.getLogger("lit_ssl.data")


class ImageStore:
    """Decoded images by index, from an in-memory cache or the disk.

    Scaling is the same for every image, decided before any is read (never per image): a
    16-bit image is divided by ``2**bits - 1`` with ``bits`` its TIFF's declared depth (9..15,
    when ``trust_declared``), else ``bit_depth``; a float image by ``float_scale``.

    Args:
        paths: Image files.
        in_chans: Channels to return.
        bit_depth: Significant bits of 16-bit data (stated by the user, or inferred once for
            the dataset). None: 16, with a warning the first time a 16-bit image is read.
        cache: Arrays decoded at setup, by path (native dtype); a path missing from it (the
            cache's byte budget was used up) or ``None`` is read from disk at every access.
        skip_bad: When a file fails to decode at run time, use the next readable one
            (with a warning) instead of raising.
        float_scale: Divisor of float images (1 or 255). None: 1, with a warning when an
            image goes above 1 (its values are clipped).
        trust_declared: Scale a TIFF declaring 9..15 bits per sample by what it declares
            (False when the user stated ``bit_depth``, which then wins).
        declared: Declared depths (9..15) of cached files, by path (the cache keeps arrays
            only); files read from disk give theirs as they are read.
    """

    def __init__(
        self,
        paths: Sequence[str],
        in_chans: int,
        bit_depth: int | None = None,
        cache: dict[str, np.ndarray] | None = None,
        skip_bad: bool = True,
        float_scale: float | None = None,
        trust_declared: bool = True,
        declared: dict[str, int] | None = None,
    ):
        self.paths = list(paths)
        self.in_chans = in_chans
        self.bit_depth = bit_depth
        self.cache = cache
        self.skip_bad = skip_bad
        self.float_scale = float_scale
        self.trust_declared = trust_declared
        self.declared = dict(declared or {})

    def __len__(self) -> int:
        return len(self.paths)

    def _raw(self, index: int) -> np.ndarray:
        path = self.paths[index]
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        decoded = decode(path)  # multi-page TIFFs were named at the setup scan
        bits = declared_depth(decoded.declared_bits)
        if bits is not None:
            self.declared[path] = bits
        return decoded.image

    def image(self, index: int) -> np.ndarray:
        """float32 ``H x W x in_chans`` image in [0, 1] of sample ``index``."""
        return self.read(index)[0]

    def read(self, index: int) -> tuple[np.ndarray, int]:
        """Image of sample ``index`` and the index it really came from.

        The two differ only when the file became unreadable after setup and ``skip_bad`` is
        set: the next readable sample is used, so its label and path must go with it.
        """
        raw, current = self.read_raw(index)
        return self.finish(raw, current), current

    def read_raw(self, index: int) -> tuple[np.ndarray, int]:
        """Decoded ``H x W x C`` array of sample ``index`` in its native dtype, and its index.

        Same fallback as :meth:`read`; convert it (or a window of it) with :meth:`finish`.
        """
        for attempt in range(len(self.paths)):
            current = (index + attempt) % len(self.paths)
            try:
                return self._raw(current), current
            except BadImageError as error:
                if not self.skip_bad:
                    raise
                log.warning("skipping unreadable file at run time: %s", error)
        raise BadImageError("no readable image left in the dataset")

    def bits_of(self, index: int | None) -> int:
        """Bit depth that scales 16-bit sample ``index`` (None: one that declares none)."""
        path = None if index is None else self.paths[index]
        if self.trust_declared and path in self.declared:
            return self.declared[path]
        if self.bit_depth is not None:
            return self.bit_depth
        warn_once(
            "16-bit images are scaled as 16-bit (divided by 65535): no bit depth was stated "
            "or inferred for them; set bit_depth (--data.bit_depth) if the camera has fewer bits"
        )
        return 16

    def finish(self, raw: np.ndarray, index: int | None = None) -> np.ndarray:
        """float32 ``H x W x in_chans`` in [0, 1] from a native array (or a window of one).

        Args:
            raw: The decoded array, or a window cut out of it.
            index: The sample it comes from (its declared bit depth); None: a file that
                declares none.
        """
        bits, scale = None, self.float_scale
        if raw.dtype == np.uint16:
            bits = self.bits_of(index)
        if scale is None and raw.dtype.kind == "f":
            scale = 1.0
            if raw.size and float(raw.max()) > 1.0:
                warn_once(
                    "float images with values above 1 are clipped to 1: none of the float files "
                    "sampled at setup went above 1; save them in [0, 1] or as 8/16-bit integers"
                )
        return convert_channels(to_float(raw, bits, scale), self.in_chans)

    def unit_scale(self, raw: np.ndarray, index: int | None = None) -> tuple[float, float]:
        """``(gain, divisor)`` that scale ``raw`` as :meth:`finish` does: ``raw * gain / divisor``.

        Integers: ``gain`` the float32 ``1/255`` or ``1/(2**bits - 1)`` (``bits`` as
        :meth:`finish` picks it), ``divisor`` 1. Floats: ``gain`` 1, ``divisor`` the data's
        ``float_scale`` (1 when unknown). The device applies them (``FrameBatch.unit``).

        Examples:
            >>> store = ImageStore([], in_chans=1, bit_depth=12)
            >>> gain, divisor = store.unit_scale(np.zeros((2, 2, 1), np.uint16))
            >>> gain == float(np.float32(1 / 4095)), divisor
            (True, 1.0)
        """
        if raw.dtype == np.uint8:
            return float(np.float32(1 / 255)), 1.0
        if raw.dtype == np.uint16:
            return float(np.float32(1 / (2 ** self.bits_of(index) - 1))), 1.0
        return 1.0, float(self.float_scale or 1.0)


def native_channels(raw: np.ndarray, in_chans: int) -> np.ndarray:
    """``raw`` (``H x W x C``, native dtype) with the channels the device expects, values kept.

    Alpha is dropped and mono is repeated to ``in_chans`` (exact in any dtype); RGB stays RGB
    when ``in_chans`` is 1 (luminance needs float: ``FrameBatch.unit`` does it on the device).

    Raises:
        ValueError: The conversion is not defined (e.g. 5 channels to 3).
    """
    channels = raw.shape[2]
    if channels in (2, 4):
        raw, channels = raw[:, :, : channels - 1], channels - 1
    if channels == in_chans or (channels == 3 and in_chans == 1):
        return raw
    if channels == 1:
        return np.repeat(raw, in_chans, axis=2)
    return convert_channels(raw, in_chans)  # raises the CPU path's error


def _chw(image: np.ndarray) -> torch.Tensor:
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


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
    mask ``(1, H, W)`` when ``masks`` is given (see :func:`load_mask`), else ``None``.

    Args:
        store: Decoded images.
        indices: Which samples of ``store`` form this split.
        labels: Label of every sample of ``store`` (-1 unknown).
        transform: Views to produce (one policy for single-image batches).
        masks: Mask file of every sample of ``store`` (``None``: none), with ``good_label``;
            only for resize-only single views (the mask goes through the view's policy with
            the image: letterbox padding is -1, unknown).
        good_label: Label of the defect-free class (its images need no mask file).
        crops: Cut each view out of the native frame (``crop_size`` windows, see
            :mod:`lit_ssl.data.crops`); None feeds the whole frame.
        crop_masks: With ``crops``, the classify rule: good images (``good_label``) get a
            random window, a defect image with a mask file a window holding defect pixels,
            one without a mask the whole frame (letterboxed). None: the ssl rule, every view
            its own window, overlapping the first one.
        types: Defect type of every sample of ``store`` (-1 unknown) for evaluation batches'
            ``types``; None: batches carry none.
    """

    def __init__(
        self,
        store: ImageStore,
        indices: np.ndarray,
        labels: np.ndarray,
        transform: MultiView,
        masks: list[str | None] | None = None,
        good_label: int | None = None,
        crops: WindowSampler | None = None,
        crop_masks: list[str | None] | None = None,
        types: np.ndarray | None = None,
        native_size: int | None = None,
        crops_per_frame: int = 1,
        stage: str = "train",
    ):
        if crops_per_frame < 1 or (crops_per_frame > 1 and crops is None):
            raise ValueError(
                f"crops_per_frame={crops_per_frame}; use 1, or more together with crop windows"
            )
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.masks = masks
        self.good_label = good_label
        self.crops = crops
        self.crop_masks = crop_masks
        self.types = None if types is None else np.asarray(types, dtype=np.int64)
        self.native_size = native_size
        self.crops_per_frame = crops_per_frame
        self.stage = stage
        self._letterbox = None if native_size is None else A.Compose(letterbox(native_size))
        self._points: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def reseed(self, seed: int) -> None:
        """Reseed every albumentations policy and the window sampler (:func:`worker_init_fn`)."""
        self.transform.reseed(seed)
        if self.crops is not None:
            self.crops.reseed(seed)

    def __getitem__(self, item: int) -> Batch | FrameBatch | list[Batch | FrameBatch]:
        sample = int(self.indices[item])
        if self.crops is None:
            return self._whole_frame(sample)
        raw, index = self.store.read_raw(sample)  # one decode for every crop of this visit
        crops = [self._crop(raw, index) for _ in range(self.crops_per_frame)]
        return crops[0] if self.crops_per_frame == 1 else crops

    def _kind(self, index: int) -> int | None:
        return None if self.types is None else int(self.types[index])

    def _whole_frame(self, sample: int) -> Batch | FrameBatch:
        if self.native_size is not None:
            raw, index = self.store.read_raw(sample)
            return self._native_whole(raw, index, int(self.labels[index]))
        image, index = self.store.read(sample)
        label = int(self.labels[index])
        arrays, mask = self._whole(image, index, label)
        return self._record(arrays, index, label, mask)

    def _crop(self, raw: np.ndarray, index: int) -> Batch | FrameBatch:
        label = int(self.labels[index])
        if self.native_size is not None:
            corners = self._corners(raw, index, label)
            if corners is None:
                return self._native_whole(raw, index, label)
            windows = [self._native(cut(raw, c, self.crops.size))[0] for c in corners]
            return self._frames(torch.stack(windows), raw, index, label, None)
        return self._record(self.transform.each(self._windows(raw, index, label)), index, label)

    def _record(
        self, arrays: list[np.ndarray], index: int, label: int, mask: torch.Tensor | None = None
    ) -> Batch:
        views = [_to_tensor(v) for v in arrays]
        clean = views.pop() if self.transform.clean is not None else None
        return Batch(views, label, clean, self.store.paths[index], mask, self._kind(index))

    def _native(
        self, raw: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A native-dtype window or frame letterboxed to ``native_size`` (and its mask)."""
        image = native_channels(raw, self.store.in_chans)
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            image = image.astype(np.float32)
        extra = {} if mask is None else {"mask": mask}
        out = self._letterbox(image=np.ascontiguousarray(image), **extra)
        tensor_mask = None if mask is None else torch.from_numpy(out["mask"].astype(np.float32))
        return _chw(out["image"]), None if tensor_mask is None else tensor_mask[None]

    def _native_whole(self, raw: np.ndarray, index: int, label: int) -> FrameBatch:
        mask = None
        if self.masks is not None:
            mask = load_mask(self.masks[index], label == self.good_label, raw.shape[:2])
        image, mask = self._native(raw, mask)
        return self._frames(image[None], raw, index, label, mask)

    def _frames(
        self,
        windows: torch.Tensor,
        raw: np.ndarray,
        index: int,
        label: int,
        mask: torch.Tensor | None,
    ) -> FrameBatch:
        gain, divisor = self.store.unit_scale(raw, index)
        path, kind = self.store.paths[index], self._kind(index)
        return FrameBatch(
            windows, label, gain, divisor, path, mask, kind, self.store.in_chans, self.stage
        )

    def _whole(
        self, image: np.ndarray, index: int, label: int
    ) -> tuple[list[np.ndarray], torch.Tensor | None]:
        if self.masks is None:
            return self.transform(image), None
        mask = load_mask(self.masks[index], label == self.good_label, image.shape[:2])
        view, mask = self.transform.with_mask(image, mask)
        return [view], torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]

    def _corners(self, raw: np.ndarray, index: int, label: int) -> list[tuple[int, int]] | None:
        """Window corners of one sample (views, then the clean one); None: the whole frame."""
        crops, count = self.crops, self.transform.num_outputs
        if self.crop_masks is None:
            corners = crops.overlapping(raw.shape, len(self.transform.policies))
        elif label == self.good_label:
            corners = [crops.random(raw.shape)]
        elif self.crop_masks[index] is None or len(self._defect_points(index, raw.shape)) == 0:
            return None
        else:
            corners = [crops.containing(raw.shape, self._defect_points(index, raw.shape))]
        if self.native_size is not None:
            return corners  # the device takes the clean view from the first window
        return corners + corners[:1] * (count - len(corners))  # the clean view: the first window

    def _windows(self, raw: np.ndarray, index: int, label: int) -> list[np.ndarray]:
        """One float image per output (views, then the clean one) cut from ``raw``."""
        corners = self._corners(raw, index, label)
        if corners is None:
            return [self.store.finish(raw, index)] * self.transform.num_outputs  # letterboxed
        size = self.crops.size
        return [self.store.finish(cut(raw, corner, size), index) for corner in corners]

    def _defect_points(self, index: int, shape: tuple[int, ...]) -> np.ndarray:
        """Defect pixels of sample ``index``'s mask, read once per worker (may be empty)."""
        if index not in self._points:
            points = defect_points(_read_mask_file(self.crop_masks[index]), shape[:2])
            if len(points) == 0:
                log.warning(
                    "mask %s marks no defect pixel: the defect image %s is used whole",
                    self.crop_masks[index],
                    self.store.paths[index],
                )
            self._points[index] = points
        return self._points[index]


def _read_mask_file(path: str) -> np.ndarray:
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BadImageError(f"cannot read mask {path}")
    return raw.max(axis=2) if raw.ndim == 3 else raw


def load_mask(path: str | None, good: bool, shape: tuple[int, int]) -> np.ndarray:
    """A float32 ``H x W`` defect mask at the image's ``shape``: 1 defect, 0 good pixels.

    A mask file of another size is resized to ``shape`` (nearest). A good image without a mask
    file is all 0; any other image without one (a defect whose mask is missing, or an unknown
    label) is all -1, "unknown", which pixel metrics leave out.
    """
    if path is None:
        return np.full(shape, 0.0 if good else -1.0, dtype=np.float32)
    binary = (_read_mask_file(path) > 0).astype(np.uint8)
    if binary.shape != tuple(shape):
        binary = cv2.resize(binary, shape[::-1], interpolation=cv2.INTER_NEAREST)
    return binary.astype(np.float32)


def read_mask(path: str | None, good: bool, size: tuple[int, int]) -> torch.Tensor:
    """A defect mask ``(1, H, W)`` resized to ``size`` (nearest, no letterbox); see
    :func:`load_mask` for the values."""
    return torch.from_numpy(load_mask(path, good, size))[None]


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
