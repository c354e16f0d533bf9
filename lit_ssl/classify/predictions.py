"""Per-image predictions of a DefectClassifier as CSV.

``trainer.predict(classifier, loader)`` returns, per batch, a list of per-image dicts:
``path``, ``defect_score`` (``1 - p(good)``), ``decision`` (``"defect"`` if the score is
above the stored threshold, else ``"good"``), ``predicted_class``, ``label`` (when known) and
one ``p_<class>`` probability per class name. ``write_predictions_csv`` writes one row per
image.

``PredictionsCSVWriter`` does it as a callback at the end of ``trainer.predict``.
``DefectClassifier`` adds one by itself (``configure_callbacks``), so
``lit-ssl predict --config recipes/finetune.yaml --data.root NEW --ckpt_path CKPT`` writes
``predictions.csv`` into the run folder (``runs/finetune/version_N/``). Files the datamodule
could not read (``datamodule.skipped_files``) get no row: they are printed and listed, one
per line, in ``skipped.txt`` next to the CSV. Under DDP every rank's rows are gathered and
rank 0 writes the one file.

Tiled classifiers (``DefectClassifier(tile_size=N)``) add a ``heatmap`` column: the writer
saves a heat-map PNG of the tile scores for every image whose decision is ``"defect"`` into
``heatmaps/`` next to the CSV (``lit_ssl.classify.heatmaps``; every DDP rank writes its own
images' files as their batches come) and names it there (``heatmaps/<path>.png``, empty for
images not flagged). The name keeps the image's folders below the common folder of the
datamodule's root and samples (``defect/007.tif`` -> ``heatmaps/defect/007.tif.png``; see
:func:`~lit_ssl.classify.heatmaps.heatmap_name`), so two images never share a picture; the
count printed at the end is that of the distinct pictures named in the CSV.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_ssl.classify.heatmaps import HEATMAP_DIR, heatmap_name, write_heatmap
from lit_ssl.data.batch import as_batch
from lit_ssl.data.layouts import GOOD_NAMES

__all__ = [
    "PREDICTIONS_FILE",
    "SKIPPED_FILE",
    "PredictionsCSVWriter",
    "decisions_by_type",
    "flatten_predictions",
    "write_predictions_csv",
]

FIRST_COLUMNS = ("path", "defect_score", "decision", "predicted_class", "label")
PREDICTIONS_FILE = "predictions.csv"
TILE_SCORES = "tile_scores"  # a tiled classifier's per-row tile score map (not a CSV column)
SKIPPED_FILE = "skipped.txt"
_MAX_PRINTED = 20


def flatten_predictions(predictions: Iterable[Any]) -> list[dict[str, Any]]:
    """Per-image dicts from ``trainer.predict`` output (nested lists of any depth)."""
    rows: list[dict[str, Any]] = []
    for item in predictions:
        if isinstance(item, dict):
            rows.append(item)
        elif isinstance(item, list | tuple):
            rows.extend(flatten_predictions(item))
        else:
            raise TypeError(
                f"Expected per-image prediction dicts (DefectClassifier.predict_step), got "
                f"{type(item).__name__}."
            )
    return rows


def write_predictions_csv(predictions: Iterable[Any], path: str | Path) -> Path:
    """Write one CSV row per image; columns: path, defect_score, decision, ...

    Args:
        predictions: ``trainer.predict`` output of a ``DefectClassifier`` (or its rows).
        path: output CSV file (parent folders are created).

    Returns:
        The written path.
    """
    rows = flatten_predictions(predictions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    extra: list[str] = []
    for row in rows:
        extra.extend(
            k for k in row if k not in FIRST_COLUMNS and k != TILE_SCORES and k not in extra
        )
    present = [c for c in FIRST_COLUMNS if any(c in row for row in rows)]
    return present + extra if rows else list(FIRST_COLUMNS)


def _gather(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows (a collective: all ranks call it), deduplicated by path, in order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    parts: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    merged = [row for part in parts for row in part or []]
    if all(row.get("path") is not None for row in merged):
        merged = sorted({row["path"]: row for row in merged}.values(), key=lambda r: r["path"])
    return merged


class PredictionsCSVWriter(BasePredictionWriter):
    """Callback writing ``trainer.predict`` rows to one CSV when prediction ends.

    Rows are collected batch by batch (so it works with ``return_predictions=False``) and,
    under DDP, gathered from every rank; rank 0 writes the file and prints where. Rows with
    tile scores (tiled classifiers) get their heat maps written as the batch comes, by the
    rank that scored them, into ``heatmaps/`` next to the CSV.

    Args:
        path: output CSV file; ``None``: ``predictions.csv`` in the run folder (the logger's
            version folder, else ``trainer.default_root_dir``), with ``skipped.txt`` next to
            it naming the files the datamodule could not read.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = None if path is None else Path(path)
        self._rows: list[dict[str, Any]] = []
        self._csv: Path | None = None
        self._base: str | None = None
        self._names: dict[str, str | None] = {}
        self._batch_indices: list[int] | None = None
        self._written = 0

    def _csv_path(self, trainer: L.Trainer) -> Path:
        # trainer.log_dir broadcasts from rank 0: every rank must call this
        return self.path or Path(trainer.log_dir or trainer.default_root_dir) / PREDICTIONS_FILE

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []
        self._names = {}
        self._written = 0
        self._csv = self._csv_path(trainer)  # every rank runs this hook: the collective is safe
        self._base = _heatmap_base(trainer)  # the same on every rank (no collective)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = flatten_predictions([prediction])
        indices = list(batch_indices) if batch_indices is not None else None
        self._batch_indices = indices if indices and len(indices) == len(rows) else None
        self._rows.extend(self.add_heatmaps(trainer, pl_module, rows, batch, batch_idx))

    def _heatmap_file(
        self, trainer: L.Trainer, path: str | None, position: int
    ) -> tuple[str, Path]:
        """``heatmaps/<name>.png`` (the CSV's ``heatmap`` value) and where to write it.

        Args:
            trainer: The trainer.
            path: The image's path (None: named by its dataset index).
            position: The row's position in its batch.
        """
        if self._batch_indices is not None:
            index = self._batch_indices[position]
        else:  # unique per rank, and across ranks
            index = self._written * trainer.world_size + trainer.global_rank
        name = heatmap_name(path, self._base, index)
        if self._names.get(name, path) != path:  # only for paths outside the base folder
            digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
            name = f"{name[: -len('.png')]}.{digest}.png"
        self._names[name] = path
        self._written += 1
        name = f"{HEATMAP_DIR}/{name}"
        return name, (self._csv or self._csv_path(trainer)).parent / name

    def add_heatmaps(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        rows: list[dict[str, Any]],
        batch: Any,
        batch_idx: int,
    ) -> list[dict[str, Any]]:
        """Write this rank's flagged rows' heat maps; the rows, with a ``heatmap`` column.

        Rows of an untiled classifier (no tile scores) are returned as they are. Subclasses
        (``AnomalyPredictionWriter``) override it for their own maps.
        """
        if not any(TILE_SCORES in row for row in rows):
            return rows
        images = as_batch(batch).views[0]
        tile, stride = pl_module.hparams.tile_size, pl_module.hparams.tile_stride
        out = []
        for i, row in enumerate(rows):
            row = dict(row)
            tile_map = row.pop(TILE_SCORES)
            row["heatmap"] = ""
            if row.get("decision") == "defect":
                row["heatmap"], file = self._heatmap_file(trainer, row.get("path"), i)
                write_heatmap(file, images[i], tile_map, tile, stride)
            out.append(row)
        return out

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # every rank runs this method to the end: the gather and log_dir are collectives
        rows = _gather(self._rows)
        path = self._csv or self._csv_path(trainer)
        pictures = {row["heatmap"] for row in rows if row.get("heatmap")}
        if pictures and trainer.is_global_zero:
            print(f"Wrote {len(pictures)} heat map(s) to {path.parent / HEATMAP_DIR}")
        skipped = list(getattr(trainer.datamodule, "skipped_files", None) or [])
        self._rows = []
        if trainer.is_global_zero:
            _write_outputs(rows, path, skipped, list_skipped=self.path is None)
            summary = decisions_by_type(rows, _known_types(trainer))
            if summary:
                print(summary)


def _known_types(trainer: L.Trainer) -> dict[str, str]:
    """``{path: defect type}`` of the datamodule's labelled samples (their folder's class
    name, before any ``binary`` merge); empty without one."""
    samples = getattr(getattr(trainer, "datamodule", None), "samples", None) or []
    return {
        os.path.abspath(s.path): s.label
        for s in samples
        if isinstance(getattr(s, "path", None), str) and getattr(s, "label", None) is not None
    }


def decisions_by_type(rows: Sequence[dict[str, Any]], types: dict[str, str]) -> str | None:
    """One line counting the "defect" decisions per known defect type, or None when no
    predicted image has a known type.

    Example:
        >>> rows = [{"path": "/d/scratch/1.png", "decision": "good"},
        ...         {"path": "/d/good/2.png", "decision": "good"}]
        >>> decisions_by_type(rows, {"/d/scratch/1.png": "scratch", "/d/good/2.png": "good"})
        'Flagged "defect", by known type: good 0 of 1, scratch 0 of 1'
    """
    counts: dict[str, list[int]] = {}
    for row in rows:
        path = row.get("path")
        kind = types.get(os.path.abspath(path)) if isinstance(path, str) else None
        if kind is not None:
            tally = counts.setdefault(kind, [0, 0])
            tally[0] += row.get("decision") == "defect"
            tally[1] += 1
    if not counts:
        return None
    order = sorted(counts, key=lambda kind: (kind.lower() not in GOOD_NAMES, kind))
    parts = [f"{kind} {counts[kind][0]} of {counts[kind][1]}" for kind in order]
    return 'Flagged "defect", by known type: ' + ", ".join(parts)


def _heatmap_base(trainer: L.Trainer) -> str | None:
    """The folder heat-map names are relative to: the deepest folder holding the datamodule's
    ``root`` (when a folder) and every sample's file; None without a datamodule that says."""
    datamodule = getattr(trainer, "datamodule", None)
    folders = {
        os.path.dirname(os.path.abspath(path))
        for path in (getattr(s, "path", None) for s in getattr(datamodule, "samples", None) or [])
        if isinstance(path, str)
    }
    root = getattr(datamodule, "root", None)
    if isinstance(root, str | os.PathLike) and os.path.isdir(root):
        folders.add(os.path.abspath(root))
    if not folders:
        return None
    try:
        return os.path.commonpath(sorted(folders))
    except ValueError:  # folders on different drives
        return None


def _write_outputs(
    rows: list[dict[str, Any]], path: Path, skipped: list[str], list_skipped: bool
) -> None:
    write_predictions_csv(rows, path)
    print(f"Wrote {len(rows)} predictions to {path}")
    listing = path.with_name(SKIPPED_FILE)
    if not skipped:
        if list_skipped:
            listing.unlink(missing_ok=True)
        return
    names = "\n  ".join(skipped[:_MAX_PRINTED])
    more = f"\n  ... and {len(skipped) - _MAX_PRINTED} more" if len(skipped) > _MAX_PRINTED else ""
    where = ""
    if list_skipped:
        listing.write_text("".join(f"{name}\n" for name in skipped))
        where = f" (listed in {listing})"
    print(f"Skipped {len(skipped)} unreadable file(s), no prediction{where}:\n  {names}{more}")
