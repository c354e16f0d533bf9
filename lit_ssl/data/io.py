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
"""

from __future__ import annotations

import errno
import logging
import os
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

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
    "read_image",
    "read_raw",
    "to_float",
    "warn_once",
]

log = logging.getLogger("lit_ssl.data")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
_TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8"
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: markers without length
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\x01\xd0-\xd7\xff])")  # a marker inside scan data
_MAX_FLOAT = 255.0
_CANDIDATE_DEPTHS = (10, 12, 14, 16)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_logged: set[str] = set()


class BadImageError(ValueError):
    """A file that cannot be decoded into an image (empty, truncated, not an image)."""


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info(message)


def warn_once(message: str) -> None:
    """Issue ``message`` as a ``UserWarning`` once per process."""
    if message not in _logged:
        _logged.add(message)
        warnings.warn(message, stacklevel=3)


@dataclass
class WalkReport:
    """What :func:`list_images` left out.

    Attributes:
        skipped: ``{path: reason}`` for symlink loops and folders that could not be listed.
        excluded: Folders left out because their name was in ``exclude`` (mask folders).
    """

    skipped: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)

    def warn(self) -> None:
        """Warn once naming every skipped path (no-op when nothing was skipped)."""
        if self.skipped:
            listed = "\n  ".join(f"{p}: {why}" for p, why in sorted(self.skipped.items()))
            warnings.warn(f"skipped while listing images:\n  {listed}", stacklevel=3)


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden or tool litter (``.DS_Store``, ``__MACOSX``).

    Args:
        name: One path component.

    Returns:
        True for names starting with ``.`` or ``__MACOSX``.
    """
    return name.startswith(".") or name == "__MACOSX"


def _is_loop(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def _walk_error(report: WalkReport) -> object:
    def record(error: OSError) -> None:
        report.skipped[str(error.filename)] = f"cannot list folder ({error.strerror})"

    return record


def _keep_dirs(
    folder: str, dirs: list[str], seen: set[str], exclude: Collection[str], report: WalkReport
) -> list[str]:
    kept = []
    here = os.path.realpath(folder)
    for name in sorted(dirs):
        if is_hidden(name):
            continue
        path = os.path.join(folder, name)
        real = os.path.realpath(path)
        if name.lower() in exclude:
            report.excluded.append(path)
        elif _is_loop(path) or here == real or here.startswith(real + os.sep):
            report.skipped[path] = f"symlink loop (points to {real}, a folder above it)"
        elif real not in seen:  # a second link to a folder already listed is not read twice
            seen.add(real)
            kept.append(name)
    return kept


def list_images(
    root: str | os.PathLike[str],
    exclude: Collection[str] = (),
    report: WalkReport | None = None,
) -> list[Path]:
    """All image files under ``root``, recursively, sorted, hidden files and folders skipped.

    Extensions are matched case-insensitively (``.PNG`` and ``.Tif`` count). Symbolic links to
    folders are followed; each real folder is listed once, and symlink loops are skipped.

    Args:
        root: Folder to walk.
        exclude: Folder names (lower case) to leave out, e.g. mask folders.
        report: Collects what was skipped or excluded; when None, skipped paths are warned
            about here.

    Returns:
        Sorted list of image paths.
    """
    own = report is None
    report = WalkReport() if report is None else report
    seen = {os.path.realpath(root)}
    exclude = {name.lower() for name in exclude}
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, onerror=_walk_error(report), followlinks=True):
        dirs[:] = _keep_dirs(folder, dirs, seen, exclude, report)
        for name in files:
            if is_hidden(name):
                continue
            path = os.path.join(folder, name)
            if os.path.islink(path) and _is_loop(path):
                report.skipped[path] = "symlink loop"
            elif Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(path))
    if own:
        report.warn()
    return sorted(found)


def _png_complete(data: bytes) -> bool:
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        position += 12 + length
        if kind == b"IEND":
            return position <= len(data)
    return False


def _jpeg_scan_end(data: bytes, position: int) -> int:
    """Position of the first marker after entropy-coded data (stuffed 0xFF00 and RSTn skipped)."""
    found = _JPEG_MARKER.search(data, position)
    return len(data) if found is None else found.start()


def _jpeg_complete(data: bytes) -> bool:
    """Walk the JPEG segments from SOI to EOI; bytes after EOI are allowed."""
    position = 2
    while position + 2 <= len(data):
        if data[position] != 0xFF:
            return False
        code = data[position + 1]
        if code == 0xFF:  # fill byte
            position += 1
            continue
        if code == 0xD9:
            return True
        if code in _JPEG_STANDALONE:
            position += 2
            continue
        if position + 4 > len(data):
            return False
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if code == 0xDA:  # start of scan: entropy-coded data up to the next marker
            position = _jpeg_scan_end(data, position)
    return False


def _check_complete(data: bytes, path: Path) -> None:
    if data.startswith(_PNG_SIGNATURE) and not _png_complete(data):
        raise BadImageError(f"{path}: truncated PNG (no IEND chunk); re-export or delete the file")
    if data.startswith(_JPEG_START) and not _jpeg_complete(data):
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
        _check_float(image, path)
    return image


def _check_float(image: np.ndarray, path: Path) -> None:
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(finite.size - finite.sum())
        raise BadImageError(
            f"{path}: float image with {bad} of {finite.size} values NaN or infinite; "
            "fix or delete the file"
        )
    top = float(image.max())
    if top > _MAX_FLOAT:
        raise BadImageError(
            f"{path}: float values up to {top:.6g}; float images must be in [0, 1] or 0-255; "
            "rescale the file or save it as 8/16-bit integers"
        )


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


def multipage_message(paths: list[str]) -> str:
    """The warning for multi-page TIFFs, naming them (at most 20)."""
    listed = "\n  ".join(paths[:20]) + (
        f"\n  ... and {len(paths) - 20} more" if len(paths) > 20 else ""
    )
    return (
        f"{len(paths)} multi-page TIFF file(s): only page 0 (the first page) of each is used; "
        f"split the pages into files to use the others:\n  {listed}"
    )


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
            float_scale = _MAX_FLOAT
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
    if bit_depth is None:
        bit_depth = declared_depth(declared)
    return convert_channels(to_float(raw, bit_depth), in_chans)
