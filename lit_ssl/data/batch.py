"""One typed batch for every stage and task, read by name: :class:`Batch`.

``FactoryDataModule`` yields :class:`Batch` records from every loader (ssl and classify;
train, val, test and predict), built by :func:`collate_batch`. Every consumer (``SSLModule``,
``DefectClassifier``, the probe and monitors, the predictions writer) reads the fields by name
after :func:`as_batch`, which also turns the plain tuples of a user's own DataLoader into a
:class:`Batch`: ``(views, labels)`` for pretraining, ``(images, labels)``,
``(images, labels, paths)`` or bare ``images`` for the classifier.

``Batch`` is a ``NamedTuple``, so Lightning's ``move_data_to_device``, torch's ``pin_memory``
and Lightning's batch-size inference walk into it without help (``None`` fields stay
``None``; ``paths`` stay strings).

How many views a model needs is declared by the model, not pushed into the data:
``SSLModule.view_spec`` returns a :class:`ViewSpec`, which ``FactoryDataModule.setup`` reads
from ``trainer.lightning_module`` (any LightningModule with a ``view_spec`` works).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import default_collate

__all__ = ["Batch", "FrameBatch", "ViewSpec", "as_batch", "collate_batch"]

# ITU-R 601 luminance, as lit_ssl.data.io converts RGB to one channel
_LUMA = (0.299, 0.587, 0.114)


class ViewSpec(NamedTuple):
    """What a model needs from the data: ``num_views`` augmented views (and the clean one)."""

    num_views: int
    clean: bool = False


class Batch(NamedTuple):
    """A batch of images, read by field name.

    Attributes:
        views: augmented views, a list of float ``(B, C, H, W)`` tensors in [0, 1]; one
            element for classify, test and predict batches (resize only there).
        labels: ``(B,)`` int64 class indices, ``-1`` where unknown.
        clean: the un-augmented (resize-only) image ``(B, C, H, W)`` when the model's head
            asked for it (``clean_view=True``), else ``None``.
        paths: source file of every sample, or ``None`` when unknown.
        masks: ``(B, 1, H, W)`` defect masks, or ``None`` when the data has none.
        types: ``(B,)`` int64 defect-type indices into the data's ``type_names`` (the class
            names before a ``binary`` merge), ``-1`` where unknown; ``None`` for training
            batches and data without types. Per-type evidence reads them.

    One sample from ``FactoryDataset`` has the same fields unbatched (``(C, H, W)`` views, an
    ``int`` label, a ``str`` path); :func:`collate_batch` stacks them.
    """

    views: list[Tensor]
    labels: Tensor
    clean: Tensor | None = None
    paths: list[str] | None = None
    masks: Tensor | None = None
    types: Tensor | None = None

    @property
    def images(self) -> Tensor:
        """The first view (the image of classify, test and predict batches)."""
        return self.views[0]

    def take(self, n: int) -> Batch:
        """The first ``n`` samples, every field sliced alike."""
        return Batch(
            [v[:n] for v in self.views],
            self.labels[:n],
            None if self.clean is None else self.clean[:n],
            None if self.paths is None else list(self.paths[:n]),
            None if self.masks is None else self.masks[:n],
            None if self.types is None else self.types[:n],
        )


class FrameBatch(NamedTuple):
    """Decoded windows in their native dtype, before the policy runs on the device.

    What the loaders of ``FactoryDataModule(augment_on="device")`` yield in the augmented
    stages; the data module's ``on_after_batch_transfer`` turns it into a :class:`Batch` on the
    device (:class:`lit_ssl.augment.device.DeviceViews`). A consumer that iterates such a loader
    itself gets unaugmented images from :func:`as_batch` (:meth:`unit`).

    Attributes:
        frames: ``(B, W, C, S, S)`` windows letterboxed to ``S = image_size``, ``uint8``,
            ``uint16`` or ``float32`` as decoded (mixed dtypes promoted losslessly); ``W`` is 1
            (every view from one window) or the number of views (one window per view). ``C``
            is ``in_chans``, or 3 when RGB frames go to one channel (luminance on the device).
        labels: ``(B,)`` int64, -1 where unknown.
        gain: ``(B,)`` float32 multiplier of integer pixels (``1/255``, ``1/(2**bits - 1)``).
        divisor: ``(B,)`` float32 divisor of float pixels (the data's ``float_scale``).
        paths: Source file of every sample.
        masks: ``(B, 1, S, S)`` float masks through the letterbox (padding -1), or None.
        types: ``(B,)`` int64 defect types, or None.
        in_chans: Channels given to the model.
        stage: Loader stage (``"train"``, ``"val"``): which device views to run.

    Examples:
        >>> import torch
        >>> frames = torch.full((2, 1, 1, 4, 4), 255, dtype=torch.uint8)
        >>> gain = torch.full((2,), 1 / 255)
        >>> batch = FrameBatch(frames, torch.tensor([0, 1]), gain, torch.ones(2), in_chans=1)
        >>> batch.unit().shape, float(batch.unit().max())
        (torch.Size([2, 1, 1, 4, 4]), 1.0)
    """

    frames: Tensor
    labels: Tensor
    gain: Tensor
    divisor: Tensor
    paths: list[str] | None = None
    masks: Tensor | None = None
    types: Tensor | None = None
    in_chans: int = 3
    stage: str = "train"

    def unit(self) -> Tensor:
        """``(B, W, in_chans, S, S)`` float32 in [0, 1]: the CPU path's scaling, on the device.

        ``frames * gain / divisor`` clipped to [0, 1] (the same float32 operations as
        ``ImageStore.finish``), then RGB to one channel by luminance when asked.
        """
        shape = (-1, 1, 1, 1, 1)
        unit = self.frames.float() * self.gain.view(shape) / self.divisor.view(shape)
        unit = unit.clamp_(0.0, 1.0)
        if unit.shape[2] == 3 and self.in_chans == 1:  # scalars: no host-to-device copy
            red, green, blue = unit.split(1, dim=2)
            unit = red * _LUMA[0] + green * _LUMA[1] + blue * _LUMA[2]
        return unit

    def as_batch(self, num_views: int = 1) -> Batch:
        """The unaugmented :class:`Batch` (every view the window's letterboxed image)."""
        unit = self.unit()
        views = [unit[:, min(v, unit.shape[1] - 1)] for v in range(num_views)]
        return Batch(views, self.labels, None, self.paths, self.masks, self.types)


def _flatten(items: Sequence[Any]) -> list[Any]:
    """Samples of a dataset whose items may be lists of samples (``crops_per_frame``)."""
    if not isinstance(items[0], list):
        return list(items)
    return [sample for item in items for sample in item]


def _common_frames(frames: list[Tensor]) -> list[Tensor]:
    """Windows of one batch in one dtype and channel count, without changing a value.

    uint8 next to uint16 becomes uint16, any float makes float32 (the per-sample ``gain``
    keeps every value's scaling); a 1-channel window next to 3-channel ones is repeated.
    """
    dtypes = {f.dtype for f in frames}
    if len(dtypes) > 1:
        dtype = torch.float32 if any(d.is_floating_point for d in dtypes) else torch.uint16
        frames = [f.to(dtype) for f in frames]
    channels = max(f.shape[1] for f in frames)
    return [f.expand(-1, channels, -1, -1) if f.shape[1] == 1 else f for f in frames]


def _collate_frames(items: Sequence[FrameBatch]) -> FrameBatch:
    first = items[0]
    return FrameBatch(
        torch.stack(_common_frames([item.frames for item in items])),
        torch.as_tensor([item.labels for item in items], dtype=torch.long),
        torch.as_tensor([item.gain for item in items], dtype=torch.float32),
        torch.as_tensor([item.divisor for item in items], dtype=torch.float32),
        None if first.paths is None else [item.paths for item in items],
        None if first.masks is None else default_collate([item.masks for item in items]),
        None
        if first.types is None
        else torch.as_tensor([i.types for i in items], dtype=torch.long),
        first.in_chans,
        first.stage,
    )


def collate_batch(items: Sequence[Batch | FrameBatch | list]) -> Batch | FrameBatch:
    """Stack per-sample records into one :class:`Batch` (the loaders' ``collate_fn``).

    Tensors go through torch's ``default_collate``, which stacks straight into shared memory
    inside worker processes (no extra copy on the way to the main process). Items that are
    lists (several crops of one decoded frame, ``crops_per_frame``) are flattened first;
    :class:`FrameBatch` samples stack into one :class:`FrameBatch`.
    """
    items = _flatten(items)
    first = items[0]
    if isinstance(first, FrameBatch):
        return _collate_frames(items)
    return Batch(
        default_collate([item.views for item in items]),
        torch.as_tensor([item.labels for item in items], dtype=torch.long),
        None if first.clean is None else default_collate([item.clean for item in items]),
        None if first.paths is None else [item.paths for item in items],
        None if first.masks is None else default_collate([item.masks for item in items]),
        None
        if first.types is None
        else torch.as_tensor([i.types for i in items], dtype=torch.long),
    )


def as_batch(batch: Any, clean_last: bool = False) -> Batch:
    """A :class:`Batch` from a ``Batch`` or from the plain tuples of a user's DataLoader.

    Accepted: a ``Batch`` (returned as is); a :class:`FrameBatch` (its unaugmented images,
    when a loader of ``augment_on="device"`` is read without the data module's hook);
    ``(views, labels)`` with ``views`` a list of ``(B, C, H, W)`` tensors; ``(images, labels)``,
    ``(images, labels, paths)`` and ``(images, paths)`` with ``images`` one tensor; a bare
    ``images`` tensor. Missing labels become ``-1``.

    Args:
        batch: what the DataLoader yielded (after Lightning moved it to the device).
        clean_last: the last of several views is the clean image (a head with
            ``clean_view=True`` fed by a plain ``(views, labels)`` loader): move it to
            ``clean``.

    Raises:
        TypeError: ``batch`` is none of the above.
    """
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, FrameBatch):
        return batch.as_batch()
    if isinstance(batch, Tensor):
        first, rest = batch, []
    elif isinstance(batch, list | tuple) and batch:
        first, rest = batch[0], list(batch[1:])
    else:
        raise TypeError(_UNKNOWN.format(kind=type(batch).__name__))
    views = list(first) if isinstance(first, list | tuple) else [first]
    if not views or not all(isinstance(v, Tensor) for v in views):
        raise TypeError(_UNKNOWN.format(kind=f"{type(batch).__name__} of {type(first).__name__}"))
    labels = _labels(rest.pop(0), views[0]) if rest and not _is_paths(rest[0]) else None
    if labels is None:
        labels = torch.full((views[0].shape[0],), -1, dtype=torch.long, device=views[0].device)
    paths = list(rest[0]) if rest and _is_paths(rest[0]) else None
    clean = views.pop() if clean_last and len(views) > 1 else None
    return Batch(views, labels, clean, paths)


_UNKNOWN = (
    "expected a lit_ssl.data.Batch or a tuple (views, labels) with views a list of float "
    "(B, C, H, W) tensors in [0, 1] (or (images, labels[, paths]) for the classifier); got "
    "{kind}. FactoryDataModule yields Batch records; see lit_ssl.data.batch."
)


def _is_paths(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], str)


def _labels(value: Any, like: Tensor) -> Tensor:
    labels = value if isinstance(value, Tensor) else torch.as_tensor(value, device=like.device)
    return labels.long()
