"""Setup's look at the listed files: what could not be listed, what cannot be decoded, what the
cache holds, whether the crop fits; each said once, or raised with ``on_bad_file="raise"``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from lit_ssl.data.integrity import multipage_message
from lit_ssl.data.scan import ScanResult, cache_notice, scan_files
from lit_ssl.data.walk import IMAGE_EXTENSIONS

__all__ = ["empty_message", "report_unlisted", "verify_files"]

log = logging.getLogger("lit_ssl.data")
_MAX_NAMED = 20


def _listed(names: list[str], line: dict[str, str]) -> str:
    """Up to 20 lines, one per name, then how many more."""
    listed = "\n  ".join(line[n] for n in names[:_MAX_NAMED])
    more = f"\n  ... and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else ""
    return f"{listed}{more}"


def report_unlisted(skipped: dict[str, str], on_bad_file: str) -> list[str]:
    """Warn about (or raise for) the paths the folder walk could not list.

    Args:
        skipped: ``{path: reason}`` from the walk.
        on_bad_file: ``"skip"`` or ``"raise"``.

    Returns:
        The skipped paths that look like image files, sorted.
    """
    if not skipped:
        return []
    names = sorted(skipped)
    listed = _listed(names, {n: f"{n}: {skipped[n]}" for n in names})
    message = f"{len(names)} path(s) under the dataset root cannot be listed:\n  {listed}"
    if on_bad_file == "raise":
        raise ValueError(f"{message}\nremove or fix them, or set on_bad_file='skip'")
    warnings.warn(f"{message}\nthey are skipped", stacklevel=5)
    return [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]


def empty_message(root: Path, layout: str | None) -> str:
    """Why a dataset root gave no image."""
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
    return (
        f"no images found under {root} (layout {layout!r}); expected files "
        f"with extensions {extensions} (any case); hidden files and folders are ignored"
    )


def verify_files(
    paths: list[str],
    verify: bool,
    cache_images: bool | None,
    cache_limit_mb: float | None,
    on_bad_file: str,
    crop_size: int | None,
) -> ScanResult:
    """Decode every file once (when verifying or filling the cache) and say what it found.

    Args:
        paths: The listed image files.
        verify: ``verify_files``.
        cache_images: ``cache_images`` (True: every image, None: to the budget, False: none).
        cache_limit_mb: The cache budget (None: a share of RAM).
        on_bad_file: ``"skip"`` unreadable files (one warning) or ``"raise"``.
        crop_size: The crop side, checked against the largest frame.

    Returns:
        The scan (empty when nothing was decoded).
    """
    if not verify and cache_images is not True:
        if cache_limit_mb is not None and cache_images is None:
            warnings.warn(
                f"cache_limit_mb={cache_limit_mb} is unused: with verify_files=False "
                "nothing is decoded at setup, so nothing is cached; set verify_files=True "
                "or cache_images=True to fill the cache",
                stacklevel=5,
            )
        return ScanResult()
    if not verify:
        log.warning(
            "cache_images=True: every file is decoded once at setup to fill the cache, as "
            "verify_files=True does (unreadable files are found and skipped there too)"
        )
    scan = scan_files(paths, cache_images, cache_limit_mb, min(8, os.cpu_count() or 1))
    if scan.bad:
        _report_bad(scan.bad, len(paths), on_bad_file)
    if scan.multipage:
        warnings.warn(multipage_message(scan.multipage), stacklevel=5)
    notice = cache_notice(scan, cache_limit_mb is None)
    if notice is not None:
        warnings.warn(notice, stacklevel=5)
    _check_crop_fits(crop_size, scan.largest)
    return scan


def _check_crop_fits(crop: int | None, largest: tuple[int, int]) -> None:
    if crop is not None and 0 < max(largest) < crop:
        warnings.warn(
            f"crop_size={crop} is larger than every frame (largest {largest[0]} x "
            f"{largest[1]} px): each crop is a whole frame zero-padded to {crop} px; use a "
            "smaller crop_size, or None",
            stacklevel=6,
        )


def _report_bad(bad: dict[str, str], total: int, on_bad_file: str) -> None:
    names = sorted(bad)
    message = f"{len(bad)} of {total} image files are unreadable:\n  {_listed(names, bad)}"
    if on_bad_file == "raise":
        raise ValueError(f"{message}\nfix or delete them, or set on_bad_file='skip'")
    warnings.warn(f"{message}\nthey are skipped (on_bad_file='skip')", stacklevel=6)
