"""Closed forms, thresholds and helpers of lit_ssl.diagnosis.theory (numpy only, seeded, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import sqrtm
from scipy.optimize import minimize

from lit_ssl.diagnosis.linear_model import LinearModel, moments_from_views
from lit_ssl.diagnosis.theory import (
    alignment_thresholds,
    crossover_variance,
    energy_captured,
    joint_embedding_loss,
    joint_embedding_solution,
    preferred_family,
    reconstruction_loss,
    reconstruction_solution,
    subspace_distance,
    subspace_overlap,
)

SIGNAL = np.array([1.0, 0.8, 0.6, 0.5])
THETA = 0.1


def _random_problem(seed: int, n: int = 40, d: int = 6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.linspace(2.0, 0.5, d)
    x_mean = x + 0.3 * rng.standard_normal((n, d))
    a = rng.standard_normal((d, d))
    sigma = a @ a.T / d + 0.05 * np.eye(d)
    return x, x_mean, sigma


def _model(scale: float, seed: int = 3) -> LinearModel:
    return LinearModel.random_basis(SIGNAL, scale * np.linspace(1.0, 0.4, 6), THETA, seed=seed)


# ----------------------------------------------------------- closed forms vs optimiser


@pytest.mark.parametrize("seed", [0, 1])
def test_reconstruction_matches_numerical_optimum(seed: int) -> None:
    x, x_mean, sigma = _random_problem(seed)
    n, d = x.shape
    k = 2
    m = x.T @ x_mean / n
    c = x_mean.T @ x_mean / n + sigma

    def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
        e, dec = p[: k * d].reshape(k, d), p[k * d :].reshape(d, k)
        grad_a = 2 * (dec @ e @ c - m)
        loss = reconstruction_loss(e, dec, x, x_mean, sigma)
        return loss, np.concatenate([(dec.T @ grad_a).ravel(), (grad_a @ e.T).ravel()])

    p0 = 0.1 * np.random.default_rng(seed).standard_normal(2 * k * d)
    res = minimize(fun, p0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "maxiter": 5000})
    e_num = res.x[: k * d].reshape(k, d)
    e_cf, d_cf = reconstruction_solution(x, x_mean, sigma, k)
    best = reconstruction_loss(e_cf, d_cf, x, x_mean, sigma)
    assert best <= res.fun + 1e-9
    assert res.fun == pytest.approx(best, rel=1e-7)
    assert subspace_distance(e_num, e_cf) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_embedding_matches_numerical_optimum(seed: int) -> None:
    x, x_mean, sigma = _random_problem(seed)
    n, d = x.shape
    k = 2
    g = x_mean.T @ x_mean / n
    s = g + sigma

    def whiten(v: np.ndarray) -> np.ndarray:  # any W with W S W' = I
        v = v.reshape(k, d)
        return np.real(np.linalg.inv(sqrtm(v @ s @ v.T))) @ v

    rng = np.random.default_rng(seed)
    runs = [
        minimize(
            lambda v: joint_embedding_loss(whiten(v), s, g),
            rng.standard_normal(k * d),
            method="BFGS",
            options={"gtol": 1e-10},
        )
        for _ in range(3)
    ]
    res = min(runs, key=lambda r: r.fun)
    w_cf = joint_embedding_solution(s, g, k)
    best = joint_embedding_loss(w_cf, s, g)
    assert best <= res.fun + 1e-9
    assert res.fun == pytest.approx(best, rel=1e-6)
    assert subspace_distance(whiten(res.x), w_cf) < 1e-4


def test_joint_embedding_satisfies_constraint_on_samples() -> None:
    model = _model(3.0)
    _, views = model.sample(4000, alpha=0.7, views=2, seed=5)
    mom = moments_from_views(views)
    w = joint_embedding_solution(mom.S, mom.G, model.k)
    np.testing.assert_allclose(w @ mom.S @ w.T, np.eye(model.k), atol=1e-10)
    z = views.reshape(-1, model.d) @ w.T  # the constraint as stated: mean of z z'
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(model.k), atol=1e-10)


def test_losses_match_monte_carlo() -> None:
    x, x_mean, sigma = _random_problem(2, n=8)
    e, dec = reconstruction_solution(x, x_mean, sigma, 2)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((20000, *x.shape)) @ np.linalg.cholesky(sigma).T
    mc = np.mean(np.sum((x - (x_mean + noise) @ (dec @ e).T) ** 2, axis=-1))
    assert mc == pytest.approx(reconstruction_loss(e, dec, x, x_mean, sigma), rel=0.02)

    model = _model(2.0)
    _, views = model.sample(3000, alpha=0.5, views=2, seed=1)
    mom = moments_from_views(views)
    w = rng.standard_normal((3, model.d))
    pairwise = np.mean(np.sum(((views[0] - views[1]) @ w.T) ** 2, axis=-1))
    assert pairwise == pytest.approx(joint_embedding_loss(w, mom.S, mom.G), rel=1e-10)


# --------------------------------------------------------------- thresholds


def _recovery_at(model: LinearModel, alpha2: float) -> tuple[float, float]:
    pop = model.population(np.sqrt(alpha2))
    e, _ = reconstruction_solution(pop.X, pop.X_mean, pop.Sigma, model.k)
    w = joint_embedding_solution(pop.S, pop.G, model.k)
    ref = model.signal_subspace
    return subspace_distance(e, ref), subspace_distance(w, ref)


@pytest.mark.parametrize("scale", [3.0, 20.0])
@pytest.mark.parametrize("family", [0, 1], ids=["reconstruction", "joint_embedding"])
def test_population_recovery_exactly_at_threshold(scale: float, family: int) -> None:
    model = _model(scale)
    threshold = model.thresholds()[family]
    assert threshold > 0
    below = _recovery_at(model, threshold * (1 - 1e-4))[family]
    above = _recovery_at(model, threshold * (1 + 1e-4))[family]
    assert below >= 1 / model.k - 1e-9  # at least one signal component lost
    assert above < 1e-9


def test_no_alignment_needed_when_thresholds_negative() -> None:
    model = _model(0.05)
    assert max(model.thresholds()) < 0
    assert max(_recovery_at(model, 0.0)) < 1e-9


def test_thresholds_closed_form_values() -> None:
    gamma = np.r_[np.zeros(2), 4.0, 1.0]
    theta = np.r_[0.2, 0.5, 0.4, 0.1]
    s = np.array([1.0, 2.0])
    eta2 = min(1 / 1.2, 4 / 2.5)
    delta = min(1 / 1.2, 2 / 2.5)
    rc, je = alignment_thresholds(s, theta, gamma)
    assert rc == pytest.approx(max(4 / eta2 - 0.1 - 1, 1 / eta2 - 0.1 - 1))
    assert je == pytest.approx((1 - delta) / delta - 0.1)
    assert alignment_thresholds(s, theta, np.zeros(4)) == (-np.inf, -np.inf)


def test_sampled_moments_recover_above_threshold() -> None:
    model = _model(3.0)
    alpha2 = 1.5 * max(model.thresholds())
    x, views = model.sample(20000, alpha=np.sqrt(alpha2), views=2, seed=7)
    mom = moments_from_views(views, targets=x)
    e, _ = reconstruction_solution(mom.X, mom.X_mean, mom.Sigma, model.k)
    w = joint_embedding_solution(mom.S, mom.G, model.k)
    assert subspace_distance(e, model.signal_subspace) < 0.01
    assert subspace_distance(w, model.signal_subspace) < 0.01


@pytest.mark.parametrize("theta", [THETA, np.r_[[0.3] * 4, [0.05] * 6]])
def test_corollary_4_5_direction(theta: float | np.ndarray) -> None:
    def model(top: float) -> LinearModel:
        return LinearModel(SIGNAL, top * np.linspace(1.0, 0.4, 6), theta)

    cross = crossover_variance(SIGNAL, model(1.0).theta_var)
    assert cross == pytest.approx(0.5)  # weakest signal variance when it sets eta and delta
    for top, family in ((0.6 * cross, "reconstruction"), (1.5 * cross, "joint_embedding")):
        m = model(top)
        rc, je = m.thresholds()
        assert (rc < je) == (family == "reconstruction")
        assert preferred_family(m.signal_var, m.theta_var, m.gamma_var) == family
    # the JE threshold saturates at (1 - delta) / delta while RC grows with magnitude
    delta = np.min(SIGNAL / (SIGNAL + m.theta_var[:4]))
    rc, je = model(1e4).thresholds()
    assert je == pytest.approx((1 - delta) / delta, rel=1e-3) and rc > 1e4
    if np.ndim(theta):  # augmentations that also hit the signal: JE needs alignment, RC none
        rc, je = model(0.6 * cross).thresholds()
        assert rc < 0 < je
        rc_err, je_err = _recovery_at(model(0.6 * cross), 0.0)
        assert rc_err < 1e-9 and je_err >= 0.25 - 1e-9


# ------------------------------------------------------------------ metrics


def test_subspace_metrics() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 7))
    mix = rng.standard_normal((3, 3))
    assert subspace_overlap(mix @ a, a) == pytest.approx(1.0)
    assert subspace_distance(mix @ a, a) == pytest.approx(0.0, abs=1e-12)
    eye = np.eye(4)
    assert subspace_distance(eye[:2], eye[2:]) == pytest.approx(1.0)
    assert subspace_distance(eye[:2], eye[1:3]) == pytest.approx(0.5)
    cov = np.diag([3.0, 1.0, 0.0, 0.0])
    assert energy_captured(eye[:1] * 5, cov) == pytest.approx(0.75)
    assert energy_captured(eye[:1], np.zeros((4, 4))) == 0.0


def test_weighted_overlap_is_mean_squared_canonical_correlation() -> None:
    rng = np.random.default_rng(1)
    a, b, m = rng.standard_normal((2, 6)), rng.standard_normal((2, 6)), rng.standard_normal((6, 6))
    cov = m @ m.T
    inv_sqrt = lambda c: np.real(np.linalg.inv(sqrtm(c)))  # noqa: E731
    cca = inv_sqrt(a @ cov @ a.T) @ a @ cov @ b.T @ inv_sqrt(b @ cov @ b.T)
    expected = np.mean(np.linalg.svd(cca, compute_uv=False) ** 2)
    assert subspace_overlap(a, b, cov) == pytest.approx(expected)
    assert subspace_overlap(a, b, np.eye(6)) == pytest.approx(subspace_overlap(a, b))


def test_reconstruction_args_minimise_empirical_multiview_objective() -> None:
    model = _model(3.0)
    x, views = model.sample(500, alpha=1.0, views=3, seed=2)
    mom = moments_from_views(views, targets=x)
    np.testing.assert_allclose(mom.reconstruction_args()[2], mom.Sigma * 2 / 3, atol=1e-9)
    e, dec = reconstruction_solution(*mom.reconstruction_args(), 2)

    def empirical(e: np.ndarray, dec: np.ndarray) -> float:
        return float(np.mean(np.sum((x - views @ (dec @ e).T) ** 2, axis=-1)))

    # the exact multi-view optimum: no perturbation of (E, D) does better
    base = empirical(e, dec)
    rng = np.random.default_rng(0)
    for _ in range(20):
        de, dd = 1e-3 * rng.standard_normal(e.shape), 1e-3 * rng.standard_normal(dec.shape)
        assert empirical(e + de, dec + dd) >= base - 1e-12
    pop = model.population(0.5)
    assert np.allclose(pop.Sigma, pop.reconstruction_args()[2])


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x, s: reconstruction_solution(x, x[:-1], s, 2), "X_mean must have shape"),
        (lambda x, s: reconstruction_solution(x, x, s[:-1, :-1], 2), "Sigma must have shape"),
        (lambda x, s: reconstruction_solution(x, x, s, 0), "k must be an integer"),
        (lambda x, s: reconstruction_solution(x, x, s, 7), "k must be an integer"),
        (lambda x, s: reconstruction_solution(x, x, s, 1.5), "k must be an integer"),
        (lambda x, s: reconstruction_solution(x, x, -s, 2), "positive semi-definite"),
        (lambda x, s: reconstruction_solution(x, x, s + np.triu(s, 1), 2), "symmetric"),
        (lambda x, s: reconstruction_solution(0 * x, 0 * x, 0 * s, 2), "singular"),
        (lambda x, s: reconstruction_solution(x * np.nan, x, s, 2), "NaN"),
        (lambda x, s: joint_embedding_solution(s, s, 9), "k must be an integer"),
        (lambda x, s: joint_embedding_solution(s, s[:2, :2], 2), "G must have shape"),
        (lambda x, s: joint_embedding_solution(-s, s, 2), "positive semi-definite"),
        (lambda x, s: joint_embedding_solution(x, x, 2), "must be square"),
    ],
)
def test_closed_forms_reject_bad_input(call, match: str) -> None:
    x, _, sigma = _random_problem(0)
    with pytest.raises(ValueError, match=match):
        call(x, sigma)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([1.0], [0.1, 0.1], [0.5, 1.0]), "zero on the first k"),
        (([1.0], [0.1, 0.1], [0.0, 1.0, 2.0]), "same length|length d"),
        (([1.0, 1.0, 1.0], [0.1], [0.0]), "length d"),
        (([0.0], [0.1, 0.1], [0.0, 1.0]), "strictly positive"),
        (([1.0], [-0.1, 0.1], [0.0, 1.0]), "non-negative"),
        (([[1.0]], [0.1, 0.1], [0.0, 1.0]), "1-D"),
    ],
)
def test_thresholds_reject_bad_input(args, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        alignment_thresholds(*args)
