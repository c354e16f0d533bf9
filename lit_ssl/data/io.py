"""Reading factory images from disk into float32 arrays in [0, 1].

Formats: PNG, JPEG, BMP (decoded by OpenCV) and TIFF (decoded by tifffile, falling back to OpenCV
for compressions tifffile cannot decode without ``imagecodecs``, such as LZW), 8 or 16 bits per
sample, mono, RGB or RGBA. Every reader returns an ``H x W x C`` array.

Bit-depth scaling (the "12-bit camera in a 16-bit container" problem): an integer image is divided
by ``2**bit_depth - 1``. ``bit_depth=None`` means "work it out": a TIFF that declares fewer than 16
bits per sample is scaled by what it declares; otherwise a 16-bit image is scaled by the smallest
of 10, 12, 14 or 16 bits that holds its maximum value, so a 12-bit camera's frame is not 16x too
dark. Per-image inference can brighten a genuinely dark 16-bit frame, so
:class:`~lit_ssl.data.FactoryDataModule` infers one bit depth for the whole dataset at setup (the
maximum over all 16-bit files) and passes it here; pass ``bit_depth`` explicitly to override.
Float TIFFs are assumed to be in [0, 1] already and are clipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import tifffile

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "convert_channels",
    "infer_bit_depth",
    "is_hidden",
    "list_images",
    "read_image",
    "read_raw",
    "to_float",
]

log = logging.getLogger("lit_ssl.data")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
_TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_CANDIDATE_DEPTHS = (10, 12, 14, 16)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_logged: set[str] = set()


class BadImageError(ValueError):
    """A file that cannot be decoded into an image (empty, truncated, not an image)."""


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info(message)


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden or tool litter (``.DS_Store``, ``__MACOSX``).

    Args:
        name: One path component.

    Returns:
        True for names starting with ``.`` or ``__MACOSX``.
    """
    return name.startswith(".") or name == "__MACOSX"


def list_images(root: str | os.PathLike[str]) -> list[Path]:
    """All image files under ``root``, recursively, sorted, hidden files and folders skipped.

    Extensions are matched case-insensitively (``.PNG`` and ``.Tif`` count).

    Args:
        root: Folder to walk.

    Returns:
        Sorted list of image paths.
    """
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        for name in files:
            if not is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(folder) / name)
    return sorted(found)


def _check_complete(data: bytes, path: Path) -> None:
    tail = data.rstrip(b"\x00")
    if data.startswith(_PNG_SIGNATURE) and not tail.endswith(_PNG_END):
        raise BadImageError(f"{path}: truncated PNG (no IEND chunk); re-export or delete the file")
    if data.startswith(_JPEG_START) and not tail.endswith(_JPEG_END):
        raise BadImageError(f"{path}: truncated JPEG (no end marker); re-export or delete the file")


def _decode_opencv(path: Path) -> np.ndarray:
    data = path.read_bytes()
    _check_complete(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise BadImageError(f"{path}: not a readable PNG/JPEG/BMP image; check or delete the file")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    return image


def _decode_tiff(path: Path) -> tuple[np.ndarray, int | None]:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            image = page.asarray()
            declared = int(page.bitspersample)
    except Exception as error:  # tifffile raises many types for broken files
        # compressions tifffile cannot decode without imagecodecs (e.g. LZW): try OpenCV
        try:
            return _decode_opencv(path), None
        except BadImageError:
            raise BadImageError(
                f"{path}: not a readable TIFF ({error}); check or delete it"
            ) from error
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # planar (C, H, W) storage
    return image, declared


def _as_hwc(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or min(image.shape[:2]) < 1:
        raise BadImageError(f"{path}: unexpected image shape {image.shape}; expected H x W [x C]")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise BadImageError(f"{path}: unsupported pixel type {image.dtype}; use 8/16-bit or float")
    return image


def read_raw(path: str | os.PathLike[str]) -> tuple[np.ndarray, int | None]:
    """Decode a file without scaling: native dtype, ``H x W x C``, RGB(A) channel order.

    Args:
        path: Image file.

    Returns:
        The array and the bits per sample the file declares (TIFF only, else None).

    Raises:
        BadImageError: The file is empty, truncated or not an image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise BadImageError(f"{path}: cannot be read ({error})") from error
    if size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes); delete it or copy it again")
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        image, declared = _decode_tiff(path)
    else:
        image, declared = _decode_opencv(path), None
    return _as_hwc(image, path), declared


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


def to_float(image: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Scale an integer or float image to float32 in [0, 1].

    Args:
        image: ``uint8``, ``uint16`` or float array.
        bit_depth: Significant bits of 16-bit data; None infers them from the image's maximum.
            Ignored for ``uint8`` (always 8) and float (assumed [0, 1]).

    Returns:
        float32 array of the same shape.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    if image.dtype == np.uint16:
        bits = bit_depth or infer_bit_depth(int(image.max()))
        scaled = image.astype(np.float32) * np.float32(1 / (2**bits - 1))
        return np.minimum(scaled, 1.0, out=scaled)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


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
        _log_once(f"dropping the alpha channel ({channels} -> {channels - 1} channels)")
        image, channels = image[:, :, : channels - 1], channels - 1
    if channels == in_chans:
        return image
    if channels == 1:
        _log_once(f"repeating mono images to {in_chans} channels")
        return np.repeat(image, in_chans, axis=2)
    if channels == 3 and in_chans == 1:
        _log_once("converting RGB images to 1 channel by luminance")
        return (image @ _LUMA)[:, :, None]
    raise ValueError(
        f"cannot convert a {channels}-channel image to in_chans={in_chans}; "
        "set in_chans to 1, 3 or the file's channel count"
    )


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
    if bit_depth is None and declared is not None and 8 < declared < 16:
        bit_depth = declared
    return convert_channels(to_float(raw, bit_depth), in_chans)
