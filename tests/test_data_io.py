"""Readers: formats, bit depths, channel conversion, bad files, listing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from lit_ssl.data.io import (
    BadImageError,
    convert_channels,
    list_images,
    read_image,
    to_float,
)

RNG = np.random.default_rng(0)


def _write(path: Path, image: np.ndarray) -> Path:
    """Write RGB(A)/mono through OpenCV (which wants BGR order)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    assert cv2.imwrite(str(path), image)
    return path


def _rgb(dtype: type = np.uint8) -> np.ndarray:
    top = 255 if dtype == np.uint8 else 65535
    return RNG.integers(0, top, (24, 32, 3), endpoint=True).astype(dtype)


@pytest.mark.parametrize("ext", [".png", ".PNG", ".bmp", ".Bmp", ".tif", ".TIFF"])
def test_lossless_rgb_round_trip_any_extension_case(tmp_path: Path, ext: str) -> None:
    image = _rgb()
    path = tmp_path / f"a{ext}"
    if ext.lower().startswith(".tif"):
        tifffile.imwrite(path, image)
    else:
        _write(path, image)
    out = read_image(path, in_chans=3)
    assert out.dtype == np.float32 and out.shape == (24, 32, 3)
    np.testing.assert_allclose(out, image / 255, atol=1e-6)


def test_jpeg_reads_close_to_source(tmp_path: Path) -> None:
    image = np.full((24, 32, 3), (200, 100, 30), np.uint8)
    out = read_image(_write(tmp_path / "a.JPG", image), in_chans=3)
    np.testing.assert_allclose(out.mean((0, 1)), np.array([200, 100, 30]) / 255, atol=0.03)


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    image = np.dstack([_rgb(), np.zeros((24, 32), np.uint8)])
    out = read_image(_write(tmp_path / "a.png", image), in_chans=3)
    np.testing.assert_allclose(out, image[:, :, :3] / 255, atol=1e-6)


def test_16bit_mono_tiff_to_rgb_and_mono(tmp_path: Path) -> None:
    image = RNG.integers(0, 65535, (20, 30), endpoint=True).astype(np.uint16)
    image[0, 0] = 65535
    path = tmp_path / "mono16.tif"
    tifffile.imwrite(path, image)
    mono = read_image(path, in_chans=1)
    rgb = read_image(path, in_chans=3)
    assert mono.shape == (20, 30, 1) and rgb.shape == (20, 30, 3)
    np.testing.assert_allclose(mono[:, :, 0], image / 65535, atol=1e-6)
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_16bit_rgb_png(tmp_path: Path) -> None:
    image = _rgb(np.uint16)
    out = read_image(_write(tmp_path / "a.png", image), in_chans=3)
    np.testing.assert_allclose(out, image / 65535, atol=1e-6)


def test_12bit_in_16bit_container_is_not_black(tmp_path: Path) -> None:
    """A 12-bit camera frame (max 4095) stored as 16 bits is scaled by 4095, not 65535."""
    image = RNG.integers(0, 4095, (20, 30), endpoint=True).astype(np.uint16)
    image[0, 0] = 4095
    path = _write(tmp_path / "cam12.png", image)
    out = read_image(path, in_chans=1)
    assert out.max() == pytest.approx(1.0)
    np.testing.assert_allclose(out[:, :, 0], image / 4095, atol=1e-6)
    # an explicit bit depth overrides the inference
    assert read_image(path, in_chans=1, bit_depth=16).max() == pytest.approx(4095 / 65535)


def test_luminance_and_channel_errors() -> None:
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 1] = 1.0
    assert convert_channels(rgb, 1)[0, 0, 0] == pytest.approx(0.587)
    with pytest.raises(ValueError, match="in_chans"):
        convert_channels(np.zeros((2, 2, 5), np.float32), 3)


def test_float_in_unit_range_kept_negatives_clipped_0_255_scaled_loudly() -> None:
    out = to_float(np.array([[-0.5, 0.5, 1.0]], np.float32))
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0]])
    with pytest.warns(UserWarning, match="divided by 255"):
        out = to_float(np.array([[0.0, 51.0, 255.0]], np.float32))
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-6)  # scaled, not clipped to 1
    np.testing.assert_allclose(to_float(np.array([[127.5]]), float_scale=255.0), [[0.5]])


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    encoded = {ext: cv2.imencode(ext, _rgb())[1].tobytes() for ext in (".png", ".jpg", ".bmp")}
    files = {
        "zero": folder / "zero.png",
        "text": folder / "text.png",
        "png": folder / "cut.png",
        "jpg": folder / "cut.jpg",
        "bmp": folder / "cut.bmp",
        "tif": folder / "cut.tif",
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    for ext in ("png", "jpg", "bmp"):
        data = encoded[f".{ext}"]
        files[ext].write_bytes(data[: len(data) // 2])
    tifffile.imwrite(files["tif"], _rgb())
    data = files["tif"].read_bytes()
    files["tif"].write_bytes(data[: len(data) // 2])
    return files


def test_bad_files_raise_bad_image_error(tmp_path: Path) -> None:
    for path in _bad_files(tmp_path).values():
        with pytest.raises(BadImageError, match=path.name):
            read_image(path)


def test_list_images_skips_hidden_and_non_images(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    for rel in ("x.png", "a/y.JPG", "a/b/z.tiff", ".ipynb_checkpoints/c.png", "a/.hidden.png"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a/b/z.tiff", "a/y.JPG", "x.png"]
