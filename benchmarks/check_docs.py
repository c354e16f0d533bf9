"""Check that every benchmark page in docs/ is what its stored numbers render to.

Re-renders each docs section (``--report-only``: from docs/*.json through
benchmarks/templates/*.md) into a scratch copy of the pages and prints a diff where they
differ; exit status 1 then. Measures nothing (seconds).

    python benchmarks/check_docs.py
"""

from __future__ import annotations

import difflib
import shutil
import sys
import tempfile
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import data_pipeline
import deep_nuisance
import linear_phase_diagram
import loader_throughput
import scratches
import speed

PAGES = ("benchmarks.md", "loader_throughput.md")


def main() -> int:
    """Re-render all pages in a scratch folder; 0 when they equal the committed ones."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        for page in (*PAGES, *(p.name for p in common.DOCS.glob("*.json"))):
            shutil.copy(common.DOCS / page, out / page)
        md = ["--report-only", "--md", str(out / "benchmarks.md")]
        for module in (linear_phase_diagram, speed, data_pipeline, scratches):
            module.main(md)
        deep_nuisance.main(
            [
                *md,
                "--json",
                str(out / "deep_nuisance.json"),
                "--img",
                str(out / "img/deep_nuisance.png"),
            ]
        )
        loader_throughput.main(["--report-only", "--out", str(out / "loader_throughput.md")])
        status = 0
        for page in PAGES:
            ours, fresh = (common.DOCS / page).read_text(), (out / page).read_text()
            if ours != fresh:
                status = 1
                diff = difflib.unified_diff(
                    ours.splitlines(),
                    fresh.splitlines(),
                    f"docs/{page}",
                    "re-rendered",
                    lineterm="",
                )
                print("\n".join(diff))
        print("docs match their stored numbers" if status == 0 else "docs differ (see above)")
        return status


if __name__ == "__main__":
    sys.exit(main())
