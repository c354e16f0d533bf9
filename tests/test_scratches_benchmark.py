"""benchmarks/scratches.py without training: variants change one thing, tables have the form."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from lit_ssl.augment.policies import load_policy

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def scratches(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("scratches")


def test_policy_variants_drop_exactly_their_transforms(scratches, tmp_path):
    cfg = scratches.config("no_flips", tmp_path)
    names = [type(t).__name__ for t in load_policy(cfg.policy).transforms]
    assert not {"HorizontalFlip", "VerticalFlip", "RandomRotate90"} & set(names)
    assert {"Affine", "PoissonGaussianNoise", "IlluminationGradient"} <= set(names)
    assert scratches.config("baseline", tmp_path).policy == "surface"
    assert scratches.pretrain_key("layers_01") == "baseline"  # only the detector differs
    assert scratches.pretrain_key("no_flips") == "no_flips"


def test_section_renders_per_type_tables_from_stored_runs(scratches):
    def run(scratch: float, **extra: float) -> dict[str, float]:
        out = {f"auroc/{t}": 1.0 for t in scratches.TYPES} | {"auroc/scratch": scratch}
        return out | {f"split/{k}": v for k, v in out.items()} | extra

    runs = {
        "baseline|0|detector": run(0.55),
        "baseline|1|detector": run(0.60),
        "random|0|detector": run(0.70),
        "random|1|detector": run(0.62),
        "no_flips|0|detector": run(0.90),
        "no_flips|1|detector": run(0.92),
        "no_flips|0|classifier": {f"recall/{t}": 1.0 for t in scratches.TYPES}
        | {"auroc": 0.99, "best_epoch": 3.0},
    }
    stored = {"runs": runs, "commands": ["python benchmarks/scratches.py"]}
    text = scratches.section(stored | {"survival": scratches.survival(n=2)})
    assert "| `baseline`: quickstart baseline" in text and "| 0,1 | 0.57 [0.55, 0.60] |" in text
    assert (
        "| `no_flips` (SSL, fine-tuned) | 0 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 0.99 | 3 |" in text
    )
    assert "`no_flips`: scratch 0.91 (+0.34 vs baseline); worst other type +0.00" in text
    assert "random initialisations 0.66 (median of 2)" in text
    assert "| scratch | 0." in text  # what the Affine keeps, per type
