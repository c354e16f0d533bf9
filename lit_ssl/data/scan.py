"""Decode every file once at setup: find bad files early, infer the bit depth, optionally cache.

Bad files (empty, truncated, not an image, float images with NaN/infinity or values above 255)
are found here, before training, instead of crashing
an epoch halfway. Decoding runs in a thread pool (OpenCV and tifffile release the GIL). When the
decoded arrays (native dtype, before resizing) fit in ``cache_limit_mb`` they are kept, so the
per-sample path never touches the disk again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lit_ssl.data.io import BadImageError, Decoded, decode

__all__ = ["ScanResult", "scan_files"]


@dataclass
class ScanResult:
    """What decoding every file found.

    Attributes:
        bad: ``{path: reason}`` for every file that could not be decoded.
        max_uint16: Largest value seen in 16-bit files (0 if none).
        declared_bits: Smallest bits-per-sample a 16-bit TIFF declared (None if none did).
        max_float: Largest value seen in float files (None if there is none).
        multipage: Multi-page TIFFs (only their page 0 is used), sorted.
        cache: Decoded arrays by path, or None when they did not fit the limit.
    """

    bad: dict[str, str] = field(default_factory=dict)
    max_uint16: int = 0
    declared_bits: int | None = None
    max_float: float | None = None
    multipage: list[str] = field(default_factory=list)
    cache: dict[str, np.ndarray] | None = None


def _decode(path: str) -> tuple[str, Decoded | None, str | None]:
    try:
        return path, decode(path), None
    except BadImageError as error:
        return path, None, str(error)


def _record(result: ScanResult, path: str, decoded: Decoded) -> None:
    image, declared = decoded.image, decoded.declared_bits
    if decoded.pages > 1:
        result.multipage.append(path)
    if image.dtype.kind == "f":
        result.max_float = max(result.max_float or 0.0, float(image.max()))
    if image.dtype != np.uint16:
        return
    result.max_uint16 = max(result.max_uint16, int(image.max()))
    if declared is not None and declared < 16:
        result.declared_bits = min(declared, result.declared_bits or declared)


def scan_files(
    paths: list[str], cache: bool | None, cache_limit_mb: float, threads: int
) -> ScanResult:
    """Decode every path once.

    Args:
        paths: Image files.
        cache: True keeps every decoded array, False none, None keeps them if they fit.
        cache_limit_mb: Memory limit for ``cache=None``.
        threads: Decoding threads.

    Returns:
        The scan result.
    """
    result = ScanResult(cache={} if cache is not False else None)
    used = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for path, decoded, error in pool.map(_decode, paths):
            if decoded is None:
                result.bad[path] = error or "unreadable"
                continue
            _record(result, path, decoded)
            image = decoded.image
            if result.cache is None:
                continue
            used += image.nbytes
            if cache is None and used > cache_limit_mb * 2**20:
                result.cache = None
            else:
                result.cache[path] = image
    result.multipage.sort()
    return result
