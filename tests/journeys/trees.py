"""Dataset trees as users bring them, written with PIL / tifffile / OpenCV into a folder.

Each ``write_*`` function takes a folder that does not exist yet, writes the tree, and returns a
small record of what it wrote (counts, paths) so the journeys can check outputs against it.
Pixels come from :func:`lit_ssl.data.synthetic.generate_image` (textures with a visible defect),
but the files are written here, in the user's formats, never with the package's own writer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from lit_ssl.data.synthetic import generate_image

__all__ = [
    "Tree",
    "write_class_folders",
    "write_csv_manifest",
    "write_highres",
    "write_mvtec",
    "write_new_images",
    "write_unlabeled",
    "write_visa",
]

SIZE = 48  # side of the square images (odd sizes are written on purpose where named)


@dataclass
class Tree:
    """What a writer put on disk.

    Attributes:
        root: The folder (or file, for a CSV manifest) a user passes as ``--data.root``.
        readable: Every readable image, absolute paths.
        broken: Every file that looks like an image but cannot be decoded.
        labels: Readable image path -> class name (empty for unlabeled trees).
    """

    root: Path
    readable: list[Path] = field(default_factory=list)
    broken: list[Path] = field(default_factory=list)
    labels: dict[Path, str] = field(default_factory=dict)


def _pixels(rng: np.random.Generator, defect: str | None = None, size: int = SIZE) -> np.ndarray:
    """One float RGB image in [0, 1] (``size x size x 3``); defects strong enough to learn."""
    material = str(rng.choice(["metal", "stone"]))
    image = generate_image(rng, material, defect, image_size=size, nuisance=0.2).image
    return np.clip(image, 0.0, 1.0)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _u8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _gray(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _save_png(path: Path, image: np.ndarray, gray: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_u8(_gray(image) if gray else image)).save(path, format="PNG")
    return path


def _save_jpeg(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_u8(image)).save(path, format="JPEG", quality=95)
    return path


def _save_tiff12(path: Path, image: np.ndarray) -> Path:
    """A 12-bit camera's frame in a 16-bit mono TIFF container (values 0..4095)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.round(_gray(image) * 4095).astype(np.uint16))
    return path


def _save_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").save(path)
    return path


def _truncated_png(path: Path, rng: np.random.Generator) -> Path:
    """A PNG cut in half, as a failed copy leaves it."""
    _save_png(path, _pixels(rng))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_unlabeled(root: Path, seed: int = 0) -> Tree:
    """A flat unlabeled line folder with sub-folders and mixed formats (28 readable + 1 broken).

    8-bit grey and RGB PNGs, 16-bit TIFFs holding 12-bit values, JPEGs, upper-case extensions
    (.PNG, .TIF, .JPG), odd sizes (72x90, 80x64) and one truncated PNG.
    """
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    add = tree.readable.append
    for i in range(5):
        add(_save_png(root / f"frame_{i:03d}.png", _pixels(rng), gray=True))
    for i in range(5):
        add(_save_png(root / "cam_rgb" / f"{i:03d}.png", _pixels(rng)))
    for i in range(2):
        add(_save_png(root / "cam_rgb" / f"UP_{i:03d}.PNG", _pixels(rng)))
    for i in range(5):
        add(_save_tiff12(root / "cam_mono16" / "shift1" / f"{i:03d}.tif", _pixels(rng)))
    for i in range(2):
        add(_save_tiff12(root / "cam_mono16" / "shift2" / f"IMG_{i:03d}.TIF", _pixels(rng)))
    for i in range(4):
        add(_save_jpeg(root / "phone" / f"{i:03d}.jpg", _pixels(rng)))
    for i in range(2):
        add(_save_jpeg(root / "phone" / f"DSC_{i:03d}.JPG", _pixels(rng)))
    odd = [(72, 90), (80, 64), (72, 90)]  # width x height
    for i, (width, height) in enumerate(odd):
        image = _resize(_pixels(rng, size=96), width, height)
        add(_save_png(root / "odd_sizes" / f"{width}x{height}_{i}.png", image))
    tree.broken.append(_truncated_png(root / "cam_rgb" / "zz_broken.png", rng))
    return tree


CLASSES = {"good": None, "scratch": "scratch", "dent": "hole"}  # folder -> synthetic defect
COUNTS = {"good": 16, "scratch": 8, "dent": 8}


def write_class_folders(root: Path, seed: int = 1) -> Tree:
    """Class folders ``good/``, ``scratch/``, ``dent/`` (16 / 8 / 8 PNGs) with visible defects."""
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    for name, defect in CLASSES.items():
        for i in range(COUNTS[name]):
            path = _save_png(root / name / f"{name}_{i:03d}.png", _pixels(rng, defect))
            tree.readable.append(path)
            tree.labels[path] = name
    return tree


MVTEC_DEFECTS = {"scratch": "scratch", "hole": "hole"}


def write_mvtec(root: Path, seed: int = 2) -> Tree:
    """An MVTec AD category: 16 train/good, 6 test/good, 6 per defect with their masks."""
    rng = np.random.default_rng(seed)
    tree = Tree(root)

    def good(path: Path) -> None:
        tree.readable.append(_save_png(path, _pixels(rng)))
        tree.labels[path] = "good"

    for i in range(16):
        good(root / "train" / "good" / f"{i:03d}.png")
    for i in range(6):
        good(root / "test" / "good" / f"{i:03d}.png")
    for name, defect in MVTEC_DEFECTS.items():
        for i in range(6):
            sample = generate_image(rng, "metal", defect, image_size=SIZE, nuisance=0.2)
            path = _save_png(root / "test" / name / f"{i:03d}.png", np.clip(sample.image, 0, 1))
            _save_mask(root / "ground_truth" / name / f"{i:03d}_mask.png", sample.mask)
            tree.readable.append(path)
            tree.labels[path] = name
    return tree


def write_visa(root: Path, seed: int = 3, category: str = "candle") -> Tree:
    """A VisA root holding one category and its ``split_csv/1cls.csv``.

    ``candle/Data/Images/{Normal,Anomaly}/*.JPG``, ``candle/Data/Masks/Anomaly/*.png`` (same stem
    as the image), CSV columns ``object,split,label,image,mask`` with paths relative to ``root``:
    train = 14 normal; test = 6 normal + 8 anomaly.
    """
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    data = root / category / "Data"
    rows = []
    for i in range(20):
        path = _save_jpeg(data / "Images" / "Normal" / f"{i:04d}.JPG", _pixels(rng))
        tree.readable.append(path)
        tree.labels[path] = "normal"
        rows.append((category, "train" if i < 14 else "test", "normal", path, None))
    for i in range(8):
        sample = generate_image(rng, "stone", "hole" if i % 2 else "spot", SIZE, nuisance=0.2)
        path = _save_jpeg(data / "Images" / "Anomaly" / f"{i:03d}.JPG", np.clip(sample.image, 0, 1))
        mask = _save_mask(data / "Masks" / "Anomaly" / f"{i:03d}.png", sample.mask)
        tree.readable.append(path)
        tree.labels[path] = "anomaly"
        rows.append((category, "test", "anomaly", path, mask))
    manifest = root / "split_csv" / "1cls.csv"
    manifest.parent.mkdir(parents=True)
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        for obj, split, label, path, mask in rows:
            relative_mask = mask.relative_to(root).as_posix() if mask else ""
            writer.writerow([obj, split, label, path.relative_to(root).as_posix(), relative_mask])
    return tree


def write_csv_manifest(folder: Path, seed: int = 4) -> Tree:
    """``folder/labels.csv`` (``path,label,split``, paths relative to it) over ``images/``.

    32 PNGs (good 16, scratch 8, dent 8), each class split train / val / test as 50/25/25 %.
    The returned root is the CSV file itself, as a user passes it.
    """
    rng = np.random.default_rng(seed)
    manifest = folder / "labels.csv"
    tree = Tree(manifest)
    rows = []
    for name, defect in CLASSES.items():
        count = COUNTS[name]
        for i in range(count):
            path = _save_png(folder / "images" / f"{name}_{i:03d}.png", _pixels(rng, defect))
            split = "train" if i < count // 2 else ("val" if i < 3 * count // 4 else "test")
            rows.append((path.relative_to(folder).as_posix(), name, split))
            tree.readable.append(path)
            tree.labels[path] = name
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return tree


def write_new_images(root: Path, seed: int = 5) -> Tree:
    """New unlabeled images to predict on: 4 PNG, 2 JPEG, 1 TIFF, and one unreadable file."""
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    for i, defect in enumerate([None, "scratch", None, "hole"]):
        tree.readable.append(_save_png(root / f"part_{i:03d}.png", _pixels(rng, defect)))
    for i, defect in enumerate([None, "scratch"]):
        tree.readable.append(_save_jpeg(root / "cam2" / f"part_{i:03d}.JPG", _pixels(rng, defect)))
    tree.readable.append(_save_tiff12(root / "cam3" / "part_000.tif", _pixels(rng)))
    unreadable = root / "part_999.png"
    unreadable.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(64))  # a PNG signature, then garbage
    tree.broken.append(unreadable)
    return tree


HIGHRES = 1024  # side of the high-resolution frames
STRIP = (256, 2048)  # height x width of the line-scan strip


def _highres_frame(
    rng: np.random.Generator, height: int, width: int, defect: bool
) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """A 16-bit mono frame: a brushed texture under a slow illumination gradient and sensor
    noise; a defect is one bright or dark 10-20 px spot (returned as ``(y, x, size)``)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, size=2) / max(height, width)
    image = 0.45 + tilt[0] * yy + tilt[1] * xx
    image += 0.04 * np.repeat(rng.standard_normal((1, width)), height, axis=0)  # brushed lines
    image += 0.02 * rng.standard_normal((height, width))
    spot = None
    if defect:
        size = int(rng.integers(10, 21))
        y, x = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
        image[y : y + size, x : x + size] += rng.choice([-0.3, 0.3])
        spot = (y, x, size)
    return np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16), spot


def write_highres(root: Path, seed: int = 6, per_class: int = 6) -> Tree:
    """High-resolution class folders: ``good/`` and ``defect/`` with ``per_class`` 1024 x 1024
    16-bit mono TIFFs each (a 10-20 px spot on every defect frame) and one 256 x 2048 line-scan
    strip in ``good/``."""
    rng = np.random.default_rng(seed)
    tree = Tree(root)
    frames = [("good", False)] * per_class + [("defect", True)] * per_class
    for i, (name, defect) in enumerate(frames):
        path = root / name / f"frame_{i:03d}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, _highres_frame(rng, HIGHRES, HIGHRES, defect)[0])
        tree.readable.append(path)
        tree.labels[path] = name
    strip = root / "good" / "strip_000.tif"
    tifffile.imwrite(strip, _highres_frame(rng, *STRIP, defect=False)[0])
    tree.readable.append(strip)
    tree.labels[strip] = "good"
    return tree
