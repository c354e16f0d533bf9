"""``lit-ssl diagnose --weights``: do pasted thin defects move a backbone's patch features?

Tiny models (``resnet10t``, ``test_resnet``), 32-64 px, fixed seeds. The check must be able to
tell: a backbone whose first operation erases 1-2 px structures (a grey-level opening and
closing) must come out below the random backbones for scratches, an ordinary random backbone
inside their range.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_ssl.backbone import Backbone
from lit_ssl.cli.main import main
from lit_ssl.data.synthetic import generate_image
from lit_ssl.diagnosis.sampling import load_good_images
from lit_ssl.diagnosis.sensitivity import (
    DEFECT_TYPES,
    SensitivityReport,
    defect_sensitivity,
    paste_defects,
)


def _good(n: int, size: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = [generate_image(rng, "metal", None, size, channels).image for _ in range(n)]
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())


class ThinLineBlindBackbone(Backbone):
    """A backbone that provably cannot see structures under 3 px wide.

    A 3x3 grey-level opening (removes bright thin lines) then closing (removes dark ones)
    runs before the usual normalisation, so every later layer gets an image without them;
    blobs wider than the structuring element (spots) pass.
    """

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        def dilate(t: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(t, 3, stride=1, padding=1)

        def erode(t: torch.Tensor) -> torch.Tensor:
            return -dilate(-t)

        return super().normalize(erode(dilate(dilate(erode(x)))))


def _seeded(cls: type[Backbone], seed: int) -> Backbone:
    torch.manual_seed(seed)
    return cls("resnet10t", in_chans=1)


@pytest.fixture(scope="module")
def metal() -> torch.Tensor:
    return _good(16, 64)


@pytest.fixture(scope="module")
def blind_and_random(metal) -> tuple[SensitivityReport, SensitivityReport]:
    kwargs = dict(defects=("scratch", "spot"), references=3, progress=False)
    blind = defect_sensitivity(metal, _seeded(ThinLineBlindBackbone, 100), **kwargs)
    random = defect_sensitivity(metal, _seeded(Backbone, 100), **kwargs)
    return blind, random


def _row(report: SensitivityReport, defect: str) -> dict:
    return next(r for r in report.rows if r["defect"] == defect)


def test_backbone_blind_to_thin_lines_gets_a_low_scratch_ratio(blind_and_random):
    blind, _ = blind_and_random
    scratch = _row(blind, "scratch")
    assert scratch["movement"] < scratch["reference_min"], blind.summary()
    assert scratch["ratio"] < 0.7, blind.summary()
    assert "learned to ignore scratches; see docs/policies.md" in scratch["verdict"]
    # spots are wider than the opening: they survive it
    assert blind.ratio("spot") > 2 * blind.ratio("scratch"), blind.summary()
    assert "ignore" not in _row(blind, "spot")["verdict"]


def test_ordinary_random_backbone_is_within_the_random_range(blind_and_random):
    _, random = blind_and_random
    for defect in ("scratch", "spot"):
        row = _row(random, defect)
        assert 0.75 < row["ratio"] < 1.33, random.summary()
        assert "about as sensitive" in row["verdict"], row["verdict"]
    # the same references on the same pasted images: both reports agree on them
    blind, _ = blind_and_random
    assert _row(blind, "scratch")["reference"] == pytest.approx(
        _row(random, "scratch")["reference"]
    )


def test_one_row_per_requested_type_in_order():
    images = _good(8, 32, channels=3, seed=1)
    torch.manual_seed(0)
    report = defect_sensitivity(
        images,
        Backbone("test_resnet"),
        defects=("spot", *DEFECT_TYPES),
        references=2,
        layers=[0, 1],
        progress=False,
    )
    assert [r["defect"] for r in report.rows] == [
        "spot",
        "scratch",
        "crack",
        "hole",
        "contamination",
    ]
    for row in report.rows:
        assert row["reference_min"] <= row["reference"] <= row["reference_max"]
        assert row["ratio"] == pytest.approx(row["movement"] / row["reference"])
        assert row["verdict"].startswith(f"{row['defect']}: features move {row['ratio']:.2f}x")
    assert len(report.spread["references"]) == 2
    again = SensitivityReport(**json.loads(json.dumps(report.to_dict())))
    assert again.summary() == report.summary()
    assert report.summary().count("\n| ") == 1 + len(DEFECT_TYPES)  # separator + rows


def test_paste_is_contrast_times_local_std_on_the_mask_only():
    torch.manual_seed(0)
    images = (0.5 + 0.05 * torch.randn(4, 1, 64, 64)).clamp(0, 1)
    for defect, sign in (("scratch", 1), ("crack", -1)):
        pasted, masks = paste_defects(images, defect, contrast=3.0, seed=2)
        delta = pasted - images
        assert torch.equal(delta[masks == 0], torch.zeros_like(delta[masks == 0]))
        line = masks > 0.5
        per_unit = delta[line] / masks[line]  # the change at full mask strength
        assert per_unit.numel() > 10
        # local std of N(0.5, 0.05) pixels in a window of 9 px: about 0.05, times 3
        assert torch.all(sign * per_unit > 0.1) and torch.all(sign * per_unit < 0.2), per_unit
        width = (masks[0, 0] > 0.5).sum(0).float()
        assert width[width > 0].median() <= 2  # a thin line at 64 px


def test_errors_are_early_and_short(metal):
    backbone = Backbone("resnet10t", in_chans=1)
    with pytest.raises(ValueError, match="choose one or more of: scratch crack spot"):
        defect_sensitivity(metal, backbone, defects=["bogus"], progress=False)
    with pytest.raises(ValueError, match="at least 4 square images"):
        defect_sensitivity(metal[:, :, :, :32], backbone, progress=False)
    with pytest.raises(ValueError, match="1 channels, the backbone 3"):
        defect_sensitivity(metal, Backbone("resnet10t"), progress=False)


# ----------------------------------------------------------------------------- CLI


def _write_folder(root: Path, n: int = 20) -> Path:
    """Good PNGs of mixed sizes in sub-folders (no labels: the ``unlabeled`` layout)."""
    rng = np.random.default_rng(3)
    for i in range(n):
        size = (48, 48) if i % 2 else (40, 56)
        image = generate_image(rng, "metal", None, 64, 3).image
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
        folder = root / "line_a" if i % 3 else root / "line_b" / "day2"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), (image * 255).round().astype(np.uint8))
    return root


CHECK = ["--num-images", "16", "--size", "16", "--check-images", "12", "--check-size", "32"]
CHECK += ["--references", "2", "--layers", "0", "1", "--quiet"]


def test_cli_prints_the_table_and_writes_json_and_md(tmp_path, capsys):
    root = _write_folder(tmp_path / "parts")
    weights = Backbone("test_resnet").export(tmp_path / "export" / "backbone.safetensors")
    out = tmp_path / "out"
    args = ["diagnose", "--data.root", str(root), "--weights", str(weights)]
    status = main([*args, "--defects", "scratch", "spot", *CHECK, "--output", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "| defect | movement | random backbones: median [range] | ratio |" in printed
    assert "12 good images at 32 px" in printed
    for defect in ("scratch", "spot"):
        assert f"\n| {defect} | " in printed
        assert f"\n{defect}: features move " in printed
    assert "| crack |" not in printed
    saved = json.loads((out / "diagnose.json").read_text())["sensitivity"]
    assert [r["defect"] for r in saved["rows"]] == ["scratch", "spot"]
    assert saved["num_images"] == 12 and saved["layers"] == [0, 1]
    md = (out / "diagnose.md").read_text()
    assert "## Do thin defects survive the backbone?" in md
    assert "| scratch | " in md and "- spot: features move " in md


def test_load_good_images_leaves_defects_out(tiny_factory_data):
    images, notes = load_good_images(tiny_factory_data, num_images=500, size=32, progress=False)
    good = len(list(tiny_factory_data.glob("*/good/*.png")))
    assert tuple(images.shape) == (good, 1, 32, 32) and notes == []
    assert float(images.min()) >= 0 and float(images.max()) <= 1


def test_cli_bogus_defect_type_is_a_two_line_error(tmp_path, capsys):
    status = main(["diagnose", "--data.root", str(tmp_path), "--defects", "scratch", "bogus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err == [
        "lit-ssl: error: unknown defect type(s) ['bogus']",
        "choose one or more of: scratch crack spot hole contamination",
    ]


def test_cli_folder_without_images_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    weights = Backbone("test_resnet").export(tmp_path / "backbone.safetensors")
    args = ["diagnose", "--data.root", str(tmp_path / "empty"), "--weights", str(weights)]
    status = main([*args, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) <= 2 and err[0].startswith("lit-ssl: error: no images found under ")


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--references", "2"], ["--references: only for the", "add --weights"]),
        (["--weights", "W", "--references", "0"], ["--references >= 1"]),
        (["--weights", "W", "--layers", "7"], ["layers=[7]", "test_resnet has stages 0..4"]),
    ],
    ids=["check flag without weights", "no references", "layer out of range"],
)
def test_cli_check_settings_are_refused_before_any_work(tmp_path, capsys, extra, needles):
    weights = Backbone("test_resnet").export(tmp_path / "backbone.safetensors")
    extra = [str(weights) if a == "W" else a for a in extra]
    status = main(["diagnose", "--data.root", str(tmp_path / "missing"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) <= 2, err
    for needle in needles:
        assert needle in "\n".join(err)
