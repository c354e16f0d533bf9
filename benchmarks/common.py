"""Shared by the benchmark scripts: paths, seeds, quiet CPU trainers, step clocks, markdown
tables, figures, machine notes, stored numbers and the docs sections rendered from templates.

Import it first (before ``# isort: split``): it puts the repository on ``sys.path``, selects
matplotlib's ``Agg`` backend and silences albumentations' update check before anything else
is imported.

Every benchmark keeps its prose in ``benchmarks/templates/<name>.md`` (``string.Template``
placeholders, filled from the measured numbers), stores those numbers as JSON next to the
docs page it writes, and can re-render the page from them with ``--report-only``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from string import Template

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import lightning as L  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lit_ssl.backbone import Backbone  # noqa: E402
from lit_ssl.data import FactoryDataModule, write_synthetic_dataset  # noqa: E402

__all__ = [
    "DOCS",
    "ROOT",
    "BatchClock",
    "CycleBatches",
    "Sample",
    "add_output_options",
    "clock",
    "command",
    "cpu_trainer",
    "durations",
    "factory_datamodule",
    "lightly_version",
    "load_json",
    "machine_note",
    "markdown_table",
    "parse_output_options",
    "publish",
    "quiet",
    "render",
    "save_figure",
    "save_json",
    "seed",
    "seeded_backbone",
    "synthetic_root",
    "write_section",
]

DOCS = ROOT / "docs"
TEMPLATES = Path(__file__).resolve().parent / "templates"
Sample = tuple[float, float]  # (wall seconds, CPU seconds)
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*Trying to infer the `batch_size`.*",
    ".*smaller than the logging.*",
    ".*LeafSpec.*",
)


# ----------------------------------------------------------------------------- docs
def command(script: str, argv: Sequence[str] | None) -> str:
    """The command line that ran ``benchmarks/<script>.py`` (``argv``: None = ``sys.argv``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", f"benchmarks/{script}.py", *([shlex.join(args)] if args else [])])


def render(template: str, numbers: dict | None = None, **formatted: object) -> str:
    """``benchmarks/templates/<template>.md`` with its ``$placeholders`` filled.

    Args:
        template: the template's name.
        numbers: stored values used as they are (``str()``); extra keys are ignored.
        formatted: values that override ``numbers`` (formatted numbers, tables, prose).

    Raises:
        KeyError: a placeholder has no value.
    """
    fields = {**(numbers or {}), **formatted}
    text = (TEMPLATES / f"{template}.md").read_text()
    return Template(text).substitute({k: str(v) for k, v in fields.items()})


def write_section(md: Path, body: str, section: str | None = None) -> None:
    """Replace (or append) the ``section`` heading's block of ``md``, leaving the others alone.

    Args:
        md: the markdown file (created with a title if missing).
        body: the new section text, starting with ``section``.
        section: the section's heading line, e.g. ``"## Training speed"``; default: the
            first line of ``body``.
    """
    section = section or body.split("\n", 1)[0]
    text = md.read_text() if md.exists() else "# Benchmarks\n\nOne section per benchmark.\n"
    start = text.find(section)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(section))
        text = text[:start] + body + ("" if end < 0 else text[end:])
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text.rstrip("\n") + "\n")


def add_output_options(parser: argparse.ArgumentParser, name: str) -> None:
    """The options where benchmark ``name`` writes: figure, docs page, numbers (JSON)."""
    parser.add_argument("--img", type=Path, default=DOCS / "img" / f"{name}.png")
    parser.add_argument("--md", type=Path, default=DOCS / "benchmarks.md")
    parser.add_argument("--json", type=Path, help=f"the numbers (default: {name}.json beside --md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render the docs section from the JSON"
    )


def parse_output_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None, name: str):
    """Parse ``argv``; ``args.json`` defaults to ``<name>.json`` beside ``args.md``."""
    args = parser.parse_args(argv)
    args.json = args.json or args.md.with_name(f"{name}.json")
    return args


def publish(
    args: argparse.Namespace,
    results: dict,
    section: Callable[[], str],
    plot: Callable[[], None] | None = None,
) -> None:
    """Unless ``--no-write``: figure and JSON (measured runs only), then the docs section.

    Args:
        args: parsed with :func:`add_output_options` (``md``, ``json``, ``no_write``,
            ``report_only``).
        results: the numbers the section is rendered from.
        section: renders the section (its first line is the heading it replaces).
        plot: draws the figure from a measured run.
    """
    if args.no_write:
        return
    if not args.report_only:
        if plot is not None:
            plot()
        save_json(args.json, results)
    body = section()
    write_section(args.md, body)
    stored = "" if args.report_only else f"{args.json} and "
    print(f"wrote {stored}the '{body.split(chr(10), 1)[0][3:]}' section of {args.md}")


def save_json(path: Path, data: dict) -> None:
    """Atomic JSON write (partial results survive interruptions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_json(path: Path) -> dict:
    """The numbers a benchmark stored (for ``--report-only``)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no stored numbers; run the benchmark without --report-only")
    return json.loads(path.read_text())


def markdown_table(header: Sequence[str], align: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table; ``align``: one ``---`` or ``---:`` per column; empty cells stay thin."""

    def line(cells: Sequence) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"

    return "\n".join([line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows)])


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a 120-dpi PNG (creating the folder) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lightly_version() -> str | None:
    """lightly's version, or ``None`` when the benchmark extra is not installed."""
    try:
        import lightly
    except ImportError:
        return None
    return str(lightly.__version__)


def machine_note() -> str:
    """CPU, cores, load and versions, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu}, {os.cpu_count()} cores, load average at the end {load}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, lightning {L.__version__}, "
        f"lightly {lightly_version() or 'not installed'}"
    )


# ----------------------------------------------------------------------------- training
def quiet() -> None:
    """Silence Lightning's info logs and the warnings every benchmark run would repeat."""
    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", pattern)


def seed(value: int) -> None:
    """Seed torch, numpy and random (Lightning's ``seed_everything``, silently)."""
    L.seed_everything(value, verbose=False)


def seeded_backbone(name: str, seed_value: int, in_chans: int = 3, image_size: int | None = None):
    """A freshly initialised timm backbone, the same for every implementation of a seed."""
    seed(seed_value)
    return Backbone(name, in_chans, image_size=image_size)


def cpu_trainer(callbacks: Sequence[L.Callback] = (), **options) -> L.Trainer:
    """A quiet single-process CPU Trainer: no logger, checkpoints, progress bar or summary."""
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": list(callbacks),
        **options,
    }
    return L.Trainer(**settings)


class CycleBatches:
    """A sized iterable of ``length`` batches cycling over pre-made ones (no loading)."""

    def __init__(self, batches: list, length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator:
        return (self.batches[i % len(self.batches)] for i in range(self.length))


# ----------------------------------------------------------------------------- timing
def clock() -> Sample:
    """Wall-clock and process CPU time now."""
    return time.perf_counter(), time.process_time()


def durations(stamps: Sequence[Sample], keep: int) -> list[Sample]:
    """Per-step (wall, cpu) durations from consecutive timestamps; the last ``keep``."""
    out = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:], strict=False)]
    return out[-keep:]


class BatchClock(L.Callback):
    """(wall, cpu) stamps of every training batch start and end, and of the epoch's end.

    ``gc.collect()`` runs when training starts: a new Trainer's garbage is not the training
    step's cost.
    """

    def __init__(self) -> None:
        self.starts: list[Sample] = []
        self.ends: list[Sample] = []
        self.epoch_ends: list[Sample] = []

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        gc.collect()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self.starts.append(clock())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self.ends.append(clock())

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        self.epoch_ends.append(clock())


# ----------------------------------------------------------------------------- data
def synthetic_root(root: str | Path | None, images: int, source_size: int, scratch: Path) -> Path:
    """``root`` if given, else a synthetic factory set of ``images`` good PNGs in ``scratch``."""
    if root:
        return Path(root)
    return write_synthetic_dataset(
        scratch / "data",
        image_size=source_size,
        n_train=images,
        n_test_good=0,
        n_per_defect=0,
        nuisance=0.5,
    )


def factory_datamodule(
    root: Path, size: int, batch_size: int, workers: int, cache: bool | None
) -> FactoryDataModule:
    """The SSL ``FactoryDataModule`` every loader benchmark measures: all images in training."""
    return FactoryDataModule(
        root=str(root),
        image_size=size,
        batch_size=batch_size,
        num_workers=workers,
        val_fraction=0.0,
        test_fraction=0.0,
        cache_images=cache,
        pin_memory=False,
    )
