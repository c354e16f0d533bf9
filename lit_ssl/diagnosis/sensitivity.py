"""Do thin defects survive a backbone's features? Paste synthetic defects, measure the movement.

A joint-embedding objective learns to ignore what its views re-sample. When the good images are
made of streaks (brushed metal, wood grain) and the policy moves them around, a scratch — a
streak — can end up ignored too (issue 27). :func:`defect_sensitivity` estimates this on the
user's own good images, for any backbone, in well under a minute on CPU:

1. Paste one synthetic defect per image (the shapes of :mod:`lit_ssl.data.synthetic`: a 1–2 px
   scratch or crack at 64 px, a small spot, ...) with a contrast of ``contrast`` times the local
   standard deviation of the image around it: plainly visible, but small.
2. Take the AnomalyDetector's dense patch features
   (:func:`lit_ssl.anomaly.scoring.patch_features`) of the clean and the pasted image; the
   *movement* is the largest distance between a pasted patch and the same clean patch.
3. Divide by the backbone's *good-patch spread*: the median distance from a clean patch to its
   nearest patch in the *other* clean images (leave-one-image-out nearest neighbour).
4. Do the same for ``references`` randomly initialised backbones of the same architecture and
   compare: a ratio well below 1 (below every random backbone) means pretraining taught the
   features to ignore that defect type.

Why that normalisation: feature norms differ by orders of magnitude between backbones (random
vs trained, BatchNorm statistics, layer widths), so raw distances are not comparable. The
nearest-good-patch distance is the AnomalyDetector's own scale — a good patch scores about that
much — so ``movement / spread`` is the defect's signal-to-noise ratio as the detector sees it
(above 1: the defect patch leaves the cloud of good patches), invariant to any rescaling of the
features, and measured on the user's images rather than a fixed constant. The policy's views
are not used for the scale: flips and rotations move patches to other places, so distances
between two views at the same place mix content with nuisance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from lit_ssl.anomaly.scoring import check_layers, check_neighbourhood, patch_features
from lit_ssl.backbone import Backbone
from lit_ssl.data.synthetic import DEFECT_SHAPES

__all__ = [
    "DEFAULT_DEFECTS",
    "DEFECT_TYPES",
    "SensitivityReport",
    "check_defects",
    "defect_masks",
    "defect_sensitivity",
    "paste_defects",
]

DEFECT_TYPES = ("scratch", "crack", "spot", "hole", "contamination")
DEFAULT_DEFECTS = ("scratch", "crack", "spot")
_SIGN = {"scratch": 1.0, "crack": -1.0, "spot": -1.0, "hole": -1.0, "contamination": -1.0}
_PLURAL = {"contamination": "contamination"}
MIN_STD = 0.02  # local std floor: a flat image still gets a visible defect (contrast * 0.02)
QUERIES = 1024  # clean patches whose nearest other-image patch sets the spread
CHUNK = 1 << 24  # distance-matrix elements per block
MARGIN = 1.25  # ratio beyond which (and beyond every random backbone) a verdict is drawn


def check_defects(defects: Sequence[str]) -> list[str]:
    """The requested defect types, checked; raises a two-line error listing the valid ones.

    Example:
        >>> check_defects(["scratch", "spot"])
        ['scratch', 'spot']
    """
    names = [defects] if isinstance(defects, str) else list(defects)
    unknown = [d for d in names if d not in DEFECT_TYPES]
    if unknown or not names:
        raise ValueError(
            f"unknown defect type(s) {unknown or names}\n"
            f"choose one or more of: {' '.join(DEFECT_TYPES)}"
        )
    return list(dict.fromkeys(names))


def defect_masks(defect: str, count: int, size: int, seed: int = 0) -> np.ndarray:
    """``count`` masks ``(count, size, size)`` float32 in [0, 1] of one synthetic defect type.

    The shapes are those of :func:`lit_ssl.data.synthetic.generate_image` (line widths scale
    with ``size``: 1–2 px scratches and cracks at 64 px).

    Example:
        >>> defect_masks("scratch", 2, 64).shape
        (2, 64, 64)
    """
    check_defects([defect])
    rng = np.random.default_rng(seed)
    shape = DEFECT_SHAPES[defect]
    return np.stack([shape(rng, size) for _ in range(count)]).astype(np.float32) / 255


def paste_defects(
    images: Tensor, defect: str, contrast: float = 4.0, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Paste one defect per image, ``contrast`` local standard deviations from its surroundings.

    Scratches are brighter than their surroundings, the other types darker (as in the synthetic
    data). The local standard deviation is that of the grey image in a window of about 1/8 of the
    side (at least ``MIN_STD``); the same change is added to every channel, then clipped to
    [0, 1].

    Args:
        images: ``(N, C, S, S)`` float images in [0, 1] (square).
        defect: One of :data:`DEFECT_TYPES`.
        contrast: Change at the defect's centre, in local standard deviations.
        seed: Seed of the shapes and their places.

    Returns:
        ``(pasted, masks)``: the images with the defect and its ``(N, 1, S, S)`` alpha mask.

    Example:
        >>> pasted, masks = paste_defects(torch.full((2, 1, 64, 64), 0.5), "scratch")
        >>> bool((pasted >= 0.5).all() and (pasted > 0.5).any())
        True
    """
    n, _, height, width = images.shape
    if height != width:
        raise ValueError(f"paste_defects needs square images, got {height}x{width}")
    masks = torch.from_numpy(defect_masks(defect, n, height, seed)).to(images)[:, None]
    grey = images.mean(1, keepdim=True)
    window = max(5, height // 8) | 1
    pool = dict(kernel_size=window, stride=1, padding=window // 2, count_include_pad=False)
    mean = F.avg_pool2d(grey, **pool)
    std = (F.avg_pool2d(grey * grey, **pool) - mean * mean).clamp_min(0).sqrt()
    delta = _SIGN[defect] * contrast * std.clamp_min(MIN_STD) * masks
    return (images + delta).clamp(0, 1), masks


# ------------------------------------------------------------------ features


def _device(backbone: Backbone) -> torch.device:
    return next(backbone.parameters()).device


@torch.inference_mode()
def _features(
    backbone: Backbone, images: Tensor, layers: Sequence[int], neighbourhood: int, batch: int
) -> Tensor:
    device = _device(backbone)
    parts = [
        patch_features(backbone, images[i : i + batch].to(device), layers, neighbourhood).cpu()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(parts)


def _spread(features: Tensor, seed: int) -> float:
    """Median distance from a clean patch to its nearest patch in the other clean images."""
    n, c, h, w = features.shape
    bank = features.permute(0, 2, 3, 1).reshape(-1, c)
    owner = torch.arange(n).repeat_interleave(h * w)
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(bank), generator=generator)[:QUERIES]
    squared = (bank * bank).sum(1)
    step = max(1, CHUNK // len(bank))
    nearest = []
    for start in range(0, len(picked), step):
        rows = picked[start : start + step]
        d2 = squared[rows, None] - 2 * bank[rows] @ bank.T + squared[None]
        d2 = d2.masked_fill(owner[rows, None] == owner[None], float("inf"))
        nearest.append(d2.amin(1).clamp_min(0).sqrt())
    return float(torch.cat(nearest).median())


def _movements(
    backbone: Backbone,
    clean: Tensor,
    pasted: dict[str, Tensor],
    layers: Sequence[int],
    neighbourhood: int,
    batch: int,
    seed: int,
) -> tuple[float, dict[str, Tensor]]:
    """Good-patch spread and, per type, each image's largest patch movement / spread."""
    was_training = backbone.training
    backbone.eval()
    try:
        base = _features(backbone, clean, layers, neighbourhood, batch)
        spread = max(_spread(base, seed), 1e-12)
        moved = {}
        for defect, images in pasted.items():
            feats = _features(backbone, images, layers, neighbourhood, batch)
            moved[defect] = (feats - base).norm(dim=1).flatten(1).amax(1) / spread
    finally:
        backbone.train(was_training)
    return spread, moved


def _random_like(backbone: Backbone, seed: int) -> Backbone:
    """A freshly initialised backbone of the same architecture (seeded, RNG state restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = Backbone(backbone.name, in_chans=backbone.in_chans, image_size=backbone.image_size)
    ref.mean.copy_(backbone.mean)
    ref.std.copy_(backbone.std)
    return ref.to(_device(backbone))


# ------------------------------------------------------------------ report


def _plural(defect: str) -> str:
    return _PLURAL.get(defect, defect + ("es" if defect.endswith("ch") else "s"))


@dataclass
class SensitivityReport:
    """How far synthetic defects move a backbone's patch features, against random backbones.

    Movements are in units of the backbone's good-patch spread (median distance of a clean
    patch to its nearest patch in other clean images): above 1, the defect's patch leaves the
    cloud of good patches, which is what the AnomalyDetector scores.

    Attributes:
        backbone: What was checked (architecture, and the weights file when known).
        num_images: Good images the defects were pasted into.
        size: Side of the (square) images.
        layers: Backbone stages of the patch features.
        neighbourhood: Local average of the patch features.
        contrast: Defect contrast in local standard deviations.
        references: Random backbones compared against (seeds ``0 .. references - 1``).
        rows: Per defect type: ``defect``, ``movement`` (median over images), ``reference``
            (median over the random backbones of their medians), ``reference_min``,
            ``reference_max``, ``ratio`` (``movement / reference``) and ``verdict``.
        spread: Good-patch spread of the backbone and of each reference (feature units).
        warnings: Problems with the input.
        runtime_s: Wall-clock seconds.

    Example:
        >>> report = SensitivityReport("resnet10t", 8, 64, [1, 2], 3, 4.0, 3, rows=[])
        >>> report.summary().splitlines()[0].startswith("Defect sensitivity")
        True
    """

    backbone: str
    num_images: int
    size: int
    layers: list[int]
    neighbourhood: int
    contrast: float
    references: int
    rows: list[dict] = field(default_factory=list)
    spread: dict[str, list[float] | float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    runtime_s: float = 0.0

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    def ratio(self, defect: str) -> float:
        """Movement ratio (backbone / median random backbone) of one defect type."""
        return next(r["ratio"] for r in self.rows if r["defect"] == defect)

    def table(self) -> list[str]:
        """The per-type Markdown table."""
        lines = [
            "| defect | movement | random backbones: median [range] | ratio |",
            "|---|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r['defect']} | {r['movement']:.2f} | {r['reference']:.2f} "
                f"[{r['reference_min']:.2f}, {r['reference_max']:.2f}] | {r['ratio']:.2f} |"
            )
        return lines

    def summary(self) -> str:
        """Header, table and one verdict per type (what ``lit-ssl diagnose --weights`` prints)."""
        head = (
            f"Defect sensitivity of {self.backbone}: {self.num_images} good images at "
            f"{self.size} px, defects pasted at {self.contrast:g}x the local std, patch features "
            f"of layers {list(self.layers)}; movement = largest patch-feature change / median "
            f"distance between good patches of different images; vs {self.references} random "
            f"backbones ({self.runtime_s:.1f} s)."
        )
        verdicts = [r["verdict"] for r in self.rows]
        return "\n".join(
            [head, *self.table(), *verdicts, *(f"Warning: {w}" for w in self.warnings)]
        )

    def to_markdown(self) -> str:
        """The summary as Markdown (table as a table)."""
        head, *_ = self.summary().splitlines()
        verdicts = [f"- {r['verdict']}" for r in self.rows]
        notes = [f"- Warning: {w}" for w in self.warnings]
        return "\n".join([head, "", *self.table(), "", *verdicts, *notes]) + "\n"


def _verdict(defect: str, movement: float, ref: float, lo: float, hi: float) -> str:
    """Below every random backbone and by more than ``1 / MARGIN``: ignored; above: sensitive."""
    ratio = movement / ref if ref > 0 else float("inf")
    start = f"{defect}: features move {ratio:.2f}x as much as a random backbone's"
    plural = _plural(defect)
    if movement < lo and ratio < 1 / MARGIN:
        text = (
            f"{start} — the pretrained backbone has learned to ignore {plural}; "
            "see docs/policies.md"
        )
    elif movement > hi and ratio > MARGIN:
        text = f"{start} — pretraining made the features more sensitive to {plural}"
    else:
        text = f"{start} — about as sensitive to {plural} as an untrained backbone" + (
            "; see docs/policies.md" if ratio < 1 else ""
        )
    if movement < 1:
        text += " (and the change is smaller than the spread of good patches: hard to detect)"
    return text


# ------------------------------------------------------------------ API


def defect_sensitivity(
    images: Tensor,
    backbone: Backbone,
    defects: Sequence[str] = DEFAULT_DEFECTS,
    references: int = 3,
    layers: Sequence[int] = (1, 2),
    neighbourhood: int = 3,
    contrast: float = 4.0,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    name: str | None = None,
) -> SensitivityReport:
    """How far pasted defects move ``backbone``'s patch features, against random backbones.

    The same pasted images go through the backbone and through ``references`` freshly
    initialised backbones of its architecture (seeds ``0 .. references - 1``, the backbone's
    normalisation); each backbone's movements are divided by its own good-patch spread (see the
    module docstring for why), so the numbers compare across backbones.

    Args:
        images: ``(N, C, S, S)`` good images, float in [0, 1], ``N >= 4``.
        backbone: The backbone to check (e.g. from ``lit_ssl.backbone.loading.resolve_backbone``).
        defects: Types to paste (:data:`DEFECT_TYPES`).
        references: Random backbones to compare with (>= 1).
        layers: Backbone stages of the patch features (the AnomalyDetector's default).
        neighbourhood: Local average of the patch features (odd; the detector's default).
        contrast: Defect contrast in local standard deviations.
        seed: Seed of the defects' shapes and places and of the spread's sample.
        batch_size: Images per forward pass.
        progress: Show a progress bar over the backbones.
        name: How to call the backbone in the report (default: its architecture).

    Returns:
        The :class:`SensitivityReport`.

    Raises:
        ValueError: Bad images, defect types, layers or counts.

    Example:
        >>> from lit_ssl.backbone import Backbone
        >>> images = torch.rand(8, 1, 32, 32)
        >>> report = defect_sensitivity(images, Backbone("test_resnet", in_chans=1),
        ...                             references=1, layers=[0], progress=False)
        >>> [row["defect"] for row in report.rows]
        ['scratch', 'crack', 'spot']
    """
    start = time.perf_counter()
    defects = check_defects(defects)
    if images.ndim != 4 or len(images) < 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"images of shape {tuple(images.shape)}: give at least 4 square images (N, C, S, S)"
        )
    if images.shape[1] != backbone.in_chans:
        raise ValueError(
            f"images have {images.shape[1]} channels, the backbone {backbone.in_chans}"
        )
    if references < 1 or contrast <= 0:
        raise ValueError(f"need references >= 1 and contrast > 0, got {references}, {contrast}")
    layers = [int(v) for v in layers]
    check_layers(backbone, layers)
    check_neighbourhood(neighbourhood)
    images = images.float().cpu()
    pasted = {
        d: paste_defects(images, d, contrast, seed + 1000 * i)[0] for i, d in enumerate(defects)
    }
    models = [("backbone", lambda: backbone)]
    models += [(f"random {r}", lambda r=r: _random_like(backbone, r)) for r in range(references)]
    spreads, medians = [], []
    for _, build in tqdm(models, desc="sensitivity", disable=not progress, leave=False):
        spread, moved = _movements(build(), images, pasted, layers, neighbourhood, batch_size, seed)
        spreads.append(spread)
        medians.append({d: float(m.median()) for d, m in moved.items()})
    rows = []
    for d in defects:
        mine, refs = medians[0][d], np.array([m[d] for m in medians[1:]])
        ref = float(np.median(refs))
        rows.append(
            {
                "defect": d,
                "movement": mine,
                "reference": ref,
                "reference_min": float(refs.min()),
                "reference_max": float(refs.max()),
                "ratio": mine / ref if ref > 0 else float("inf"),
                "verdict": _verdict(d, mine, ref, float(refs.min()), float(refs.max())),
            }
        )
    return SensitivityReport(
        backbone=name or backbone.name,
        num_images=len(images),
        size=int(images.shape[-1]),
        layers=layers,
        neighbourhood=neighbourhood,
        contrast=float(contrast),
        references=references,
        rows=rows,
        spread={"backbone": spreads[0], "references": spreads[1:]},
        runtime_s=time.perf_counter() - start,
    )
