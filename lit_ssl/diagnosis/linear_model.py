"""The paper's linear signal + nuisance model, and second moments of augmented views.

Data ``x = U z`` with independent ``z_i ~ N(0, v_i)``: the first ``k`` components of
the orthogonal basis ``U`` carry the signal (variances ``signal_var``), the rest the
nuisance (variances ``nuisance_var``). Views are ``tau(x) = x + theta + alpha * gamma``
with ``theta ~ N(0, U diag(theta_var) U')`` and ``gamma ~ N(0, Gamma)``, ``Gamma`` the
nuisance covariance (alignment ``alpha``: how well augmentations re-sample it).
:meth:`LinearModel.population` gives the exact moments that feed
:mod:`lit_ssl.diagnosis.theory`; :meth:`LinearModel.sample` and :func:`moments_from_views`
give finite-sample ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lit_ssl.diagnosis.theory import alignment_thresholds

Array = NDArray[np.float64]

__all__ = ["LinearModel", "Moments", "moments_from_views"]


@dataclass(frozen=True)
class Moments:
    """Inputs of the closed forms (Thms 3.1/3.2).

    Attributes:
        X: ``(n, d)`` targets.
        X_mean: ``(n, d)`` mean views ``E_tau[tau(x_i)]``.
        Sigma: ``(d, d)`` augmentation covariance.
        S: ``(d, d)`` view second moment.
        G: ``(d, d)`` second moment of the mean views.
    """

    X: Array
    X_mean: Array
    Sigma: Array
    S: Array
    G: Array

    def reconstruction_args(self) -> tuple[Array, Array, Array]:
        """``(X, X_mean, Sigma')`` for :func:`lit_ssl.diagnosis.theory.reconstruction_solution`.

        ``Sigma' = S - X̄'X̄/n`` makes ``C = X̄'X̄/n + Sigma'`` equal ``S``. With exact
        moments ``Sigma' = Sigma``; with ``m`` sampled views the mean view carries
        ``Sigma/m`` of augmentation noise, and this choice gives the exact minimiser of
        the empirical multi-view objective ``mean_{i,v} ||x_i - D E v_i||^2`` instead
        of counting that noise twice.
        """
        return self.X, self.X_mean, self.S - self.X_mean.T @ self.X_mean / len(self.X_mean)


def moments_from_views(views: ArrayLike, targets: ArrayLike | None = None) -> Moments:
    """Estimate the closed-form inputs from ``m >= 2`` views of ``n`` samples.

    ``Sigma`` is the within-sample covariance (``ddof=1``; for two views
    ``E[(v1 - v2)(v1 - v2)'] / 2``), ``S`` the mean of ``v v'`` and ``G = S - Sigma``
    (unbiased; equals the cross-view moment for two views, so it may be slightly
    indefinite).

    Args:
        views: ``(m, n, d)`` views.
        targets: ``(n, d)`` reconstruction targets; defaults to the mean view.

    Returns:
        The estimated :class:`Moments`.
    """
    v = np.asarray(views, dtype=np.float64)
    if v.ndim != 3 or v.shape[0] < 2 or v.shape[1] < 1:
        raise ValueError(f"views must have shape (m >= 2, n, d), got {v.shape}")
    m, n, _ = v.shape
    mean = v.mean(axis=0)
    dev = (v - mean).reshape(m * n, -1)
    sigma = dev.T @ dev / ((m - 1) * n)
    flat = v.reshape(m * n, -1)
    s = flat.T @ flat / (m * n)
    x = mean if targets is None else np.asarray(targets, dtype=np.float64)
    if x.shape != mean.shape:
        raise ValueError(f"targets must have shape {mean.shape}, got {x.shape}")
    return Moments(X=x, X_mean=mean, Sigma=sigma, S=s, G=s - sigma)


def _nonneg(v: ArrayLike, name: str) -> Array:
    a = np.atleast_1d(np.asarray(v, dtype=np.float64))
    if a.ndim != 1 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be a 1-D array of finite non-negative values")
    return a


@dataclass(frozen=True)
class LinearModel:
    """Signal + nuisance linear model with aligned augmentations.

    Attributes:
        signal_var: ``(k,)`` signal variances (``kappa_i^2 / n``), strictly positive.
        nuisance_var: ``(d - k,)`` nuisance variances (the eigenvalues of ``Gamma``).
        theta_var: ``(d,)`` or scalar eigenvalues of ``Theta`` (augmentation on all
            components).
        basis: ``(d, d)`` orthogonal ``U`` (columns = components); identity if None.
    """

    signal_var: Array
    nuisance_var: Array
    theta_var: Array | float = 0.0
    basis: Array | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        s = _nonneg(self.signal_var, "signal_var")
        g = _nonneg(self.nuisance_var, "nuisance_var")
        if np.any(s <= 0):
            raise ValueError("signal_var must be strictly positive")
        d = s.size + g.size
        t = np.broadcast_to(_nonneg(self.theta_var, "theta_var"), (d,)).copy()
        u = np.eye(d) if self.basis is None else np.asarray(self.basis, dtype=np.float64)
        if u.shape != (d, d) or not np.allclose(u.T @ u, np.eye(d), atol=1e-8):
            raise ValueError(f"basis must be an orthogonal ({d}, {d}) matrix")
        for name, value in (("signal_var", s), ("nuisance_var", g), ("theta_var", t)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "basis", u)

    @classmethod
    def random_basis(
        cls,
        signal_var: ArrayLike,
        nuisance_var: ArrayLike,
        theta_var: ArrayLike | float = 0.0,
        seed: int = 0,
    ) -> LinearModel:
        """Same model in a random orthogonal basis (Haar, seeded)."""
        d = np.size(signal_var) + np.size(nuisance_var)
        q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
        return cls(signal_var, nuisance_var, theta_var, q * np.sign(np.diag(r)))

    @property
    def k(self) -> int:
        """Number of signal components."""
        return self.signal_var.size

    @property
    def d(self) -> int:
        """Ambient dimension."""
        return self.basis.shape[0]

    @property
    def gamma_var(self) -> Array:
        """``(d,)`` eigenvalues of ``Gamma`` (zero on the signal)."""
        return np.concatenate([np.zeros(self.k), self.nuisance_var])

    @property
    def data_var(self) -> Array:
        """``(d,)`` data variance per component."""
        return np.concatenate([self.signal_var, self.nuisance_var])

    @property
    def signal_subspace(self) -> Array:
        """``(k, d)`` orthonormal rows spanning the signal."""
        return self.basis[:, : self.k].T

    def covariance(self, var: ArrayLike) -> Array:
        """``U diag(var) U'`` for per-component variances ``var``."""
        return (self.basis * np.asarray(var, dtype=np.float64)) @ self.basis.T

    def thresholds(self) -> tuple[float, float]:
        """``(alpha2_rc, alpha2_je)`` of :func:`lit_ssl.diagnosis.theory.alignment_thresholds`."""
        return alignment_thresholds(self.signal_var, self.theta_var, self.gamma_var)

    def population(self, alpha: float) -> Moments:
        """Exact moments (infinitely many views; ``X'X/n`` equals the data covariance).

        ``X = X_mean = sqrt(d) U diag(sqrt(v)) U'`` (``n = d`` rows) so that
        ``X'X / n = G``; ``Sigma = U diag(theta + alpha^2 gamma) U'``; ``S = G + Sigma``.
        """
        g = self.covariance(self.data_var)
        sigma = self.covariance(self.theta_var + alpha**2 * self.gamma_var)
        x = np.sqrt(self.d) * self.covariance(np.sqrt(self.data_var))
        return Moments(X=x, X_mean=x, Sigma=sigma, S=g + sigma, G=g)

    def sample(
        self, n: int, alpha: float, views: int = 2, seed: int | None = 0
    ) -> tuple[Array, Array]:
        """Draw ``n`` samples and ``views`` augmented views of each.

        Returns:
            ``(x, v)``: data ``(n, d)`` and views ``(views, n, d)``.
        """
        if n < 1 or views < 1:
            raise ValueError("n and views must be positive")
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal((n, self.d)) * np.sqrt(self.data_var)) @ self.basis.T
        noise_std = np.sqrt(self.theta_var + alpha**2 * self.gamma_var)
        noise = rng.standard_normal((views, n, self.d)) * noise_std
        return x, x + noise @ self.basis.T
