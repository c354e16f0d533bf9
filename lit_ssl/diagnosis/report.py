"""The result of :func:`lit_ssl.diagnose`: numbers, plain-words summary, JSON, figure.

Kept apart from the estimation so that a saved ``diagnose.json`` can be re-read and re-plotted
without images (``DiagnosisReport(**json.load(f))``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lit_ssl.diagnosis.sensitivity import SensitivityReport

__all__ = ["FAMILIES", "DiagnosisReport", "decide"]

FAMILIES = ("joint_embedding", "reconstruction", "hybrid")
NOTHING = 0.01  # tr(Sigma) / tr(data) below this: the policy re-samples nothing
UNDER_ALIGNED = 0.5  # a direction holding >= 10% of the variance re-sampled less than this
JE_SHARE, JE_GAP = 0.4, 0.05  # joint-embedding: enough nuisance, and RC keeps more of it
RC_SHARE, RC_GAP = 0.2, 0.02  # reconstruction: little nuisance, or no difference in what's kept
DEFECT_ALIGNMENT = 2.0  # policy variance along the defect direction vs good images' variance


@dataclass
class DiagnosisReport:
    """What ``lit-ssl diagnose`` measured on a dataset under one augmentation policy.

    All variances live in the top ``rank`` principal directions of the resized (clean) images,
    centred. "Kept" numbers are the share of a covariance linearly recoverable from the ``k``
    features of a closed-form encoder (R^2, invariant to any invertible map of the features).

    Attributes:
        root: Dataset folder (the embedded synthetic data when ``root`` was omitted).
        layout: Layout that was read.
        policy: Policy name or YAML path.
        num_images: Images actually used.
        size: Side of the square images the policy produced.
        in_chans: Channels of the vectors (1 = grey).
        dims: Vector length ``size * size * in_chans``.
        rank: Principal directions kept (the closed forms run in this subspace).
        views_per_image: Augmented views drawn per image.
        data_variance: ``(rank,)`` variance per principal direction, descending.
        augmentation_variance: ``(rank,)`` the policy's variance along each direction.
        alignment: ``(rank,)`` augmentation / data variance (the paper's ``alpha^2``).
        nuisance_share: Share of the data variance the policy re-samples,
            ``sum_j min(aug_j, data_j) / sum_j data_j``.
        augmentation_ratio: ``tr(Sigma) / tr(data covariance)`` over all pixels.
        k_values: Latent sizes of the closed-form solutions.
        nuisance_kept: ``{"reconstruction": [...], "joint_embedding": [...]}`` per ``k``.
        content_kept: Same, for the content (not re-sampled) part of the variance.
        overlap: Subspace overlap of the two solutions per ``k`` (1 = same features).
        auroc: Linear-probe defect AUROC per family and ``k`` (plus ``"pixels"``, ``"n_good"``,
            ``"n_defect"``, ``"stderr"``), or None without enough labels.
        defect_alignment: Augmentation / good-image variance along the class-mean difference
            (None without labels).
        recommendation: ``"joint_embedding"``, ``"reconstruction"`` or ``"hybrid"``.
        reasons: The numbers that led to the recommendation, in words.
        warnings: Problems found with the data or the policy.
        runtime_s: Wall-clock seconds.
        sensitivity: With ``--weights``: the defect-sensitivity check of the backbone
            (``SensitivityReport.to_dict()``, :mod:`lit_ssl.diagnosis.sensitivity`), else None.
    """

    root: str
    layout: str
    policy: str
    num_images: int
    size: int
    in_chans: int
    dims: int
    rank: int
    views_per_image: int
    data_variance: list[float]
    augmentation_variance: list[float]
    alignment: list[float]
    nuisance_share: float
    augmentation_ratio: float
    k_values: list[int]
    nuisance_kept: dict[str, list[float]]
    content_kept: dict[str, list[float]]
    overlap: list[float]
    auroc: dict | None = None
    defect_alignment: float | None = None
    recommendation: str = "hybrid"
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runtime_s: float = 0.0
    sensitivity: dict | None = None

    # ------------------------------------------------------------------ text

    def _sensitivity(self) -> SensitivityReport | None:
        from lit_ssl.diagnosis.sensitivity import SensitivityReport

        return SensitivityReport(**self.sensitivity) if self.sensitivity else None

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    def top_direction(self) -> tuple[float, float]:
        """Share of the variance in the first principal direction, and its alignment."""
        var = np.asarray(self.data_variance)
        return float(var[0] / var.sum()), float(self.alignment[0])

    def _table(self) -> list[str]:
        rows = [
            "| k | nuisance kept RC | nuisance kept JE | content kept RC | content kept JE"
            " | overlap RC/JE |" + (" AUROC RC | AUROC JE |" if self.auroc else ""),
            "|---|---|---|---|---|---|" + ("---|---|" if self.auroc else ""),
        ]
        nk, ck = self.nuisance_kept, self.content_kept
        for i, k in enumerate(self.k_values):
            row = (
                f"| {k} | {nk['reconstruction'][i]:.2f} | {nk['joint_embedding'][i]:.2f} | "
                f"{ck['reconstruction'][i]:.2f} | {ck['joint_embedding'][i]:.2f} | "
                f"{self.overlap[i]:.2f} |"
            )
            if self.auroc:
                row += (
                    f" {self.auroc['reconstruction'][i]:.2f} |"
                    f" {self.auroc['joint_embedding'][i]:.2f} |"
                )
            rows.append(row)
        return rows

    def summary(self) -> str:
        """The diagnosis in plain words (what the CLI prints), then the sensitivity check."""
        sensitivity = self._sensitivity()
        tail = ["", sensitivity.summary()] if sensitivity is not None else []
        return "\n".join([self._diagnosis(), *tail])

    def _diagnosis(self) -> str:
        top_share, top_align = self.top_direction()
        lines = [
            f"lit-ssl diagnose: {self.num_images} images from {self.root} ({self.layout}), "
            f"policy {self.policy!r}, {self.size}x{self.size}x{self.in_chans} vectors, "
            f"{self.views_per_image} views per image, {self.runtime_s:.1f} s.",
            f"Nuisance share: the policy re-samples {self.nuisance_share:.0%} of the image "
            f"variance (top {self.rank} principal directions). The strongest direction holds "
            f"{top_share:.0%} of it; the policy re-samples "
            f"{min(top_align, 1.0):.0%} of that direction (alignment alpha^2 = {top_align:.2f}).",
        ]
        if self.auroc:
            a = self.auroc
            lines.append(
                f"Labels: {a['n_good']} good / {a['n_defect']} defect images; linear-probe AUROC "
                f"(+-{a['stderr']:.2f}) on raw pixels {a['pixels']:.2f}."
            )
        lines += [f"Recommendation: {self.recommendation}."]
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """Summary plus the per-``k`` table (and the defect-sensitivity check), as Markdown."""
        sensitivity = self._sensitivity()
        md = f"```text\n{self._diagnosis()}\n```\n\n" + "\n".join(self._table()) + "\n"
        if sensitivity is not None:
            md += "\n## Do thin defects survive the backbone?\n\n" + sensitivity.to_markdown()
        return md

    def save(self, output: str | os.PathLike[str]) -> Path:
        """Write ``diagnose.json``, ``diagnose.md`` and ``diagnose.png`` into a folder.

        Args:
            output: Destination folder (created).

        Returns:
            The folder.
        """
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "diagnose.json").write_text(json.dumps(self.to_dict(), indent=2))
        (folder / "diagnose.md").write_text(self.to_markdown())
        self.save_figure(folder / "diagnose.png")
        return folder

    # ------------------------------------------------------------------ figure

    def save_figure(self, path: str | os.PathLike[str]) -> Path:
        """Three panels: spectrum and alignment; variance kept by each family; probe AUROC.

        Args:
            path: PNG file (folders are created).

        Returns:
            The written path.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        self._plot_spectrum(axes[0])
        self._plot_kept(axes[1])
        self._plot_auroc(axes[2])
        fig.suptitle(
            f"policy {self.policy!r}: nuisance share {self.nuisance_share:.0%} -> "
            f"recommend {self.recommendation}",
            fontsize=11,
        )
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _plot_spectrum(self, ax) -> None:
        j = np.arange(1, self.rank + 1)
        ax.semilogy(j, self.data_variance, "k-", label="data variance")
        ax.semilogy(j, self.augmentation_variance, "C1-", label="policy's variance")
        ax.set_xlabel("principal direction of the data")
        ax.set_ylabel("variance")
        twin = ax.twinx()
        twin.plot(j, np.minimum(self.alignment, 1.0), "C0.", ms=4, label="share re-sampled")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("share of variance re-sampled", color="C0")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title("what the policy re-samples", fontsize=10)

    def _plot_kept(self, ax) -> None:
        for family, colour in (("reconstruction", "C3"), ("joint_embedding", "C2")):
            ax.plot(
                self.k_values,
                self.nuisance_kept[family],
                "-o",
                color=colour,
                ms=4,
                label=f"{family}: nuisance kept",
            )
            ax.plot(
                self.k_values,
                self.content_kept[family],
                "--s",
                color=colour,
                ms=4,
                label=f"{family}: content kept",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(self.k_values, [str(k) for k in self.k_values])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("k (features)")
        ax.set_ylabel("share of variance recoverable from features")
        ax.legend(fontsize=7)
        ax.set_title("closed-form solutions (Thm 3.1 / 3.2)", fontsize=10)

    def _plot_auroc(self, ax) -> None:
        ax.set_title("linear-probe defect AUROC", fontsize=10)
        if not self.auroc:
            ax.text(
                0.5,
                0.5,
                "no labels\n(needs >= 10 good and\n>= 10 defect images)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            return
        for family, colour in (("reconstruction", "C3"), ("joint_embedding", "C2")):
            ax.plot(self.k_values, self.auroc[family], "-o", color=colour, ms=4, label=family)
        ax.axhline(self.auroc["pixels"], color="k", ls=":", label=f"all {self.rank} directions")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(self.k_values, [str(k) for k in self.k_values])
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("k (features)")
        ax.legend(fontsize=8)


# ------------------------------------------------------------------ decision


def decide(rep: DiagnosisReport) -> None:
    """Fill ``recommendation``, ``reasons`` and policy ``warnings`` from the numbers.

    Rules (thresholds are module constants): a policy whose variance is under 1% of the data's
    re-samples nothing -> reconstruction. Otherwise, with ``gap`` = nuisance kept by
    reconstruction minus joint-embedding at the k where it is largest: nuisance share >= 40%
    and gap >= 0.05 -> joint_embedding; share < 20% or gap < 0.02 -> reconstruction; else
    hybrid. Labels
    (when their linear-probe AUROCs differ beyond noise) and a policy that perturbs the defect
    direction can turn the answer into hybrid.
    """
    nk = rep.nuisance_kept
    gaps = np.subtract(nk["reconstruction"], nk["joint_embedding"])
    at = int(np.argmax(gaps))
    gap = float(gaps[at])
    share, reasons = rep.nuisance_share, rep.reasons
    if rep.augmentation_ratio < NOTHING:
        rep.warnings.append(
            f"policy {rep.policy!r} re-samples nothing (augmentation variance "
            f"{rep.augmentation_ratio:.1%} of the data's): joint-embedding has nothing to be "
            "invariant to; use a policy that re-samples your nuisance (e.g. 'surface')"
        )
        rep.recommendation = "reconstruction"
        reasons.append("with nothing re-sampled, only reconstruction has a training signal")
        return
    reasons.append(
        f"at k = {rep.k_values[at]} the reconstruction solution keeps "
        f"{nk['reconstruction'][at]:.0%} of the nuisance variance, joint-embedding "
        f"{nk['joint_embedding'][at]:.0%} (largest gap over k = {rep.k_values})"
    )
    if share >= JE_SHARE and gap >= JE_GAP:
        rep.recommendation = "joint_embedding"
        reasons.append(
            f"nuisance dominates ({share:.0%} of the variance is re-sampled) and "
            "reconstruction spends its features on it (paper, Cor. 4.5)"
        )
    elif share < RC_SHARE or gap < RC_GAP:
        rep.recommendation = "reconstruction"
        why = (
            f"little nuisance ({share:.0%} re-sampled)"
            if share < RC_SHARE
            else f"both solutions keep nearly the same nuisance (gap {gap:.3f} < {RC_GAP})"
        )
        reasons.append(
            f"{why}: joint-embedding gains nothing here, and reconstruction does not depend "
            "on the policy re-sampling the right things (paper, Cor. 4.5)"
        )
    else:
        rep.recommendation = "hybrid"
        reasons.append("between the two regimes: a hybrid head hedges")
    _label_evidence(rep)
    _policy_warnings(rep)


def _label_evidence(rep: DiagnosisReport) -> None:
    if not rep.auroc:
        return
    a = rep.auroc
    rc, je = np.mean(a["reconstruction"]), np.mean(a["joint_embedding"])
    margin = 2 * np.sqrt(2) * a["stderr"]
    text = f"mean linear-probe AUROC over k: reconstruction {rc:.2f}, joint-embedding {je:.2f}"
    if max(rc, je) < 0.5 + margin or abs(rc - je) < margin:
        rep.reasons.append(f"{text}; within noise (+-{margin:.2f}), so labels do not decide")
        return
    better = "reconstruction" if rc > je else "joint_embedding"
    rep.reasons.append(f"{text}; labels favour {better}")
    if better != rep.recommendation:
        rep.recommendation = "hybrid"
        rep.reasons.append("labels and the nuisance analysis disagree: hybrid")


def _policy_warnings(rep: DiagnosisReport) -> None:
    var = np.asarray(rep.data_variance)
    weight = var / var.sum()
    for j in np.flatnonzero((weight >= 0.1) & (np.asarray(rep.alignment) < UNDER_ALIGNED))[:3]:
        rep.warnings.append(
            f"principal direction {j + 1} holds {weight[j]:.0%} of the image variance but the "
            f"policy re-samples only {rep.alignment[j]:.0%} of it: if it is nuisance "
            "(exposure, illumination, pose), widen the policy's ranges, else both heads keep it"
        )
    if _defect_perturbed(rep):
        rep.warnings.append(
            f"the policy perturbs what the labels say is content: along the direction "
            f"separating defect from good images its variance is {rep.defect_alignment:.1f}x "
            "that of the good images; it may erase or mimic defects"
        )
        if rep.recommendation == "joint_embedding":
            rep.recommendation = "hybrid"
            rep.reasons.append(
                "the policy perturbs the defect direction: hybrid keeps a reconstruction signal"
            )


def _defect_perturbed(rep: DiagnosisReport) -> bool:
    """The labels carry linear evidence and the policy moves images along it strongly."""
    if rep.defect_alignment is None or not rep.auroc:
        return False
    evidence = rep.auroc["pixels"] > 0.5 + 2 * rep.auroc["stderr"]
    threshold = max(DEFECT_ALIGNMENT, rep.augmentation_ratio)
    return bool(evidence and rep.defect_alignment >= threshold)
