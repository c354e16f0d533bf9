"""The device path's views: a batch of native-dtype frames made into augmented views on its
device, by the batched presets of :mod:`lit_ssl.augment.device` (the data module's
``on_after_batch_transfer`` calls it).

With ``augment_on="device"`` the workers of the augmented stages (ssl train/val, classify
train) only decode, cut and letterbox windows in their native dtype
(:class:`~lit_ssl.data.batch.FrameBatch`: uint8/uint16 stay integers, with the scaling that
``ImageStore.finish`` would apply), and :class:`DeviceViews` runs the presets batched on the
device, every sample with its own parameters. ``"auto"`` does that when the trainer's
accelerator is CUDA and every policy has a device version (``surface``, ``object``,
``minimal``), else the albumentations policies run in the workers as on the CPU. Evaluation
batches (classify val, test, predict, anomaly) are always made in the workers (resize only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_ssl.augment.device import DevicePolicy
from lit_ssl.data.batch import Batch, FrameBatch

__all__ = ["DeviceViews", "policy_names"]


class DeviceViews:
    """Turn a :class:`~lit_ssl.data.batch.FrameBatch` into a :class:`~lit_ssl.data.batch.Batch`
    of augmented views on its device.

    The frames are scaled to float (:meth:`FrameBatch.unit`), every view's window (or the one
    window, repeated) is stacked into one ``(views * B, C, S, S)`` tensor and each preset runs
    once over its views; ``clean`` is the first window unaugmented; masks (single-view
    batches) go through the view's geometry.

    Args:
        policies: One preset per view (see :data:`DEVICE_PRESETS`).
        clean: Also return the un-augmented image (``Batch.clean``).
        seed: Seed of the parameter generator (one per device, made on first use).

    Examples:
        >>> import torch
        >>> from lit_ssl.data.batch import FrameBatch
        >>> frames = torch.randint(0, 256, (4, 1, 3, 32, 32), dtype=torch.uint8)
        >>> gain, divisor = torch.full((4,), 1 / 255), torch.ones(4)
        >>> raw = FrameBatch(frames, torch.full((4,), -1), gain, divisor)
        >>> batch = DeviceViews(["surface", "surface"], clean=True, seed=0)(raw)
        >>> len(batch.views), batch.views[0].shape, batch.clean.shape
        (2, torch.Size([4, 3, 32, 32]), torch.Size([4, 3, 32, 32]))
    """

    def __init__(self, policies: Sequence[str], clean: bool = False, seed: int = 0):
        if not policies:
            raise ValueError("DeviceViews needs at least one policy")
        self.names = list(policies)
        self.policies = {name: DevicePolicy(name) for name in self.names}
        self.clean = clean
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """The parameter generator of ``device`` (seeded with :attr:`seed` on first use)."""
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __call__(self, raw: FrameBatch) -> Batch:
        """Scale, stack, augment and split ``raw`` into its views."""
        unit = raw.unit()  # (B, W, C, S, S)
        count, batch = len(self.names), unit.shape[0]
        if unit.shape[1] not in (1, count):
            raise ValueError(f"{unit.shape[1]} windows per sample for {count} views")
        windows = unit.expand(-1, count, -1, -1, -1) if unit.shape[1] == 1 else unit
        stacked = windows.transpose(0, 1).reshape(count * batch, *unit.shape[2:])
        masks = raw.masks
        if masks is not None and count > 1:
            masks = masks.repeat(count, 1, 1, 1)
        generator = self.generator(unit.device)
        if len(self.policies) == 1:
            stacked, masks = self.policies[self.names[0]](stacked, generator, masks)
        else:
            stacked, masks = self._each_policy(stacked, masks, batch, generator)
        views = list(stacked.split(batch))
        clean = unit[:, 0] if self.clean else None
        first_mask = None if masks is None else masks[:batch]
        return Batch(views, raw.labels, clean, raw.paths, first_mask, raw.types)

    def _each_policy(
        self, stacked: Tensor, masks: Tensor | None, batch: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]:
        """Views of different presets: each preset once, over all of its views."""
        outputs, out_masks = [None] * len(self.names), [None] * len(self.names)
        for name, policy in self.policies.items():
            picked = [i for i, n in enumerate(self.names) if n == name]
            index = torch.cat(
                [torch.arange(i * batch, (i + 1) * batch, device=stacked.device) for i in picked]
            )
            images, part = policy(
                stacked[index], generator, None if masks is None else masks[index]
            )
            for j, view in enumerate(picked):
                outputs[view] = images[j * batch : (j + 1) * batch]
                if part is not None:
                    out_masks[view] = part[j * batch : (j + 1) * batch]
        masks_out = None if masks is None else torch.cat(out_masks)
        return torch.cat(outputs), masks_out


def policy_names(policy: str | Sequence[str], count: int) -> list[str]:
    """One policy name per view: a single name repeated ``count`` times, else the names given.

    Args:
        policy: The data module's ``policy`` (one name, or one per view).
        count: Views per sample.
    """
    names = [policy] if isinstance(policy, str) else list(policy)
    return names * count if len(names) == 1 else names
