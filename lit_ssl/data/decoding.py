"""Decoding a file into its native pixels: no scaling, ``H x W x C``, RGB(A) channel order.

PNG, JPEG and BMP are decoded by OpenCV; TIFF by tifffile, falling back to OpenCV for
compressions tifffile cannot decode without ``imagecodecs`` (such as LZW). Multi-page TIFFs give
their page 0 (:func:`read_raw` names the file in a warning, once). What makes a file bad is
decided in :mod:`lit_ssl.data.integrity`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from lit_ssl.data.integrity import BadImageError, check_complete, check_float, multipage_message
from lit_ssl.data.once import warn_once

__all__ = ["Decoded", "decode", "read_raw"]

_TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})


def _decode_opencv(path: Path) -> np.ndarray:
    data = path.read_bytes()
    check_complete(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadImageError(f"{path}: not a readable PNG/JPEG/BMP image; check or delete the file")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    return image


def _decode_tiff(path: Path) -> tuple[np.ndarray, int | None, int]:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            image = page.asarray()
            declared = int(page.bitspersample)
            pages = len(tif.pages)
    except Exception as error:  # tifffile raises many types for broken files
        # compressions tifffile cannot decode without imagecodecs (e.g. LZW): try OpenCV
        try:
            return _decode_opencv(path), None, 1
        except BadImageError:
            raise BadImageError(
                f"{path}: not a readable TIFF ({error}); check or delete it"
            ) from error
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # planar (C, H, W) storage
    return image, declared, pages


def _as_hwc(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or min(image.shape[:2]) < 1:
        raise BadImageError(f"{path}: unexpected image shape {image.shape}; expected H x W [x C]")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise BadImageError(f"{path}: unsupported pixel type {image.dtype}; use 8/16-bit or float")
    if image.dtype.kind == "f":
        check_float(image, path)
    return image


@dataclass(frozen=True)
class Decoded:
    """A decoded file before scaling.

    Attributes:
        image: Native dtype, ``H x W x C``, RGB(A) channel order.
        declared_bits: Bits per sample the file declares (TIFF only, else None).
        pages: Pages of a TIFF (1 for other formats); only page 0 is in ``image``.
    """

    image: np.ndarray
    declared_bits: int | None = None
    pages: int = 1


def decode(path: str | os.PathLike[str]) -> Decoded:
    """Decode a file without scaling and without warnings (see :func:`read_raw`).

    Args:
        path: Image file.

    Returns:
        The decoded file.

    Raises:
        BadImageError: The file is empty, truncated, not an image, or a float image with
            non-finite values or values above 255.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise BadImageError(f"{path}: cannot be read ({error})") from error
    if size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes); delete it or copy it again")
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        image, declared, pages = _decode_tiff(path)
    else:
        image, declared, pages = _decode_opencv(path), None, 1
    return Decoded(_as_hwc(image, path), declared, pages)


def read_raw(path: str | os.PathLike[str]) -> tuple[np.ndarray, int | None]:
    """Decode a file without scaling: native dtype, ``H x W x C``, RGB(A) channel order.

    A multi-page TIFF gives its page 0 and a warning (once per file) naming it.

    Args:
        path: Image file.

    Returns:
        The array and the bits per sample the file declares (TIFF only, else None).

    Raises:
        BadImageError: The file is empty, truncated, not an image, or a float image with
            non-finite values or values above 255.
    """
    decoded = decode(path)
    if decoded.pages > 1:
        warn_once(multipage_message([str(path)]))
    return decoded.image, decoded.declared_bits
