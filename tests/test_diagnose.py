"""lit-ssl diagnose on small synthetic factory datasets (fast: tiny images, few of them)."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import tifffile

from lit_ssl.augment import save_policy
from lit_ssl.cli.diagnose import main
from lit_ssl.data import write_synthetic_dataset
from lit_ssl.diagnosis import DiagnosisReport, diagnose

SMALL = dict(image_size=32, n_train=60, n_test_good=10, n_per_defect=4)
FAST = dict(size=16, num_images=90, progress=False)
DEFAULT = dict(size=32, num_images=90, progress=False)


def _synthetic(root: Path, nuisance: float, channels: int = 1) -> Path:
    return write_synthetic_dataset(root, nuisance=nuisance, channels=channels, **SMALL)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    base = tmp_path_factory.mktemp("diagnose")
    return {nu: _synthetic(base / f"nu{nu}", nu) for nu in (0.1, 0.5, 1.0)}


@pytest.fixture(scope="module")
def reports(data: dict[float, Path]) -> dict[float, DiagnosisReport]:
    return {nu: diagnose(root, policy="surface", **DEFAULT) for nu, root in data.items()}


def test_high_nuisance_surface_recommends_joint_embedding(reports):
    for nu in (0.5, 1.0):
        report = reports[nu]
        assert report.recommendation == "joint_embedding", report.summary()
        assert _gap(report) > 0.05


def _gap(report: DiagnosisReport) -> float:
    nk = report.nuisance_kept
    return float(max(np.subtract(nk["reconstruction"], nk["joint_embedding"])))


def test_reconstruction_spends_more_on_nuisance_as_it_grows(reports):
    # Low nuisance: both closed forms keep about the same; high: reconstruction keeps far more.
    assert _gap(reports[0.5]) > 2 * _gap(reports[0.1])
    assert _gap(reports[1.0]) > _gap(reports[0.1])


def test_nuisance_share_rises_with_nuisance_knob(reports):
    shares = [reports[nu].nuisance_share for nu in (0.1, 0.5, 1.0)]
    assert shares[0] + 0.03 < shares[1] < shares[2], shares
    assert not any("re-samples only" in w for nu in (0.5, 1.0) for w in reports[nu].warnings)


def test_policy_narrower_than_the_nuisance_is_flagged(data, reports, tmp_path):
    # Exposure swings of the generator at nuisance 1 are far wider than +-5% brightness:
    # the excess looks like content to joint-embedding, and the report says so.
    narrow = A.Compose(
        [
            A.Resize(32, 32),
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.05, p=1.0),
        ]
    )
    save_policy(narrow, tmp_path / "narrow.yaml")
    report = diagnose(data[1.0], policy=str(tmp_path / "narrow.yaml"), **DEFAULT)
    assert report.alignment[0] < 0.5
    assert any("re-samples only" in w for w in report.warnings), report.warnings
    assert report.nuisance_share < reports[1.0].nuisance_share


def test_minimal_policy_warns_resamples_nothing(data):
    report = diagnose(data[0.5], policy="minimal", **FAST)
    assert report.nuisance_share == pytest.approx(0.0, abs=1e-9)
    assert any("re-samples nothing" in w for w in report.warnings)
    assert report.recommendation == "reconstruction"


def test_report_numbers_are_consistent(reports):
    report = reports[0.5]
    assert report.num_images == 90 and report.dims == 32 * 32
    assert len(report.data_variance) == report.rank == len(report.alignment)
    assert np.all(np.diff(report.data_variance) <= 1e-12)
    assert 0.0 <= report.nuisance_share <= 1.0
    for family in ("reconstruction", "joint_embedding"):
        for kept in (report.nuisance_kept[family], report.content_kept[family]):
            assert len(kept) == len(report.k_values)
            assert all(-1e-9 <= v <= 1 + 1e-9 for v in kept)
    assert report.auroc is not None and report.auroc["n_defect"] == 20
    assert report.recommendation in ("joint_embedding", "reconstruction", "hybrid")


def test_save_writes_json_markdown_figure(reports, tmp_path):
    folder = reports[0.5].save(tmp_path / "out")
    restored = DiagnosisReport(**json.loads((folder / "diagnose.json").read_text()))
    assert restored.recommendation == reports[0.5].recommendation
    assert "Recommendation" in (folder / "diagnose.md").read_text()
    assert (folder / "diagnose.png").stat().st_size > 10_000


def _copy_16bit(src: Path, dst: Path, suffix: str, shift: int) -> Path:
    """Copy every PNG of ``src`` as a 16-bit file (``8 + shift`` significant bits)."""
    for path in src.rglob("*.png"):
        if "ground_truth" in path.parts:
            continue
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.uint16) << shift
        out = (dst / path.relative_to(src)).with_suffix(suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            cv2.imwrite(str(out), pixels)
        else:
            tifffile.imwrite(out, pixels[..., ::-1] if pixels.ndim == 3 else pixels)
    return dst


@pytest.mark.parametrize("channels", [1, 3])
def test_mono_rgb_8_and_16_bit_agree(tmp_path, channels):
    src = _synthetic(tmp_path / "src", 0.5, channels)
    base = diagnose(src, policy="surface", in_chans=channels, **FAST)
    assert base.dims == 16 * 16 * channels
    for suffix, shift in ((".png", 8), (".tif", 4)):  # 16-bit and 12-bit-in-16 data
        copy = _copy_16bit(src, tmp_path / f"c{suffix}{shift}", suffix, shift)
        report = diagnose(copy, policy="surface", in_chans=channels, **FAST)
        assert report.nuisance_share == pytest.approx(base.nuisance_share, abs=0.02)
        assert report.recommendation == base.recommendation


def test_rgb_images_to_grey_vectors(tmp_path):
    report = diagnose(_synthetic(tmp_path / "rgb", 0.5, 3), policy="surface", **FAST)
    assert report.in_chans == 1 and report.dims == 256


def test_empty_missing_and_unreadable_folders(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        diagnose(tmp_path, progress=False)
    with pytest.raises(FileNotFoundError):
        diagnose(tmp_path / "missing", progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="none of the 3 sampled image files is readable"):
        diagnose(bad, progress=False)


def test_unreadable_files_are_skipped_with_a_warning(data, tmp_path):
    root = tmp_path / "mixed"
    for path in sorted((data[0.5] / "train" / "good").glob("*.png"))[:40]:
        (root / path.name).parent.mkdir(parents=True, exist_ok=True)
        (root / path.name).write_bytes(path.read_bytes())
    (root / "broken.png").write_bytes(b"")
    report = diagnose(root, size=16, num_images=100, progress=False)
    assert report.num_images == 40 and report.layout == "unlabeled" and report.auroc is None
    assert any("unreadable" in w for w in report.warnings)


def test_policy_perturbing_the_defect_direction_is_flagged(tmp_path):
    """Defects that are a global darkening (a linear cue) vs a policy with brightness jitter."""
    rng = np.random.default_rng(0)
    for cls, gain in (("good", 1.0), ("dark", 0.8)):
        (tmp_path / cls).mkdir()
        for i in range(30):
            image = 0.5 + 0.01 * rng.standard_normal((32, 32))
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.uint8(255 * gain * image))
    report = diagnose(tmp_path, policy="surface", **FAST)
    assert report.auroc is not None and report.auroc["pixels"] > 0.9
    assert any("perturbs what the labels say is content" in w for w in report.warnings)
    assert report.recommendation != "joint_embedding"
    quiet = diagnose(tmp_path, policy="minimal", **FAST)
    assert not any("perturbs" in w for w in quiet.warnings)


def test_cli_writes_report(data, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--data.root", str(data[0.5]), "--num-images", "60", "--size", "16", "--quiet"]
    assert main([*args, "--k", "1", "2", "4", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Recommendation:" in printed and "Nuisance share" in printed
    saved = json.loads((out / "diagnose.json").read_text())
    assert saved["k_values"] == [1, 2, 4] and saved["num_images"] == 60


def test_cli_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("lit-ssl diagnose", "--data.root", "--policy", "joint_embedding", "--output"):
        assert needle in text
