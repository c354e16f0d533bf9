"""Benchmark 1: linear phase diagram of reconstruction vs joint-embedding.

Subspace error (``lit_ssl.diagnosis.theory.subspace_distance`` to the true signal subspace) of
the closed-form solutions (Thms 3.1/3.2) over nuisance magnitude x augmentation
alignment ``alpha``, with the analytic thresholds (Props 4.3/4.4) drawn on top.
Writes a PNG, the numbers (docs/linear_phase_diagram.json) and the "Linear phase diagram"
section of docs/benchmarks.md (prose: benchmarks/templates/linear_phase_diagram.md).

    python benchmarks/linear_phase_diagram.py            # population limit
    python benchmarks/linear_phase_diagram.py --samples 20000   # finite-n moments
    python benchmarks/linear_phase_diagram.py --grid 8   # smoke run (table unchanged)
    python benchmarks/linear_phase_diagram.py --report-only   # re-render from the JSON
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common  # first: the repository on sys.path, the Agg backend, no albumentations check

# isort: split
import matplotlib.pyplot as plt
import numpy as np

from lit_ssl.diagnosis.linear_model import LinearModel, moments_from_views
from lit_ssl.diagnosis.theory import (
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
    common.save_figure(fig, path)


def measure_table(seed: int, samples: int) -> list[dict]:
    """Per table magnitude: thresholds (analytic vs bisection) and errors at alpha 0 and 1."""
    rows = []
    for mag in TABLE_MAGNITUDES:
        model = make_model(mag, seed)
        rc, je = model.thresholds()
        family = preferred_family(model.signal_var, model.theta_var, model.gamma_var)
        rows.append(
            {
                "magnitude": mag,
                "rc": float(rc),
                "rc_measured": measured_threshold(model, 0),
                "je": float(je),
                "je_measured": measured_threshold(model, 1),
                "family": family + (" (neither needs any)" if max(rc, je) <= 0 else ""),
                "error_alpha0": [float(e) for e in errors(model, 0.0, samples, seed)],
                "error_alpha1": [float(e) for e in errors(model, 1.0, samples, seed)],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`measure_table`'s rows."""
    header = [
        "nuisance magnitude", "α² RC (Prop 4.3)", "α² RC measured", "α² JE (Prop 4.4)",
        "α² JE measured", "lower threshold", "error RC / JE at α=0", "error RC / JE at α=1",
    ]  # fmt: skip
    align = ["---:"] * 5 + ["---"] + ["---:"] * 2
    cells = [
        [
            f"{r['magnitude']:g}",
            f"{r['rc']:.6g}",
            f"{r['rc_measured']:.6g}",
            f"{r['je']:.6g}",
            f"{r['je_measured']:.6g}",
            r["family"],
            "{:.2f} / {:.2f}".format(*r["error_alpha0"]),
            "{:.2f} / {:.2f}".format(*r["error_alpha1"]),
        ]  # fmt: skip
        for r in rows
    ]
    return common.markdown_table(header, align, cells)


def je_saturation() -> float:
    """``(1 - delta) / delta``: the joint-embedding threshold at infinite magnitude."""
    delta = float(np.min(SIGNAL / (SIGNAL + THETA[: SIGNAL.size])))
    return (1 - delta) / delta


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=80, help="grid points per axis")
    p.add_argument("--samples", type=int, default=0, help="0 = population limit, else n")
    p.add_argument("--seed", type=int, default=0)
    common.add_output_options(p, "linear_phase_diagram")
    return common.parse_output_options(p, argv, "linear_phase_diagram")


def measure(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Phase grid (plotted), table rows and the model's constants: what the section shows."""
    t0 = time.perf_counter()
    mags = np.geomspace(1e-2, 1e3, args.grid)
    alphas = np.geomspace(1e-2, 1e2, args.grid)
    grid = phase_grid(mags, alphas, args.samples, args.seed)
    if not args.no_write:
        plot(mags, alphas, grid, args.img, args.seed)
    rows = measure_table(args.seed, args.samples)
    return {
        "command": common.command("linear_phase_diagram", argv),
        "elapsed_s": time.perf_counter() - t0,
        "grid": args.grid,
        "samples": args.samples,
        "seed": args.seed,
        "img": str(Path("img") / args.img.name),
        "signal": SIGNAL.tolist(),
        "nuisance_components": int(NUISANCE_PROFILE.size),
        "theta_signal": float(THETA[0]),
        "theta_nuisance": float(THETA[-1]),
        "crossover": float(crossover_variance(SIGNAL, THETA)),
        "je_saturation": je_saturation(),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = common.load_json(args.json) if args.report_only else measure(args, argv)
    tab = table(results["rows"])
    print(tab)
    print(f"done in {results['elapsed_s']:.1f} s")
    common.publish(args, results, lambda: section_text(results, tab))


def section_text(results: dict, tab: str) -> str:
    """The "Linear phase diagram" section, from the stored numbers."""
    samples = results["samples"]
    return common.render(
        "linear_phase_diagram",
        results,
        limit="population limit" if not samples else f"n = {samples} samples, 2 views",
        k=len(results["signal"]),
        signal=", ".join(f"{s:g}" for s in results["signal"]),
        theta_signal=f"{results['theta_signal']:g}",
        theta_nuisance=f"{results['theta_nuisance']:g}",
        crossover=f"{results['crossover']:g}",
        table=tab,
        je_saturation=f"{results['je_saturation']:.3g}",
        seconds=f"{results['elapsed_s']:.1f}",
    )


if __name__ == "__main__":
    main()
