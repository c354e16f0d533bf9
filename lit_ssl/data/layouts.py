"""Dataset layouts on disk, turned into one table of samples (path, label, split, mask).

Supported layouts:

- ``mvtec``: an MVTec AD category (also VisA after its standard re-arrangement):
  ``train/good``, ``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``.
  Masks are matched by stem (``<stem>_mask.*`` or ``<stem>.*``), never by sort order.
- ``class_folders``: ``root/<class>/**/image``; ``good``, ``ok`` or ``normal`` mean defect-free.
- ``csv``: a manifest ``path,label[,split][,mask]`` with a header row; paths are relative to the
  CSV's folder and may not escape it.
- ``unlabeled``: any folder tree of images; every label is unknown.

``layout="auto"`` picks ``csv`` when ``root`` is a ``.csv`` file or holds ``manifest.csv``,
``mvtec`` when ``root`` has ``train/`` and ``test/`` folders, ``class_folders`` when ``root`` holds
no images itself but at least two sub-folders with images, one of them named good/ok/normal, and
``unlabeled`` otherwise.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from lit_ssl.data.io import IMAGE_EXTENSIONS, is_hidden, list_images

__all__ = ["GOOD_NAMES", "LAYOUTS", "Sample", "detect_layout", "find_samples"]

GOOD_NAMES = ("good", "ok", "normal")
LAYOUTS = ("mvtec", "visa", "class_folders", "csv", "unlabeled")
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes:
        path: Absolute path of the image.
        label: Class name, or None when unknown.
        split: ``"train"``, ``"val"``, ``"test"``, or None when the layout does not say.
        mask: Absolute path of the ground-truth mask, if any.
    """

    path: str
    label: str | None = None
    split: str | None = None
    mask: str | None = None


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def _has_direct_images(folder: Path) -> bool:
    return any(
        p.is_file() and not is_hidden(p.name) and p.suffix.lower() in IMAGE_EXTENSIONS
        for p in folder.iterdir()
    )


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the layout of ``root`` (see the module docstring for the rules).

    Args:
        root: Dataset folder, or a CSV manifest.

    Returns:
        One of ``"csv"``, ``"mvtec"``, ``"class_folders"``, ``"unlabeled"``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist; check data.root")
    if root.is_file():
        return "csv" if root.suffix.lower() == ".csv" else "unlabeled"
    if (root / "manifest.csv").is_file():
        return "csv"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "mvtec"
    subdirs = [d for d in _subdirs(root) if list_images(d)]
    names = {d.name.lower() for d in subdirs}
    if not _has_direct_images(root) and len(subdirs) >= 2 and names & set(GOOD_NAMES):
        return "class_folders"
    return "unlabeled"


def find_samples(root: str | os.PathLike[str], layout: str = "auto") -> tuple[str, list[Sample]]:
    """List the samples of a dataset, once.

    Args:
        root: Dataset folder, or a CSV manifest.
        layout: One of :data:`LAYOUTS` or ``"auto"``.

    Returns:
        The layout used and the samples, sorted by path.

    Raises:
        ValueError: Unknown layout, or a malformed tree/manifest.
    """
    if layout not in (*LAYOUTS, "auto"):
        raise ValueError(f"unknown layout {layout!r}; use 'auto' or one of {LAYOUTS}")
    resolved = detect_layout(root) if layout == "auto" else layout
    readers = {
        "mvtec": _mvtec,
        "visa": _mvtec,
        "class_folders": _class_folders,
        "csv": _csv,
        "unlabeled": _unlabeled,
    }
    return resolved, readers[resolved](Path(root))


def _unlabeled(root: Path) -> list[Sample]:
    return [Sample(str(p.resolve())) for p in list_images(root)]


def _class_folders(root: Path) -> list[Sample]:
    samples = []
    for folder in _subdirs(root):
        samples += [Sample(str(p.resolve()), folder.name) for p in list_images(folder)]
    if not samples:
        raise ValueError(f"{root}: no images in any class folder root/<class>/*")
    return samples


def _mask_index(folder: Path) -> dict[str, str]:
    index: dict[str, str] = {}
    for path in list_images(folder) if folder.is_dir() else []:
        stem = path.relative_to(folder).with_suffix("").as_posix().removesuffix("_mask")
        index[stem] = str(path.resolve())
    return index


def _mvtec(root: Path) -> list[Sample]:
    for needed in ("train", "test"):
        if not (root / needed).is_dir():
            raise ValueError(f"{root}: MVTec layout needs a '{needed}/' folder")
    samples = []
    for split in ("train", "test"):
        for folder in _subdirs(root / split):
            masks = _mask_index(root / "ground_truth" / folder.name)
            for path in list_images(folder):
                stem = path.relative_to(folder).with_suffix("").as_posix()
                mask = masks.get(stem)
                samples.append(Sample(str(path.resolve()), folder.name, split, mask))
    return samples


def _manifest_path(root: Path) -> Path:
    if root.is_file():
        return root
    if (root / "manifest.csv").is_file():
        return root / "manifest.csv"
    found = sorted(p for p in root.glob("*.csv") if not is_hidden(p.name))
    if len(found) != 1:
        raise ValueError(
            f"{root}: expected one CSV manifest, found {len(found)}; pass the CSV file as root"
        )
    return found[0]


def _inside(base: Path, relative: str, manifest: Path, line: int) -> str:
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ValueError(
            f"{manifest}:{line}: path {relative!r} escapes the manifest's folder {base}; "
            "move the images under it or the manifest above them"
        )
    return str(path)


def _csv_row(row: dict[str, str], base: Path, manifest: Path, line: int) -> Sample:
    relative = (row.get("path") or "").strip()
    if not relative:
        raise ValueError(f"{manifest}:{line}: empty 'path'")
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in _SPLITS:
        raise ValueError(f"{manifest}:{line}: split {split!r} is not one of {_SPLITS}")
    mask = (row.get("mask") or "").strip()
    return Sample(
        _inside(base, relative, manifest, line),
        (row.get("label") or "").strip() or None,
        split,
        _inside(base, mask, manifest, line) if mask else None,
    )


def _csv(root: Path) -> list[Sample]:
    manifest = _manifest_path(root)
    base = manifest.parent.resolve()
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{manifest}: needs a header row with a 'path' column")
        samples = [_csv_row(row, base, manifest, i + 2) for i, row in enumerate(reader)]
    return sorted(samples, key=lambda s: s.path)
