"""``lit-ssl diagnose`` and ``lit-ssl preview`` on the user's own files (getting_started.md)."""

from __future__ import annotations

import json

import cv2
from conftest import lit_ssl


def test_diagnose_the_unlabeled_folder(fresh_project, unlabeled):
    args = ["diagnose", "--data.root", unlabeled.root, "--policy", "surface"]
    result = lit_ssl(*args, "--output", "runs/diagnose", "--num-images", "24", cwd=fresh_project)
    report = json.loads((fresh_project / "runs" / "diagnose" / "diagnose.json").read_text())
    assert report, "empty diagnose.json"
    assert (fresh_project / "runs" / "diagnose" / "diagnose.md").is_file()
    text = result.output.lower()
    assert any(family in text for family in ("joint_embedding", "reconstruction", "hybrid"))


def test_preview_a_16bit_tiff(fresh_project, unlabeled):
    image = next(p for p in unlabeled.readable if p.suffix == ".TIF")
    args = ["preview", "--image", image, "--policy", "surface", "--views", "4"]
    lit_ssl(*args, "--image-size", "32", "--output", "preview.png", cwd=fresh_project)
    preview = cv2.imread(str(fresh_project / "preview.png"), cv2.IMREAD_UNCHANGED)
    assert preview is not None and preview.size > 0
    # a 12-bit frame in a 16-bit container, scaled by 4095: not a near-black picture
    assert preview.mean() > 0.15 * (255 if preview.dtype == "uint8" else 65535)
