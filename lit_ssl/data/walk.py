"""Walking a dataset folder: which files are images, which are hidden, which links loop.

Extensions are matched case-insensitively (:data:`IMAGE_EXTENSIONS`). Hidden files and folders
(``.DS_Store``, ``.git``, ``__MACOSX``) are skipped. :func:`list_images` follows symbolic links
to folders, walks every real folder once, and skips symlink loops, reporting them in a
:class:`WalkReport` (or a warning naming them).
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "WalkReport", "is_hidden", "list_images"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


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
