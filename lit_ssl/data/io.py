"""Reading factory images from disk into float32 arrays in [0, 1].

Formats: PNG, JPEG, BMP (decoded by OpenCV) and TIFF (decoded by tifffile, falling back to OpenCV
for compressions tifffile cannot decode without ``imagecodecs``, such as LZW), 8 or 16 bits per
sample, mono, RGB or RGBA. Every reader returns an ``H x W x C`` array.

Bit-depth scaling (the "12-bit camera in a 16-bit container" problem): an integer image is divided
by ``2**bit_depth - 1`` (8-bit: 255). For 16-bit data the depth comes from, first to last: the
``bit_depth`` the caller states (it wins over everything); a TIFF's declared bits per sample
when below 16 (:func:`declared_depth`); else it is inferred: the smallest of 10, 12, 14 or 16
bits that holds the largest value, so a 12-bit camera's frame is not 16x too dark.
:func:`read_image` used alone infers from the one image it reads. Per-image inference brightens
a genuinely dark frame (a 12-bit frame with values around 500 would be read as 10-bit), so
:class:`~lit_ssl.data.FactoryDataModule` never does it: it infers **one** depth for the whole
dataset at setup, from the largest value of a fixed sample of the files
(:func:`~lit_ssl.data.scan.sample_paths`, the same whether or not ``verify_files`` decoded every
file), says so in a warning, and passes it down; pass ``bit_depth`` explicitly to state it.

Float TIFFs: values in [0, 1] are used as they are. Float data whose maximum is above 1 (and at
most 255) is taken to be on the 0-255 scale and divided by 255, with a warning, never clipped
silently; the data module decides this once for the whole dataset, from the same sample (any
sampled float file above 1 means every float file is divided by 255). A float file with values
above 255, or with any NaN or infinity, is a bad file (:class:`BadImageError`, named at the setup
scan): convert it to 8/16-bit integers or rescale it to [0, 1]. Negative values are clipped to 0.

Multi-page TIFFs (stacks, pyramids): only page 0 (the first) is read, and the file is named in
a warning. Files after the end marker (PNG ``IEND`` chunk, JPEG ``EOI``) may hold extra bytes, as
some cameras write; a file that stops before its end marker is truncated and rejected.

Listing (:func:`list_images`) follows symbolic links to folders, walks every real folder once,
and skips symlink loops with a warning naming them.

This module is the readers' face: :func:`read_image` and everything below it, re-exported from
the modules that do one thing each: :mod:`~lit_ssl.data.walk` (listing folders, hidden files,
extensions), :mod:`~lit_ssl.data.integrity` (truncated and bad files, multi-page TIFFs),
:mod:`~lit_ssl.data.decoding` (files to native pixels) and :mod:`~lit_ssl.data.pixels` (bit
depth, scaling to [0, 1], channels).
"""

from __future__ import annotations

import os

import numpy as np

from lit_ssl.data.decoding import Decoded, decode, read_raw
from lit_ssl.data.integrity import BadImageError, multipage_message
from lit_ssl.data.once import warn_once
from lit_ssl.data.pixels import convert_channels, declared_depth, infer_bit_depth, to_float
from lit_ssl.data.walk import IMAGE_EXTENSIONS, WalkReport, is_hidden, list_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "Decoded",
    "WalkReport",
    "convert_channels",
    "declared_depth",
    "decode",
    "infer_bit_depth",
    "is_hidden",
    "list_images",
    "multipage_message",
    "read_image",
    "read_raw",
    "to_float",
    "warn_once",
]


def read_image(
    path: str | os.PathLike[str], in_chans: int = 3, bit_depth: int | None = None
) -> np.ndarray:
    """Read an image as float32 ``H x W x in_chans`` in [0, 1].

    Args:
        path: PNG, JPEG, BMP or TIFF file.
        in_chans: Channels to return (see :func:`convert_channels`).
        bit_depth: Significant bits of 16-bit data; None uses the TIFF's declared bits or infers
            them from the image (see the module docstring).

    Returns:
        float32 array in [0, 1].

    Raises:
        BadImageError: The file is empty, truncated or not an image.
    """
    raw, declared = read_raw(path)
    if bit_depth is None:
        bit_depth = declared_depth(declared)
    return convert_channels(to_float(raw, bit_depth), in_chans)
