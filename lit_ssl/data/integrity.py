"""Whether a file's bytes and pixels make a usable image: truncation, bad floats, page counts.

A file that stops before its end marker (PNG ``IEND`` chunk, JPEG ``EOI``) is truncated and
rejected; extra bytes after the marker, as some cameras write, are allowed. A float image with
any NaN or infinity, or values above 255, is rejected too. A multi-page TIFF is usable (page 0),
but named in a warning (:func:`multipage_message`). Every rejection is a
:class:`BadImageError` whose message names the file and what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["MAX_FLOAT", "BadImageError", "check_complete", "check_float", "multipage_message"]

MAX_FLOAT = 255.0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8"
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: markers without length
_JPEG_MARKER = re.compile(rb"\xff(?=[^\x00\x01\xd0-\xd7\xff])")  # a marker inside scan data


class BadImageError(ValueError):
    """A file that cannot be decoded into an image (empty, truncated, not an image)."""


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


def check_complete(data: bytes, path: Path) -> None:
    if data.startswith(_PNG_SIGNATURE) and not _png_complete(data):
        raise BadImageError(f"{path}: truncated PNG (no IEND chunk); re-export or delete the file")
    if data.startswith(_JPEG_START) and not _jpeg_complete(data):
        raise BadImageError(f"{path}: truncated JPEG (no end marker); re-export or delete the file")


def check_float(image: np.ndarray, path: Path) -> None:
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(finite.size - finite.sum())
        raise BadImageError(
            f"{path}: float image with {bad} of {finite.size} values NaN or infinite; "
            "fix or delete the file"
        )
    top = float(image.max())
    if top > MAX_FLOAT:
        raise BadImageError(
            f"{path}: float values up to {top:.6g}; float images must be in [0, 1] or 0-255; "
            "rescale the file or save it as 8/16-bit integers"
        )


def multipage_message(paths: list[str]) -> str:
    """The warning for multi-page TIFFs, naming them (at most 20)."""
    listed = "\n  ".join(paths[:20]) + (
        f"\n  ... and {len(paths) - 20} more" if len(paths) > 20 else ""
    )
    return (
        f"{len(paths)} multi-page TIFF file(s): only page 0 (the first page) of each is used; "
        f"split the pages into files to use the others:\n  {listed}"
    )
