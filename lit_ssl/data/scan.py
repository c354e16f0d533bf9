"""Decode every file once at setup: find bad files early, infer the bit depth, cache to a budget.

Bad files (empty, truncated, not an image, float images with NaN/infinity or values above 255)
are found here, before training, instead of crashing an epoch halfway. Decoding runs in a
thread pool (OpenCV and tifffile release the GIL). Decoded arrays (native dtype, before any
crop or resize: 16-bit frames stay 16-bit) are kept in memory until the byte budget
(``cache_limit_mb``; default :func:`default_cache_limit_mb`, a quarter of the machine's RAM) is
used; the rest is read from disk on every access. :func:`cache_notice` says how it split.

Pixel scaling (:func:`infer_scaling`) is decided from a fixed sample of the files
(:func:`sample_paths`: all of them up to :data:`SAMPLE_FILES`, else that many spread evenly over
the sorted list), never from the whole scan, so it is the same whether the files were verified
(their statistics come from the scan) or not (:func:`sample_stats` decodes just the sample).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lit_ssl.data.decoding import Decoded, decode
from lit_ssl.data.integrity import BadImageError
from lit_ssl.data.pixels import declared_depth, infer_bit_depth

__all__ = [
    "CACHE_RAM_FRACTION",
    "SAMPLE_FILES",
    "PixelStats",
    "ScanResult",
    "Scaling",
    "cache_notice",
    "default_cache_limit_mb",
    "infer_scaling",
    "sample_paths",
    "sample_stats",
    "scan_files",
]

CACHE_RAM_FRACTION = 0.25
SAMPLE_FILES = 64  # files whose values decide the dataset's bit depth and float scale
_FALLBACK_MB = 1024.0  # where the physical memory cannot be read


def default_cache_limit_mb() -> float:
    """A quarter of the physical memory (``os.sysconf``), in MiB; 1024 where unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return _FALLBACK_MB
    return CACHE_RAM_FRACTION * total / 2**20 if total > 0 else _FALLBACK_MB


@dataclass(frozen=True)
class PixelStats:
    """What pixel scaling needs to know of one decoded file.

    Attributes:
        dtype: numpy dtype name of the decoded array (``"uint8"``, ``"uint16"``, ``"float32"``).
        top: Its largest value.
        declared_bits: Bits per sample a TIFF declares (None for other formats).
    """

    dtype: str
    top: float
    declared_bits: int | None = None

    @classmethod
    def of(cls, decoded: Decoded) -> PixelStats:
        """The statistics of a decoded file."""
        image = decoded.image
        top = float(image.max()) if image.size else 0.0
        return cls(image.dtype.name, top, decoded.declared_bits)

    @property
    def undeclared_16bit(self) -> bool:
        """A 16-bit file that declares no depth below 16 (its depth must be inferred)."""
        return self.dtype == "uint16" and declared_depth(self.declared_bits) is None

    @property
    def is_float(self) -> bool:
        """A float file."""
        return self.dtype.startswith("float")


@dataclass
class ScanResult:
    """What decoding every file found.

    Attributes:
        bad: ``{path: reason}`` for every file that could not be decoded.
        max_uint16: Largest value seen in 16-bit files (0 if none).
        declared_bits: Smallest bits-per-sample a 16-bit TIFF declared (None if none did).
        max_float: Largest value seen in float files (None if there is none).
        multipage: Multi-page TIFFs (only their page 0 is used), sorted.
        cache: Decoded arrays by path (those that fit the budget), or None when nothing is
            cached (``cache_images=False``, or not scanned).
        cached_bytes: Bytes held by ``cache``.
        uncached: Readable files left out of the cache (read from disk when needed).
        limit_mb: The budget the cache was filled to (None: unlimited, or no cache).
        largest: ``(height, width)``: the tallest and the widest frame seen.
        stats: :class:`PixelStats` of every readable file, by path (empty: not scanned).
    """

    bad: dict[str, str] = field(default_factory=dict)
    max_uint16: int = 0
    declared_bits: int | None = None
    max_float: float | None = None
    multipage: list[str] = field(default_factory=list)
    cache: dict[str, np.ndarray] | None = None
    cached_bytes: int = 0
    uncached: int = 0
    limit_mb: float | None = None
    largest: tuple[int, int] = (0, 0)
    stats: dict[str, PixelStats] = field(default_factory=dict)

    @property
    def scanned(self) -> bool:
        """Whether the files were decoded (an empty result means they were not)."""
        return bool(self.stats or self.bad)


def _decode(path: str) -> tuple[str, Decoded | None, str | None]:
    try:
        return path, decode(path), None
    except BadImageError as error:
        return path, None, str(error)


def _record(result: ScanResult, path: str, decoded: Decoded) -> None:
    image, declared = decoded.image, decoded.declared_bits
    result.stats[path] = PixelStats.of(decoded)
    tall, wide = result.largest
    result.largest = (max(tall, image.shape[0]), max(wide, image.shape[1]))
    if decoded.pages > 1:
        result.multipage.append(path)
    if image.dtype.kind == "f":
        result.max_float = max(result.max_float or 0.0, float(image.max()))
    if image.dtype != np.uint16:
        return
    result.max_uint16 = max(result.max_uint16, int(image.max()))
    if declared is not None and declared < 16:
        result.declared_bits = min(declared, result.declared_bits or declared)


def _keep(result: ScanResult, path: str, image: np.ndarray, budget: float | None) -> None:
    if result.cache is None:
        return
    if budget is not None and result.cached_bytes + image.nbytes > budget:
        result.uncached += 1
        return
    result.cache[path] = image
    result.cached_bytes += image.nbytes


def scan_files(
    paths: list[str], cache: bool | None, cache_limit_mb: float | None, threads: int
) -> ScanResult:
    """Decode every path once, keeping decoded arrays in memory up to a byte budget.

    Args:
        paths: Image files.
        cache: True keeps every decoded array (no budget), False none, None keeps them in
            path order while they fit in ``cache_limit_mb`` (each array that would exceed it
            is left to the disk; a smaller later one may still fit).
        cache_limit_mb: The budget for ``cache=None``, in MiB; None means
            :func:`default_cache_limit_mb`.
        threads: Decoding threads.

    Returns:
        The scan result.
    """
    result = ScanResult(cache={} if cache is not False else None)
    if cache is None:
        result.limit_mb = default_cache_limit_mb() if cache_limit_mb is None else cache_limit_mb
    budget = None if result.limit_mb is None else result.limit_mb * 2**20
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for path, decoded, error in pool.map(_decode, paths):
            if decoded is None:
                result.bad[path] = error or "unreadable"
                continue
            _record(result, path, decoded)
            _keep(result, path, decoded.image, budget)
    result.multipage.sort()
    return result


def sample_paths(paths: Sequence[str], count: int = SAMPLE_FILES) -> list[str]:
    """The files whose values decide the pixel scaling: every path when there are at most
    ``count``, else ``count`` of them spread evenly over the list (first and last included).

    Args:
        paths: Every file of the dataset (readable or not), in the dataset's (sorted) order.
        count: How many to take.
    """
    if len(paths) <= count:
        return list(paths)
    picks = np.unique(np.linspace(0, len(paths) - 1, count).round().astype(np.int64))
    return [paths[i] for i in picks.tolist()]


def sample_stats(paths: Sequence[str], threads: int) -> dict[str, PixelStats]:
    """:class:`PixelStats` of the readable files among ``paths`` (each decoded once, not kept).

    Args:
        paths: Files to decode (:func:`sample_paths`).
        threads: Decoding threads.
    """
    stats: dict[str, PixelStats] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for path, decoded, _ in pool.map(_decode, paths):
            if decoded is not None:
                stats[path] = PixelStats.of(decoded)
    return stats


@dataclass(frozen=True)
class Scaling:
    """The dataset's pixel scaling, inferred from the sampled files' :class:`PixelStats`.

    Attributes:
        bit_depth: Depth of the 16-bit files that declare none below 16: the smallest of
            10/12/14/16 bits holding ``top_uint16``; None when no such file was sampled.
        float_scale: Divisor of float files: 255 when a sampled float file goes above 1, 1
            when sampled float files stay in [0, 1], None when none was sampled.
        sampled: Readable files sampled.
        top_uint16: Largest value of those 16-bit files (0: none sampled).
        top_float: Largest value of the sampled float files (None: none sampled).
    """

    bit_depth: int | None
    float_scale: float | None
    sampled: int
    top_uint16: int = 0
    top_float: float | None = None


def infer_scaling(stats: Mapping[str, PixelStats]) -> Scaling:
    """The dataset's bit depth and float scale from the sampled files' statistics.

    Args:
        stats: The sampled files' statistics, by path.
    """
    tops = [int(s.top) for s in stats.values() if s.undeclared_16bit]
    floats = [s.top for s in stats.values() if s.is_float]
    top_uint16 = max(tops, default=0)
    top_float = max(floats) if floats else None
    bits = infer_bit_depth(top_uint16) if tops else None
    scale = None if top_float is None else (255.0 if top_float > 1.0 else 1.0)
    return Scaling(bits, scale, len(stats), top_uint16, top_float)


def _mib(value: float) -> str:
    return f"{value:.1f} MiB" if value < 10 else f"{value:.0f} MiB"


def cache_notice(result: ScanResult, default_budget: bool) -> str | None:
    """The one-line notice when the budget left images on disk (None when all fit).

    Args:
        result: A scan with ``cache=None`` semantics (``limit_mb`` set).
        default_budget: Whether the budget is the RAM-fraction default.
    """
    if result.cache is None or result.uncached == 0 or result.limit_mb is None:
        return None
    cached = len(result.cache)
    origin = f"{CACHE_RAM_FRACTION:.0%} of RAM" if default_budget else "cache_limit_mb"
    return (
        f"image cache: {cached} decoded image(s) kept in memory "
        f"({_mib(result.cached_bytes / 2**20)}), {result.uncached} read from disk on every "
        f"access: the budget is {_mib(result.limit_mb)} ({origin}); raise it with "
        "cache_limit_mb (--data.cache_limit_mb) or set cache_images=False to cache nothing"
    )
