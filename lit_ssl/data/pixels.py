"""Pixel values to float32 in [0, 1]: bit depth, float scale, channel conversion.

An integer image is divided by ``2**bit_depth - 1`` (8-bit: 255). For 16-bit data the depth is
the caller's (see :mod:`lit_ssl.data.io` for where it comes from); :func:`infer_bit_depth` gives
the smallest of 10, 12, 14 or 16 bits holding a value. Float data is divided by ``float_scale``
(1 or 255) and clipped to [0, 1]. :func:`convert_channels` turns mono/RGB/RGBA into the
channels the model expects.
"""

from __future__ import annotations

import numpy as np

from lit_ssl.data.integrity import MAX_FLOAT
from lit_ssl.data.once import log_once, warn_once

__all__ = ["convert_channels", "declared_depth", "infer_bit_depth", "to_float"]

_CANDIDATE_DEPTHS = (10, 12, 14, 16)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def declared_depth(bits: int | None) -> int | None:
    """The depth a TIFF's bits-per-sample states for 16-bit data: 9..15, else None.

    A declared 16 says nothing (cameras of 10-14 bits write 16 too), so it is not used.

    Args:
        bits: The file's declared bits per sample (None: not a TIFF).
    """
    return bits if bits is not None and 8 < bits < 16 else None


def infer_bit_depth(max_value: int) -> int:
    """Smallest of 10, 12, 14 or 16 bits that can hold ``max_value``.

    Args:
        max_value: Largest pixel value seen in 16-bit data.

    Returns:
        The bit depth used to scale that data to [0, 1].
    """
    for bits in _CANDIDATE_DEPTHS:
        if max_value < 2**bits:
            return bits
    return 16


def to_float(
    image: np.ndarray, bit_depth: int | None = None, float_scale: float | None = None
) -> np.ndarray:
    """Scale an integer or float image to float32 in [0, 1].

    Args:
        image: ``uint8``, ``uint16`` or float array.
        bit_depth: Significant bits of 16-bit data; None infers them from the image's maximum.
            Ignored for ``uint8`` (always 8) and float.
        float_scale: Divisor of float data (1 or 255); None picks 255 when this image's
            maximum is above 1 (with a warning, once), else 1.

    Returns:
        float32 array of the same shape.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    if image.dtype == np.uint16:
        bits = bit_depth or infer_bit_depth(int(image.max()))
        scaled = image.astype(np.float32) * np.float32(1 / (2**bits - 1))
        return np.minimum(scaled, 1.0, out=scaled)
    if float_scale is None:
        float_scale = 1.0
        if image.size and float(image.max()) > 1.0:
            float_scale = MAX_FLOAT
            warn_once(
                "float images with values above 1 are read as 0-255 data and divided by 255; "
                "save them in [0, 1] or as 8/16-bit integers to avoid the guess"
            )
    scaled = image.astype(np.float32) / np.float32(float_scale)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def convert_channels(image: np.ndarray, in_chans: int) -> np.ndarray:
    """Convert an ``H x W x C`` float image to ``in_chans`` channels.

    Mono to N channels repeats, RGB to mono uses luminance (ITU-R 601), alpha is dropped. Each
    conversion is logged once per process.

    Args:
        image: float32 ``H x W x C`` array.
        in_chans: Channels the model expects.

    Returns:
        ``H x W x in_chans`` float32 array.

    Raises:
        ValueError: The conversion is not defined (e.g. 5 channels to 3).
    """
    channels = image.shape[2]
    if channels in (2, 4):
        log_once(f"dropping the alpha channel ({channels} -> {channels - 1} channels)")
        image, channels = image[:, :, : channels - 1], channels - 1
    if channels == in_chans:
        return image
    if channels == 1:
        log_once(f"repeating mono images to {in_chans} channels")
        return np.repeat(image, in_chans, axis=2)
    if channels == 3 and in_chans == 1:
        log_once("converting RGB images to 1 channel by luminance")
        return (image @ _LUMA)[:, :, None]
    raise ValueError(
        f"cannot convert a {channels}-channel image to in_chans={in_chans}; "
        "set in_chans to 1, 3 or the file's channel count"
    )
