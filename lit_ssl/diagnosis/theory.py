"""Closed forms and alignment thresholds of linear self-supervised learning.

Van Assel et al., "Joint-Embedding vs Reconstruction: Provable Benefits of Latent
Space Prediction for Self-Supervised Learning" (arXiv 2505.12477, 2025).

Linear setting, ``n`` samples in ``R^d``, augmentation ``tau``:

* Reconstruction (Thm 3.1): ``min_{E,D} mean_i E_tau ||x_i - D E tau(x_i)||^2``.
  With ``C = X̄'X̄/n + Sigma`` and the SVD ``X'X̄/n C^{-1/2} = R Phi P'``:
  ``E* = P_k' C^{-1/2}``, ``D* = R_k Phi_k``.
* Joint-embedding (Thm 3.2):
  ``min_W mean_i E ||W tau1(x_i) - W tau2(x_i)||^2`` s.t.
  ``mean_i E[W tau(x_i) (W tau(x_i))'] = I``. With ``S = mean E[tau tau']`` and
  ``G = mean E[tau] E[tau]'``, eigendecompose ``S^{-1/2} G S^{-1/2} = Q Omega Q'``
  (descending): ``W* = Q_k' S^{-1/2}``.
* Alignment thresholds (Props 4.3/4.4) for ``tau(x) = x + theta + alpha * gamma``,
  ``theta ~ N(0, Theta)``, ``gamma ~ N(0, Gamma)``, with ``Gamma`` equal to the
  covariance of the nuisance (irrelevant) components of the data and everything
  diagonal in one shared eigenbasis. Per component ``i``: signal variance ``s_i``
  (``i <= k``), ``lambda^Theta_i``, ``lambda^Gamma_i`` (zero for ``i <= k``). Both
  solutions recover the signal subspace iff ``alpha^2`` exceeds

  - reconstruction: ``max_{i>k} [lambda^Gamma_i / eta^2 - lambda^Theta_i /
    lambda^Gamma_i - 1]``, ``eta = min_{i<=k} s_i / sqrt(s_i + lambda^Theta_i)``;
  - joint-embedding: ``max_{i>k} [(1 - delta) / delta - lambda^Theta_i /
    lambda^Gamma_i]``, ``delta = min_{i<=k} s_i / (s_i + lambda^Theta_i)``.

* Corollary 4.5: per nuisance component the reconstruction threshold minus the
  joint-embedding one is ``lambda^Gamma_i / eta^2 - 1 / delta``, so reconstruction
  needs less alignment iff every nuisance variance is below ``eta^2 / delta``
  (:func:`crossover_variance`) and joint-embedding iff every one is above it.

Provenance: the paper's body text was not retrievable here, so the thresholds were
re-derived from Thms 3.1/3.2 in the population limit (the ranking scores are
``g / sqrt(g + sigma)`` and ``g / (g + sigma)``, ``g`` = data variance, ``sigma`` =
augmentation variance of a component). The derivation agrees with the statement in
issue 7 term by term; no discrepancy was found. The tests check the thresholds
against the closed forms numerically.

All functions take and return numpy arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

__all__ = [
    "alignment_thresholds",
    "crossover_variance",
    "energy_captured",
    "joint_embedding_loss",
    "joint_embedding_solution",
    "preferred_family",
    "reconstruction_loss",
    "reconstruction_solution",
    "subspace_distance",
    "subspace_overlap",
]

_TOL = 1e-10


# ----------------------------------------------------------------- validation


def _matrix(a: ArrayLike, name: str, shape: tuple[int | None, int | None]) -> Array:
    m = np.asarray(a, dtype=np.float64)
    if m.ndim != 2 or any(s is not None and s != t for s, t in zip(shape, m.shape, strict=True)):
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape ({want}), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contains NaN or inf")
    return m


def _symmetric(a: ArrayLike, name: str, d: int | None = None) -> Array:
    m = _matrix(a, name, (d, d))
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be square, got {m.shape}")
    scale = max(1.0, float(np.abs(m).max(initial=0.0)))
    if not np.allclose(m, m.T, atol=1e-8 * scale):
        raise ValueError(f"{name} must be symmetric")
    return (m + m.T) / 2


def _psd(a: ArrayLike, name: str, d: int | None = None) -> Array:
    m = _symmetric(a, name, d)
    scale = max(1.0, float(np.abs(m).max(initial=0.0)))
    low = float(np.linalg.eigvalsh(m)[0])
    if low < -1e-8 * scale:
        raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue {low:.3g})")
    return m


def _check_k(k: int, d: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= d:
        raise ValueError(f"k must be an integer in [1, {d}], got {k!r}")
    return int(k)


def _vector(v: ArrayLike, name: str) -> Array:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    return a


def _inv_sqrt(m: Array, name: str) -> Array:
    """Inverse square root of a symmetric positive-definite matrix."""
    w, v = np.linalg.eigh(m)
    if w[0] <= _TOL * max(1.0, w[-1]):
        raise ValueError(
            f"{name} is singular (smallest eigenvalue {w[0]:.3g}); the closed form needs it "
            "positive definite: add augmentation noise on every direction or a small ridge"
        )
    return (v / np.sqrt(w)) @ v.T


# ------------------------------------------------------------- closed forms


def reconstruction_solution(
    X: ArrayLike, X_mean: ArrayLike, Sigma: ArrayLike, k: int
) -> tuple[Array, Array]:
    """Optimal linear encoder/decoder of reconstruction SSL (Thm 3.1).

    Minimises ``mean_i E_tau ||x_i - D E tau(x_i)||^2``.

    Args:
        X: ``(n, d)`` reconstruction targets ``x_i``.
        X_mean: ``(n, d)`` mean views ``E_tau[tau(x_i)]``.
        Sigma: ``(d, d)`` augmentation covariance, averaged over samples.
        k: Latent dimension, ``1 <= k <= d``.

    Returns:
        ``(E, D)``: encoder ``(k, d)`` and decoder ``(d, k)``.

    Raises:
        ValueError: On bad shapes, ``k`` out of range, non-PSD ``Sigma`` or singular
            ``C = X̄'X̄/n + Sigma``.
    """
    X = _matrix(X, "X", (None, None))
    n, d = X.shape
    X_mean = _matrix(X_mean, "X_mean", (n, d))
    Sigma = _psd(Sigma, "Sigma", d)
    k = _check_k(k, d)
    c_inv_sqrt = _inv_sqrt(X_mean.T @ X_mean / n + Sigma, "C = X_mean'X_mean/n + Sigma")
    r, phi, pt = np.linalg.svd(X.T @ X_mean / n @ c_inv_sqrt)
    return pt[:k] @ c_inv_sqrt, r[:, :k] * phi[:k]


def joint_embedding_solution(S: ArrayLike, G: ArrayLike, k: int) -> Array:
    """Optimal linear joint-embedding encoder (Thm 3.2).

    Minimises ``mean_i E ||W tau1(x_i) - W tau2(x_i)||^2`` subject to ``W S W' = I``.

    Args:
        S: ``(d, d)`` view second moment ``mean_i E[tau(x_i) tau(x_i)']``.
        G: ``(d, d)`` ``mean_i E[tau(x_i)] E[tau(x_i)]'``. Only symmetry is required:
            unbiased estimates from few views (cross-view moments) can be slightly
            indefinite.
        k: Latent dimension, ``1 <= k <= d``.

    Returns:
        ``W`` of shape ``(k, d)`` with ``W S W' = I``.

    Raises:
        ValueError: On bad shapes, ``k`` out of range, non-PSD ``S``, asymmetric ``G``
            or singular ``S``.
    """
    S = _psd(S, "S")
    G = _symmetric(G, "G", S.shape[0])
    k = _check_k(k, S.shape[0])
    s_inv_sqrt = _inv_sqrt(S, "S")
    _, q = np.linalg.eigh(s_inv_sqrt @ G @ s_inv_sqrt)
    return q[:, ::-1][:, :k].T @ s_inv_sqrt


def reconstruction_loss(
    E: ArrayLike, D: ArrayLike, X: ArrayLike, X_mean: ArrayLike, Sigma: ArrayLike
) -> float:
    """Exact value of ``mean_i E_tau ||x_i - D E tau(x_i)||^2``.

    Args:
        E: ``(k, d)`` encoder.
        D: ``(d, k)`` decoder.
        X: ``(n, d)`` targets.
        X_mean: ``(n, d)`` mean views.
        Sigma: ``(d, d)`` augmentation covariance.

    Returns:
        The objective of Thm 3.1.
    """
    X = _matrix(X, "X", (None, None))
    n, d = X.shape
    E = _matrix(E, "E", (None, d))
    D = _matrix(D, "D", (d, E.shape[0]))
    A = D @ E
    resid = X - _matrix(X_mean, "X_mean", (n, d)) @ A.T
    return float(np.sum(resid**2) / n + np.trace(A @ _psd(Sigma, "Sigma", d) @ A.T))


def joint_embedding_loss(W: ArrayLike, S: ArrayLike, G: ArrayLike) -> float:
    """Exact value of ``mean_i E ||W tau1(x_i) - W tau2(x_i)||^2 = 2 tr(W (S - G) W')``.

    Args:
        W: ``(k, d)`` encoder.
        S: ``(d, d)`` view second moment.
        G: ``(d, d)`` second moment of the mean views.

    Returns:
        The invariance objective of Thm 3.2 (the constraint is not checked).
    """
    S = _psd(S, "S")
    W = _matrix(W, "W", (None, S.shape[0]))
    return float(2 * np.trace(W @ (S - _symmetric(G, "G", S.shape[0])) @ W.T))


# --------------------------------------------------------------- thresholds


def _threshold_terms(
    signal_var: ArrayLike, theta_var: ArrayLike, gamma_var: ArrayLike
) -> tuple[float, float, Array, Array]:
    """Validated ``eta, delta`` and the nuisance ``lambda^Gamma, lambda^Theta``."""
    s = _vector(signal_var, "signal_var")
    t = _vector(theta_var, "theta_var")
    g = _vector(gamma_var, "gamma_var")
    k = s.size
    if t.size != g.size or t.size < k:
        raise ValueError(
            f"theta_var and gamma_var must both have length d >= k={k}, got {t.size} and {g.size}"
        )
    if np.any(g[:k] != 0):
        raise ValueError("gamma_var must be zero on the first k (signal) components")
    eta, delta = _eta_delta(s, t)
    nuisance = g[k:] > 0
    return eta, delta, g[k:][nuisance], t[k:][nuisance]


def _eta_delta(s: Array, t: Array) -> tuple[float, float]:
    """``eta = min s/sqrt(s + t)`` and ``delta = min s/(s + t)`` over the signal."""
    if np.any(s <= 0):
        raise ValueError("signal_var must be strictly positive")
    if t.size < s.size:
        raise ValueError(f"theta_var needs at least k={s.size} entries, got {t.size}")
    t = t[: s.size]
    return float(np.min(s / np.sqrt(s + t))), float(np.min(s / (s + t)))


def alignment_thresholds(
    signal_var: ArrayLike, theta_var: ArrayLike, gamma_var: ArrayLike
) -> tuple[float, float]:
    """Minimal squared alignment ``alpha^2`` for subspace recovery (Props 4.3/4.4).

    All variances are per component in the shared eigenbasis; the first ``k``
    components are the signal, the nuisance data variance equals ``gamma_var``.

    Args:
        signal_var: ``(k,)`` signal variances ``kappa_i^2 / n``, strictly positive.
        theta_var: ``(d,)`` eigenvalues of ``Theta`` (augmentation on all components).
        gamma_var: ``(d,)`` eigenvalues of ``Gamma``, zero on the first ``k``.

    Returns:
        ``(alpha2_rc, alpha2_je)``: recovery iff ``alpha^2`` is strictly above the
        value. A negative value means no alignment is needed; ``-inf`` means there
        is no nuisance component at all.

    Raises:
        ValueError: On mismatched lengths, negative variances or nonzero
            ``gamma_var`` on the signal components.
    """
    eta, delta, g, t = _threshold_terms(signal_var, theta_var, gamma_var)
    if g.size == 0:
        return -np.inf, -np.inf
    rc = float(np.max(g / eta**2 - t / g - 1))
    je = float(np.max((1 - delta) / delta - t / g))
    return rc, je


def crossover_variance(signal_var: ArrayLike, theta_var: ArrayLike) -> float:
    """Nuisance variance ``eta^2 / delta`` where the two thresholds swap (Cor 4.5).

    Args:
        signal_var: ``(k,)`` signal variances.
        theta_var: ``(k,)`` or ``(d,)`` ``Theta`` eigenvalues (first ``k`` used).

    Returns:
        Reconstruction needs less alignment when every nuisance variance is below
        this value, joint-embedding when every one is above it.
    """
    eta, delta = _eta_delta(_vector(signal_var, "signal_var"), _vector(theta_var, "theta_var"))
    return eta**2 / delta


def preferred_family(
    signal_var: ArrayLike, theta_var: ArrayLike, gamma_var: ArrayLike, rtol: float = 1e-9
) -> str:
    """The family with the lower alignment threshold (Corollary 4.5).

    Args:
        signal_var: ``(k,)`` signal variances.
        theta_var: ``(d,)`` ``Theta`` eigenvalues.
        gamma_var: ``(d,)`` ``Gamma`` eigenvalues, zero on the first ``k``.
        rtol: Relative tolerance under which the thresholds count as equal.

    Returns:
        ``"reconstruction"``, ``"joint_embedding"`` or ``"tie"``.
    """
    rc, je = alignment_thresholds(signal_var, theta_var, gamma_var)
    if rc == je or abs(rc - je) <= rtol * max(abs(rc), abs(je)):
        return "tie"
    return "reconstruction" if rc < je else "joint_embedding"


# ------------------------------------------------------------------ metrics


def _row_basis(a: ArrayLike, name: str) -> Array:
    """Orthonormal basis ``(r, d)`` of the row space of ``a``."""
    m = _matrix(a, name, (None, None))
    _, sv, vt = np.linalg.svd(m, full_matrices=False)
    rank = int(np.sum(sv > _TOL * max(1.0, sv[0] if sv.size else 0.0)))
    if rank == 0:
        raise ValueError(f"{name} has an empty row space")
    return vt[:rank]


def _sqrt_psd(m: Array) -> Array:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def subspace_overlap(A: ArrayLike, B: ArrayLike, cov: ArrayLike | None = None) -> float:
    """Overlap of the row spaces of ``A`` and ``B``, in ``[0, 1]``.

    ``||Q_A Q_B'||_F^2 / max(r_A, r_B)`` with ``Q`` orthonormal row bases: the mean
    squared cosine of the principal angles, 1 iff the subspaces are equal.

    With ``cov``, the row spaces of ``A cov^{1/2}`` and ``B cov^{1/2}`` are compared
    instead: the mean squared canonical correlation between the features ``A x`` and
    ``B x`` for data of second moment ``cov``. Use it for encoders estimated from
    finite samples: a whitening encoder (``C^{-1/2}``) shrinks high-variance
    directions, so a tiny input-space coefficient can still carry most of a feature's
    variance and the unweighted angle would understate what the encoder captures.
    Both agree when ``B`` spans eigenvectors of ``cov`` and ``A`` does too.

    Args:
        A: ``(k_a, d)``, e.g. a learned encoder.
        B: ``(k_b, d)``, e.g. a reference basis (rows).
        cov: Optional ``(d, d)`` PSD data second moment.

    Returns:
        The overlap.
    """
    A = _matrix(A, "A", (None, None))
    B = _matrix(B, "B", (None, A.shape[1]))
    if cov is not None:
        root = _sqrt_psd(_psd(cov, "cov", A.shape[1]))
        A, B = A @ root, B @ root
    qa, qb = _row_basis(A, "A"), _row_basis(B, "B")
    return float(np.sum((qa @ qb.T) ** 2) / max(qa.shape[0], qb.shape[0]))


def subspace_distance(A: ArrayLike, B: ArrayLike, cov: ArrayLike | None = None) -> float:
    """``1 - subspace_overlap(A, B, cov)``; ``||P_A - P_B||_F^2 / (2k)`` at equal rank.

    Args:
        A: ``(k_a, d)`` matrix whose rows span the first subspace.
        B: ``(k_b, d)`` matrix whose rows span the second subspace.
        cov: Optional ``(d, d)`` data second moment (see :func:`subspace_overlap`).

    Returns:
        The distance in ``[0, 1]``: the fraction of dimensions not shared.
    """
    return max(0.0, 1.0 - subspace_overlap(A, B, cov))


def energy_captured(W: ArrayLike, cov: ArrayLike) -> float:
    """Share of ``tr(cov)`` inside the row space of ``W``: ``tr(P_W cov) / tr(cov)``.

    Args:
        W: ``(k, d)`` encoder.
        cov: ``(d, d)`` PSD covariance (e.g. of the data or of its nuisance part).

    Returns:
        A value in ``[0, 1]`` (0 when ``cov`` is zero).
    """
    cov = _psd(cov, "cov")
    q = _row_basis(W, "W")
    if q.shape[1] != cov.shape[0]:
        raise ValueError(f"W has {q.shape[1]} columns but cov is {cov.shape}")
    total = float(np.trace(cov))
    return float(np.trace(q @ cov @ q.T) / total) if total > 0 else 0.0
