"""Dataset layouts on disk, turned into one table of samples (path, label, split, mask).

Supported layouts:

- ``mvtec``: an MVTec AD category: ``train/good``, ``test/good``, ``test/<defect>``,
  ``ground_truth/<defect>/<stem>_mask.png``. Masks are matched by stem (``<stem>_mask.*`` or
  ``<stem>.*``), never by sort order; a mask that matches no image is named in a warning.
- ``visa``: the VisA dataset as downloaded: ``split_csv/1cls.csv`` (columns ``object, split,
  label, image, mask``; paths relative to the VisA root; labels ``normal``/``anomaly``; splits
  ``train``/``test``) read from the VisA root (every object, or ``category``) or from a category
  folder whose parent holds ``split_csv/`` (that object only). A category folder without the CSV
  (``Data/Images/{Normal,Anomaly}``, ``Data/Masks/Anomaly``) is read without splits. A tree
  re-arranged into the MVTec form is read as ``mvtec``.
- ``class_folders``: ``root/<class>/**/image``; ``good``, ``ok`` or ``normal`` mean defect-free.
- ``csv``: a manifest ``path,label[,split][,mask]`` with a header row; paths are relative to the
  CSV's folder and may not escape it.
- ``unlabeled``: any folder tree of images; every label is unknown.

``layout="auto"`` picks ``csv`` when ``root`` is a ``.csv`` file or holds ``manifest.csv``,
``visa`` when ``root`` (or, for a category folder with ``Data/Images``, its parent) holds
``split_csv/1cls.csv``, ``mvtec`` when ``root`` has ``train/`` and ``test/`` folders, ``visa`` when
``root`` has ``Data/Images``, ``class_folders`` when ``root`` holds no images itself but at least
two sub-folders with images, one of them named good/ok/normal, and ``unlabeled`` otherwise.
Auto-detected ``class_folders`` and ``unlabeled`` trees leave out mask folders (named
``ground_truth`` or ``masks``, any case) with a warning naming them; an explicit
``layout="unlabeled"`` lists every image.

A root that is a file other than a ``.csv`` manifest is an error ("root is a file; give the
folder"). Symlink loops are skipped and reported (see :class:`~lit_ssl.data.walk.WalkReport`).
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lit_ssl.data.walk import IMAGE_EXTENSIONS, WalkReport, is_hidden, list_images

__all__ = ["GOOD_NAMES", "LAYOUTS", "MASK_FOLDERS", "Sample", "detect_layout", "find_samples"]

log = logging.getLogger("lit_ssl.data")
GOOD_NAMES = ("good", "ok", "normal")
LAYOUTS = ("mvtec", "visa", "class_folders", "csv", "unlabeled")
MASK_FOLDERS = ("ground_truth", "masks")
VISA_CSV = Path("split_csv") / "1cls.csv"
_VISA_COLUMNS = ("object", "split", "label", "image")
_SPLITS = ("train", "val", "test")
_MAX_NAMED = 20


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


def _named(paths: list[str]) -> str:
    more = f"\n  ... and {len(paths) - _MAX_NAMED} more" if len(paths) > _MAX_NAMED else ""
    return "\n  ".join(paths[:_MAX_NAMED]) + more


def _subdirs(folder: Path, report: WalkReport | None = None) -> list[Path]:
    kept = []
    here = os.path.realpath(folder)
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name)):
        real = os.path.realpath(path)
        if here == real or here.startswith(real + os.sep):
            if report is not None:
                report.skipped[str(path)] = f"symlink loop (points to {real}, a folder above it)"
            continue
        kept.append(path)
    return kept


def _has_direct_images(folder: Path) -> bool:
    return any(
        p.is_file() and not is_hidden(p.name) and p.suffix.lower() in IMAGE_EXTENSIONS
        for p in folder.iterdir()
    )


def _check_root(root: Path, layout: str) -> None:
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist; check data.root")
    if root.is_file() and (root.suffix.lower() != ".csv" or layout not in ("csv", "auto")):
        raise ValueError(
            f"root {root} is a file; give the folder that holds the images "
            "(a .csv manifest is accepted as root with layout 'csv' or 'auto')"
        )


def _visa_csv(root: Path) -> Path | None:
    if (root / VISA_CSV).is_file():
        return root / VISA_CSV
    if (root / "Data" / "Images").is_dir() and (root.parent / VISA_CSV).is_file():
        return root.parent / VISA_CSV
    return None


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the layout of ``root`` (see the module docstring for the rules).

    Args:
        root: Dataset folder, or a CSV manifest.

    Returns:
        One of ``"csv"``, ``"visa"``, ``"mvtec"``, ``"class_folders"``, ``"unlabeled"``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is a file other than a ``.csv`` manifest.
    """
    root = Path(root)
    _check_root(root, "auto")
    if root.is_file() or (root / "manifest.csv").is_file():
        return "csv"
    if _visa_csv(root) is not None:
        return "visa"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "mvtec"
    if (root / "Data" / "Images").is_dir():
        return "visa"
    subdirs = [d for d in _subdirs(root) if d.name.lower() not in MASK_FOLDERS]
    names = {d.name.lower() for d in subdirs if list_images(d, MASK_FOLDERS, WalkReport())}
    if not _has_direct_images(root) and len(names) >= 2 and names & set(GOOD_NAMES):
        return "class_folders"
    return "unlabeled"


def find_samples(
    root: str | os.PathLike[str],
    layout: str = "auto",
    category: str | None = None,
    report: WalkReport | None = None,
) -> tuple[str, list[Sample]]:
    """List the samples of a dataset, once.

    Args:
        root: Dataset folder, or a CSV manifest.
        layout: One of :data:`LAYOUTS` or ``"auto"``.
        category: One object of a multi-object dataset: the VisA ``object`` column, or else a
            sub-folder of ``root`` (e.g. an MVTec AD category) that becomes the root.
        report: Collects symlink loops and unlistable folders; when None they are warned about
            here.

    Returns:
        The layout used and the samples, sorted by path.

    Raises:
        ValueError: Unknown layout, a root that is a file, or a malformed tree/manifest.
        FileNotFoundError: ``root`` (or ``root/category``) does not exist.
    """
    if layout not in (*LAYOUTS, "auto"):
        raise ValueError(f"unknown layout {layout!r}; use 'auto' or one of {LAYOUTS}")
    root = Path(root)
    _check_root(root, layout)
    if category and not (root / VISA_CSV).is_file():
        root = root / category
        if not root.is_dir():
            raise FileNotFoundError(f"category folder {root} does not exist; check data.category")
        category = None
    resolved = detect_layout(root) if layout == "auto" else layout
    own = report is None
    report = WalkReport() if report is None else report
    readers: dict[str, Callable[[], list[Sample]]] = {
        "mvtec": lambda: _mvtec(root, report),
        "visa": lambda: _visa(root, category, report),
        "class_folders": lambda: _class_folders(root, layout == "auto", report),
        "csv": lambda: _csv(root),
        "unlabeled": lambda: _unlabeled(root, layout == "auto", report),
    }
    samples = sorted(readers[resolved](), key=lambda s: s.path)
    if report.excluded:
        warnings.warn(
            f"left out {len(report.excluded)} mask folder(s) (auto-detected layout "
            f"{resolved!r}); pass layout='unlabeled' to include them:\n  "
            + _named(sorted(report.excluded)),
            stacklevel=2,
        )
        report.excluded.clear()
    if own:
        report.warn()
    return resolved, samples


def _unlabeled(root: Path, auto: bool, report: WalkReport) -> list[Sample]:
    exclude = MASK_FOLDERS if auto else ()
    return [Sample(str(p.resolve())) for p in list_images(root, exclude, report)]


def _class_folders(root: Path, auto: bool, report: WalkReport) -> list[Sample]:
    exclude = MASK_FOLDERS if auto else ()
    samples = []
    for folder in _subdirs(root, report):
        if folder.name.lower() in exclude:
            report.excluded.append(str(folder))
            continue
        images = list_images(folder, exclude, report)
        samples += [Sample(str(p.resolve()), folder.name) for p in images]
    if not samples:
        raise ValueError(f"{root}: no images in any class folder root/<class>/*")
    return samples


def _mask_index(folder: Path, report: WalkReport) -> dict[str, str]:
    index: dict[str, str] = {}
    for path in list_images(folder, (), report) if folder.is_dir() else []:
        stem = path.relative_to(folder).with_suffix("").as_posix().removesuffix("_mask")
        index[stem] = str(path.resolve())
    return index


def _warn_unmatched_masks(unmatched: list[str], where: Path) -> None:
    if unmatched:
        warnings.warn(
            f"{len(unmatched)} mask(s) under {where} match no image by stem (image 000.png <-> "
            f"mask 000_mask.png or 000.png) and are not used:\n  {_named(sorted(unmatched))}",
            stacklevel=4,
        )


def _mvtec(root: Path, report: WalkReport) -> list[Sample]:
    for needed in ("train", "test"):
        if not (root / needed).is_dir():
            raise ValueError(f"{root}: MVTec layout needs a '{needed}/' folder")
    samples, used = [], set()
    for split in ("train", "test"):
        for folder in _subdirs(root / split, report):
            masks = _mask_index(root / "ground_truth" / folder.name, report)
            for path in list_images(folder, (), report):
                stem = path.relative_to(folder).with_suffix("").as_posix()
                mask = masks.get(stem)
                used.add(mask)
                samples.append(Sample(str(path.resolve()), folder.name, split, mask))
    every_mask = _mask_index(root / "ground_truth", WalkReport()) if samples else {}
    _warn_unmatched_masks([m for m in every_mask.values() if m not in used], root / "ground_truth")
    return samples


def _visa(root: Path, category: str | None, report: WalkReport) -> list[Sample]:
    manifest = _visa_csv(root)
    if manifest is not None:
        if not (root / VISA_CSV).is_file():  # a category folder next to split_csv/
            category = root.name
        return _visa_rows(manifest, category)
    if (root / "Data" / "Images").is_dir():
        return _visa_folders(root, report)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _mvtec(root, report)
    raise ValueError(
        f"{root}: not a VisA tree; expected split_csv/1cls.csv (the VisA root), "
        "<object>/Data/Images (a category) or train/ and test/ (re-arranged)"
    )


def _visa_rows(manifest: Path, category: str | None) -> list[Sample]:
    base = manifest.parent.parent.resolve()
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{manifest}: missing VisA column(s) {missing}; expected {_VISA_COLUMNS}"
            )
        rows = [(i + 2, row) for i, row in enumerate(reader)]
    objects = sorted({row["object"].strip() for _, row in rows})
    if category is not None:
        rows = [(i, row) for i, row in rows if row["object"].strip() == category]
        if not rows:
            raise ValueError(f"{manifest}: no rows for object {category!r}; objects: {objects}")
    log.info("VisA objects %s from %s", [category] if category else objects, manifest)
    return [_visa_row(row, base, manifest, line) for line, row in rows]


def _visa_row(row: dict[str, str], base: Path, manifest: Path, line: int) -> Sample:
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in _SPLITS:
        raise ValueError(f"{manifest}:{line}: split {split!r} is not one of {_SPLITS}")
    image = (row.get("image") or "").strip()
    if not image:
        raise ValueError(f"{manifest}:{line}: empty 'image'")
    mask = (row.get("mask") or "").strip()
    return Sample(
        _inside(base, image, manifest, line),
        (row.get("label") or "").strip().lower() or None,
        split,
        _inside(base, mask, manifest, line) if mask else None,
    )


def _visa_folders(root: Path, report: WalkReport) -> list[Sample]:
    masks = _mask_index(root / "Data" / "Masks" / "Anomaly", report)
    samples, used = [], set()
    for folder in _subdirs(root / "Data" / "Images", report):
        for path in list_images(folder, (), report):
            stem = path.relative_to(folder).with_suffix("").as_posix()
            mask = masks.get(stem) if folder.name.lower() != "normal" else None
            used.add(mask)
            samples.append(Sample(str(path.resolve()), folder.name.lower(), None, mask))
    _warn_unmatched_masks([m for m in masks.values() if m not in used], root / "Data" / "Masks")
    log.info("VisA category %s without split_csv/1cls.csv: no train/test split given", root)
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
        return [_csv_row(row, base, manifest, i + 2) for i, row in enumerate(reader)]
