"""``lit-ssl diagnose``: which head family fits *your* images and augmentation policy.

A one-minute CPU proxy built on the paper's linear closed forms (:mod:`lit_ssl.diagnosis.theory`,
Van Assel et al. 2025):

1. Sample up to ``num_images`` images, resize them to small vectors (``size x size x in_chans``,
   grey by default) and draw ``2 * pairs_per_image`` views of each with the user's policy.
2. Work in the top ``rank`` principal directions of the resized images (centred). Estimate the
   augmentation covariance ``Sigma`` (within-image covariance of the views; for two views
   ``E[(v1 - v2)(v1 - v2)'] / 2``), ``S`` and ``G`` (Thm 3.2) with
   :func:`lit_ssl.diagnosis.linear_model.moments_from_views`.
3. Per principal direction ``j`` (data variance ``g_j``): the policy's variance ``s_j`` along it
   and the alignment ``alpha^2_j = s_j / g_j``. The policy re-samples ``min(s_j, g_j)`` of that
   direction's variance (nuisance under this policy); the rest is what it leaves alone (content).
4. Closed-form reconstruction (Thm 3.1) and joint-embedding (Thm 3.2) encoders for each ``k``;
   how much nuisance and content variance each keeps (linear R^2 from its ``k`` features), their
   subspace overlap, and, with >= 10 good and >= 10 defect images, a linear-probe defect AUROC.
5. Recommend a family with the numbers, and warn when the policy re-samples nothing, leaves the
   dominant direction under-sampled, or perturbs the direction that separates defects from good
   images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from lit_ssl.augment import policy as build_policy
from lit_ssl.diagnosis.linear_model import moments_from_views
from lit_ssl.diagnosis.report import FAMILIES, DiagnosisReport, decide
from lit_ssl.diagnosis.sampling import load_images, pick_samples, resolve_samples
from lit_ssl.diagnosis.theory import (
    joint_embedding_solution,
    reconstruction_solution,
    subspace_overlap,
)

__all__ = ["FAMILIES", "DiagnosisReport", "diagnose"]

Array = np.ndarray
DEFAULT_K = (1, 2, 4, 8, 16, 32)
MAX_RANK = 64
MIN_PER_CLASS = 10  # labeled images per class needed for the probe and the defect check


def _vectors(
    images: list, name: str, size: int, in_chans: int, views: int, seed: int, progress: bool
) -> tuple[Array, Array]:
    """Clean (resize-only) vectors ``(n, d)`` and policy views ``(views, n, d)``, float64."""
    aug = build_policy(name, image_size=size, in_chans=in_chans, seed=seed)
    clean = build_policy("minimal", image_size=size, in_chans=in_chans)
    n, d = len(images), size * size * in_chans
    x, v = np.empty((n, d)), np.empty((views, n, d))
    for i, image in enumerate(
        tqdm(images, desc=f"{name} views", disable=not progress, leave=False)
    ):
        x[i] = clean(image=image)["image"].reshape(-1)
        for j in range(views):
            out = aug(image=image)["image"]
            if out.size != d:
                raise ValueError(
                    f"policy {name!r} returned shape {out.shape}, expected "
                    f"{size}x{size}x{in_chans}; use a policy built for image_size"
                )
            v[j, i] = out.reshape(-1)
    return x, v


# -------------------------------------------------------------------- estimation


def _principal(xc: Array) -> tuple[Array, Array]:
    """Top principal directions ``(rank, d)`` and variances of centred rows (Gram eigh: fast)."""
    w, v = np.linalg.eigh(xc @ xc.T)
    w, v = w[::-1], v[:, ::-1]
    rank = int(min(MAX_RANK, max(2, len(xc) // 4), np.sum(w > 1e-10 * max(w[0], 1e-30))))
    if rank < 2:
        raise ValueError("the images are (nearly) identical: nothing to diagnose")
    basis = (v[:, :rank].T @ xc) / np.sqrt(w[:rank])[:, None]
    return basis, w[:rank] / len(xc)


def _explained(w: Array, cov: Array, target: Array) -> float:
    """Share of ``tr(target)`` linearly recoverable from features ``w z``, ``z ~ cov``."""
    total = float(np.trace(target))
    if total <= 0:
        return 0.0
    cross = w @ target
    gram = w @ cov @ w.T
    gram += 1e-12 * np.trace(gram) * np.eye(len(gram))
    return float(np.trace(cross.T @ np.linalg.solve(gram, cross)) / total)


def _auroc(scores: Array, positive: Array) -> float:
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None]).mean())


def _probe(features: Array, positive: Array, seed: int, folds: int = 5) -> float:
    """Out-of-fold defect AUROC of a ridge (shrinkage-LDA) probe on standardised features."""
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.permutation(np.flatnonzero(positive == c)) for c in (0, 1)])
    scores = np.empty(len(positive))
    for fold in range(folds):
        test = index[fold::folds]
        train = np.setdiff1d(index, test)
        f = features[train]
        mean, std = f.mean(0), f.std(0) + 1e-12
        a = (f - mean) / std
        t = np.where(positive[train], 1.0, -1.0)
        ridge = 0.05 * len(train) * np.eye(a.shape[1])
        coef = np.linalg.solve(a.T @ a + ridge, a.T @ (t - t.mean()))
        scores[test] = ((features[test] - mean) / std) @ coef
    return _auroc(scores, positive.astype(bool))


def _auroc_stderr(n_pos: int, n_neg: int, auc: float = 0.5) -> float:
    """Hanley-McNeil standard error of an AUROC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)
    return float(np.sqrt(var / (n_pos * n_neg)))


def _solutions(z: Array, views: Array, lam: Array, k_values: list[int]) -> dict:
    """Closed forms for each ``k``; nuisance/content kept; overlap; encoders."""
    mo = moments_from_views(views, z)
    x, x_mean, sigma_rc = mo.reconstruction_args()
    rank = len(lam)
    ridge = 1e-6 * float(np.trace(mo.S)) / rank * np.eye(rank)
    sigma = np.diag(mo.Sigma)
    share = np.minimum(sigma / lam, 1.0)
    cov = np.diag(lam)
    nuis, cont = np.diag(lam * share), np.diag(lam * (1 - share))
    out = {
        "sigma": sigma,
        "nuisance": {f: [] for f in FAMILIES[:2]},
        "content": {f: [] for f in FAMILIES[:2]},
        "overlap": [],
        "encoders": [],
    }
    for k in k_values:
        enc, _ = reconstruction_solution(x, x_mean, sigma_rc + ridge, k)
        w = joint_embedding_solution(mo.S + ridge, mo.G, k)
        for family, e in (("reconstruction", enc), ("joint_embedding", w)):
            out["nuisance"][family].append(_explained(e, cov, nuis))
            out["content"][family].append(_explained(e, cov, cont))
        out["overlap"].append(subspace_overlap(enc, w, cov))
        out["encoders"].append((enc, w))
    return out


def _defect_alignment(x: Array, views: Array, labels: Array) -> float:
    """Policy variance / good-image variance along the class-mean difference (all pixels)."""
    d = x[labels == 1].mean(0) - x[labels == 0].mean(0)
    u = d / (np.linalg.norm(d) + 1e-12)
    data = float(np.var(x[labels == 0] @ u))
    proj = views @ u
    aug = float(((proj - proj.mean(0)) ** 2).sum() / ((len(views) - 1) * proj.shape[1]))
    return aug / max(data, 1e-12)


# -------------------------------------------------------------------------- API


def _k_values(k_values: Sequence[int] | None, rank: int) -> list[int]:
    ks = sorted({int(k) for k in (k_values or DEFAULT_K) if 1 <= int(k) <= max(1, rank // 2)})
    if not ks:
        raise ValueError(f"no k in {k_values} fits the {rank} principal directions; use smaller k")
    return ks


def _probe_all(z: Array, labels: Array, encoders: list, seed: int) -> dict | None:
    labeled = labels >= 0
    y = labels[labeled]
    n_def, n_good = int((y == 1).sum()), int((y == 0).sum())
    if min(n_def, n_good) < MIN_PER_CLASS:
        return None
    zl = z[labeled]
    return {
        "reconstruction": [_probe(zl @ e.T, y, seed) for e, _ in encoders],
        "joint_embedding": [_probe(zl @ w.T, y, seed) for _, w in encoders],
        "pixels": _probe(zl, y, seed),
        "n_good": n_good,
        "n_defect": n_def,
        "stderr": _auroc_stderr(n_def, n_good),
    }


def diagnose(
    root: str | os.PathLike[str] | None = None,
    policy: str = "surface",
    layout: str = "auto",
    num_images: int = 300,
    size: int = 32,
    in_chans: int = 1,
    pairs_per_image: int = 2,
    k_values: Sequence[int] | None = None,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> DiagnosisReport:
    """Diagnose which SSL head family suits a dataset under an augmentation policy.

    Args:
        root: Dataset folder or CSV manifest (any layout of :mod:`lit_ssl.data.layouts`); None
            uses the embedded synthetic factory data.
        policy: Preset name (``surface``, ``object``, ``minimal``, ``natural``) or policy YAML.
        layout: ``"auto"`` or a layout name.
        num_images: Images to sample (defect images fill at most half when labels exist).
        size: Side of the small square images the policy produces.
        in_chans: 1 (grey, default) or 3 (colour; vectors 3x longer).
        pairs_per_image: Pairs of views per image (``2 * pairs_per_image`` views).
        k_values: Latent sizes of the closed forms (default 1..32, at most rank / 2).
        seed: Seed of the sample and of the policy.
        output: Folder for ``diagnose.json``, ``diagnose.md`` and ``diagnose.png``.
        progress: Show progress bars.

    Returns:
        The :class:`DiagnosisReport`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: No (readable) image, or bad arguments.
    """
    start = time.perf_counter()
    if num_images < 8 or size < 4 or pairs_per_image < 1 or in_chans not in (1, 3):
        raise ValueError("need num_images >= 8, size >= 4, pairs_per_image >= 1, in_chans 1|3")
    path, resolved, samples = resolve_samples(root, layout)
    rng = np.random.default_rng(seed)
    images, labels, notes = load_images(
        pick_samples(samples, num_images, rng), size, in_chans, progress
    )
    views = 2 * pairs_per_image
    x, v = _vectors(images, policy, size, in_chans, views, seed, progress)
    mean = x.mean(0)
    basis, lam = _principal(x - mean)
    rank = len(lam)
    z, zv = (x - mean) @ basis.T, (v - v.mean((0, 1))) @ basis.T
    ks = _k_values(k_values, rank)
    sol = _solutions(z, zv, lam, ks)
    within = float(((v - v.mean(0)) ** 2).sum() / ((views - 1) * len(x)))
    has_labels = min((labels == 0).sum(), (labels == 1).sum()) >= MIN_PER_CLASS
    report = DiagnosisReport(
        root=str(path),
        layout=resolved,
        policy=str(policy),
        num_images=len(x),
        size=size,
        in_chans=in_chans,
        dims=x.shape[1],
        rank=rank,
        views_per_image=views,
        data_variance=lam.tolist(),
        augmentation_variance=sol["sigma"].tolist(),
        alignment=(sol["sigma"] / lam).tolist(),
        nuisance_share=float(np.minimum(sol["sigma"], lam).sum() / lam.sum()),
        augmentation_ratio=within / float(((x - mean) ** 2).sum() / len(x)),
        k_values=ks,
        nuisance_kept=sol["nuisance"],
        content_kept=sol["content"],
        overlap=sol["overlap"],
        auroc=_probe_all(z, labels, sol["encoders"], seed),
        defect_alignment=_defect_alignment(x, v, labels) if has_labels else None,
        warnings=notes,
    )
    decide(report)
    report.runtime_s = time.perf_counter() - start
    if output is not None:
        report.save(output)
    return report
