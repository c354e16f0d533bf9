"""The input size a model was fit at, and the check that inference images have that size.

``AnomalyDetector`` and ``DefectClassifier`` record the ``(H, W)`` of their training images
in an ``input_size`` buffer (saved in the checkpoint; ``(0, 0)``: not fit yet, or a checkpoint
older than the buffer). Their features depend on the scale of the image, so scores of images
of another size are not comparable to the threshold chosen at fit: validation, test and
predict refuse them with the fix (the data module's ``image_size``) instead of resizing
silently. The check reads host-side shapes only; the buffer itself is read once per load
(after ``load_state_dict``), never per batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FitSizeModel", "check_input_size", "forget_size_on_load", "recorded_size"]


def recorded_size(buffer: Tensor) -> tuple[int, int]:
    """``(H, W)`` stored in an ``input_size`` buffer (one read: call it once, then cache)."""
    height, width = (int(v) for v in buffer.tolist())
    return height, width


def check_input_size(images: Tensor, fit_size: tuple[int, int] | None, what: str) -> None:
    """Refuse ``images`` whose ``(H, W)`` differs from the size the model was fit at.

    Args:
        images: ``(B, C, H, W)`` inputs (only their shape is read: no device sync).
        fit_size: the recorded ``(H, W)``; ``None`` or ``(0, 0)``: unknown, nothing checked.
        what: the model in the message (``"detector"``, ``"classifier"``).

    Raises:
        ValueError: two lines, what is wrong and the option that fixes it.

    Example:
        >>> import torch
        >>> check_input_size(torch.zeros(1, 3, 32, 32), (32, 32), "detector")
        >>> check_input_size(torch.zeros(1, 3, 64, 64), (32, 32), "detector")
        Traceback (most recent call last):
        ...
        ValueError: this detector was fit on 32x32 inputs but got 64x64: its scores and threshold only hold at the fit size.
        Pass --data.image_size 32 (the size it was fit at), or fit it again at 64x64.
    """  # noqa: E501
    if fit_size is None or not any(fit_size):
        return
    got = (int(images.shape[-2]), int(images.shape[-1]))
    if got == tuple(fit_size):
        return
    height, width = fit_size
    if height == width:
        fix = f"Pass --data.image_size {height} (the size it was fit at)"
    else:
        fix = f"Resize the images to {height}x{width} (the size it was fit at)"
    raise ValueError(
        f"this {what} was fit on {height}x{width} inputs but got {got[0]}x{got[1]}: its scores "
        f"and threshold only hold at the fit size.\n{fix}, or fit it again at {got[0]}x{got[1]}."
    )


def forget_size_on_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the cached fit size is re-read from the loaded buffer."""
    module._seen_size = None


class FitSizeModel(nn.Module):
    """Base of a torch model that remembers the ``(H, W)`` it was fit at.

    Holds the ``input_size`` buffer (saved in the checkpoint) and its host-side copy, so that
    recording and checking read shapes only (no device sync); the copy is re-read once after
    ``load_state_dict``.
    """

    what = "model"  # the model's name in the error message

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_size", torch.zeros(2, dtype=torch.long))
        self._seen_size: tuple[int, int] | None = None  # host copy (None: not read yet)
        self.register_load_state_dict_post_hook(forget_size_on_load)

    def record_size(self, images: Tensor) -> None:
        """Record ``images``' ``(H, W)`` as the fit size (a buffer write only when it changes)."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if size != self._seen_size:
            self._seen_size = size
            self.input_size.copy_(torch.tensor(size))

    def check_size(self, images: Tensor) -> None:
        """Refuse ``images`` of another size than the recorded one (see ``check_input_size``)."""
        if self._seen_size is None:
            self._seen_size = recorded_size(self.input_size)
        check_input_size(images, self._seen_size, self.what)
