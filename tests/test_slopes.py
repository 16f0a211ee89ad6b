"""Random slopes' numerical core: statistics, exact densities, REML/ML against oracles and lme4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from varcomp.models import shares, slopes_estimate
from varcomp.models.errors import DataError
from varcomp.models.slopes_estimate import (
    cluster_log_density,
    deviance,
    fit_slopes,
    lambda_from_theta,
    log_density,
)
from varcomp.models.slopes_stats import SlopeStatsAccumulator, slope_stats

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "reference" / "lmer_slopes.json").read_text())["fits"]
SIZES = [1, 4, 7, 2, 9, 3, 5]  # unequal, with a cluster of one row


def simulate(q: int, k: int = 2, sizes=SIZES, seed: int = 0):
    """Rows (y, X, Z, codes) and parameters (beta, V, sigma) of a q-column slopes model."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(len(sizes)), sizes)
    n = len(codes)
    x = rng.normal(size=(n, max(q, k)))
    Z = np.column_stack([np.ones(n), x[:, : q - 1]])
    X = np.column_stack([np.ones(n), x[:, 1 : k] + 0.5])
    A = rng.normal(size=(q, q))
    V = A @ A.T + 0.3 * np.eye(q)
    beta = rng.normal(size=k)
    sigma = 0.8
    b = rng.multivariate_normal(np.zeros(q), V, size=len(sizes))
    y = X @ beta + (Z * b[codes]).sum(axis=1) + sigma * rng.normal(size=n)
    return y, X, Z, codes, beta, V, sigma


def dense_cov(Z, codes, V, sigma):
    """Cov(y) = Z V Z' within clusters (block diagonal) + sigma^2 I, built row by row."""
    n = len(codes)
    same = codes[:, None] == codes[None, :]
    return np.where(same, Z @ V @ Z.T, 0.0) + sigma**2 * np.eye(n)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


# ---- statistics ---------------------------------------------------------------------------------

def test_statistics_equal_per_cluster_sums():
    y, X, Z, codes, *_ = simulate(3, k=3)
    s = slope_stats(y, X, Z, codes)
    for j in range(len(SIZES)):
        m = codes == j
        np.testing.assert_allclose(s.ZtZ[j], Z[m].T @ Z[m], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(s.ZtX[j], Z[m].T @ X[m], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(s.Zty[j], Z[m].T @ y[m], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(s.XtX_l[j], X[m].T @ X[m], rtol=1e-13, atol=1e-13)
        assert s.n_l[j] == SIZES[j]
    np.testing.assert_allclose(s.XtX, X.T @ X, rtol=1e-13)
    np.testing.assert_allclose(s.Xty, X.T @ y, rtol=1e-13)
    assert s.yty == pytest.approx(y @ y, rel=1e-13) and s.n == len(y)


def test_chunks_and_merged_partitions_equal_in_memory():
    y, X, Z, codes, *_ = simulate(2, sizes=[3, 8, 1, 12, 5, 6, 2, 9])
    labels = np.array([f"s{c:02d}" for c in codes])
    whole = slope_stats(y, X, Z, codes)
    order = np.random.default_rng(1).permutation(len(y))  # clusters spread over chunks
    chunks = np.array_split(order, 5)
    acc = SlopeStatsAccumulator()
    for idx in chunks:
        acc.add(y[idx], X[idx], Z[idx], labels[idx])
    # a Dask-like tree: each partition's accumulator, merged pairwise
    parts = [SlopeStatsAccumulator().add(y[i], X[i], Z[i], labels[i]) for i in chunks]
    tree = parts[0].merge(parts[1]).merge(parts[2].merge(parts[3]).merge(parts[4]))
    for got in (acc.result(), tree.result()):
        assert list(got.levels) == sorted(set(labels))
        for name in ("ZtZ", "ZtX", "Zty", "XtX_l", "Xty_l", "yty_l"):
            np.testing.assert_allclose(getattr(got, name), getattr(whole, name), rtol=1e-12,
                                       atol=1e-12)
        np.testing.assert_array_equal(got.n_l, whole.n_l)


@pytest.mark.parametrize("bad, message", [
    (lambda y, X, Z, c: (y[:-1], X, Z, c), "one length"),
    (lambda y, X, Z, c: (np.where(np.arange(len(y)) == 2, np.nan, y), X, Z, c), "finite"),
    (lambda y, X, Z, c: (y, X, Z, c - 1), "non-negative"),
])
def test_statistics_refuse_bad_arrays(bad, message):
    y, X, Z, codes, *_ = simulate(2)
    with pytest.raises(DataError, match=message):
        slope_stats(*bad(y, X, Z, codes))


# ---- exact densities ----------------------------------------------------------------------------

@pytest.mark.parametrize("q", [1, 2, 3])
def test_log_density_equals_stacked_mvnormal(q):
    y, X, Z, codes, beta, V, sigma = simulate(q, seed=q)
    s = slope_stats(y, X, Z, codes)
    want = sps.multivariate_normal(X @ beta, dense_cov(Z, codes, V, sigma)).logpdf(y)
    assert rel(log_density(s, beta, V, sigma), want) < 1e-10
    per = cluster_log_density(s, beta, V, sigma)
    for j in range(len(SIZES)):
        m = codes == j
        one = sps.multivariate_normal(X[m] @ beta, Z[m] @ V @ Z[m].T + sigma**2 * np.eye(m.sum()))
        assert rel(per[j], one.logpdf(y[m])) < 1e-10


def test_log_density_with_a_singular_V():
    y, X, Z, codes, beta, V, sigma = simulate(2, seed=5)
    u = np.array([1.0, -0.4])
    V = 1.3 * np.outer(u, u)  # correlation -1: rank one
    s = slope_stats(y, X, Z, codes)
    want = sps.multivariate_normal(X @ beta, dense_cov(Z, codes, V, sigma)).logpdf(y)
    assert rel(log_density(s, beta, V, sigma), want) < 1e-10


def _no_cluster_logdet(stats, lam):
    C = np.linalg.cholesky(lam.T @ stats.ZtZ @ lam + np.eye(stats.q))
    return C, np.zeros(stats.L)


@pytest.mark.parametrize("patch", [
    ("_factor", _no_cluster_logdet),
    ("_relative_factor", lambda V, sigma: np.linalg.cholesky(V / sigma**2).T),
])
def test_broken_density_fails_the_oracle(monkeypatch, patch):
    y, X, Z, codes, beta, V, sigma = simulate(2, seed=2)
    s = slope_stats(y, X, Z, codes)
    want = sps.multivariate_normal(X @ beta, dense_cov(Z, codes, V, sigma)).logpdf(y)
    assert rel(log_density(s, beta, V, sigma), want) < 1e-10
    monkeypatch.setattr(slopes_estimate, *patch)
    assert rel(log_density(s, beta, V, sigma), want) > 1e-6


# ---- REML / ML criteria -------------------------------------------------------------------------

def dense_criterion(y, X, Z, codes, lam, reml):
    """lme4's REMLcrit / deviance at Lambda from the dense marginal covariance, sigma profiled."""
    n, k = X.shape
    W = dense_cov(Z, codes, lam @ lam.T, 1.0)  # Z Lambda Lambda' Z' + I
    Wi = np.linalg.inv(W)
    beta = np.linalg.solve(X.T @ Wi @ X, X.T @ Wi @ y)
    r = y - X @ beta
    r2 = r @ Wi @ r
    if not reml:
        s2 = r2 / n
        return -2.0 * sps.multivariate_normal(X @ beta, s2 * W).logpdf(y)
    s2 = r2 / (n - k)
    Vy = s2 * W
    return (np.linalg.slogdet(Vy)[1] + np.linalg.slogdet(X.T @ np.linalg.inv(Vy) @ X)[1]
            + r @ np.linalg.solve(Vy, r) + (n - k) * np.log(2 * np.pi))


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("q, correlated", [(1, True), (2, True), (3, True), (2, False)])
def test_criterion_equals_dense_computation(q, correlated, reml):
    y, X, Z, codes, *_ = simulate(q, seed=10 + q)
    s = slope_stats(y, X, Z, codes)
    theta = np.random.default_rng(q).uniform(0.2, 1.5, size=q * (q + 1) // 2 if correlated else q)
    lam = lambda_from_theta(theta, q, correlated)
    want = dense_criterion(y, X, Z, codes, lam, reml)
    assert rel(deviance(s, theta, reml=reml, correlated=correlated), want) < 1e-10


def test_reml_without_the_fixed_effects_logdet_fails_the_oracle(monkeypatch):
    y, X, Z, codes, *_ = simulate(2, seed=3)
    s = slope_stats(y, X, Z, codes)
    theta = np.array([0.9, -0.3, 0.5])
    want = dense_criterion(y, X, Z, codes, lambda_from_theta(theta, 2), True)
    solve = slopes_estimate._solve_beta
    monkeypatch.setattr(slopes_estimate, "_solve_beta", lambda *a: (*solve(*a)[:2], 0.0))
    assert rel(deviance(s, theta, reml=True), want) > 1e-6


# ---- lme4 ---------------------------------------------------------------------------------------

def reference_stats(name: str):
    if name.startswith("sleepstudy"):
        d = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
        y, x, g = d["Reaction"], d["Days"], d["Subject"]
    elif name == "orthodont":
        d = pd.read_csv(ROOT / "data" / "orthodont.csv")
        y, x, g = d["distance"], d["age"], d["Subject"]
    else:
        d = pd.read_csv(ROOT / "data" / "slopes_boundary.csv")
        y, x, g = d["y"], d["x"], d["g"]
    x = x.to_numpy(np.float64)
    cols = [np.ones_like(x), x] + ([x**2] if "quadratic" in name else [])
    M = np.column_stack(cols)
    _, codes = np.unique(g.to_numpy(), return_inverse=True)
    return slope_stats(y.to_numpy(np.float64), M, M, codes)


@pytest.mark.parametrize("ref", REFERENCE, ids=[f"{r['name']}-{r['method']}" for r in REFERENCE])
def test_equals_lme4(ref):
    s = reference_stats(ref["name"])
    correlated = "uncorrelated" not in ref["name"]
    est = fit_slopes(s, method=ref["method"], correlated=correlated, group=ref["group"],
                     coefficients=ref["coefficients"], fixed_names=list(ref["beta"]))
    np.testing.assert_allclose(est.criterion, ref["criterion"], rtol=1e-4)
    np.testing.assert_allclose(est.sigma, ref["sigma"], rtol=1e-4)
    np.testing.assert_allclose(est.beta, list(ref["beta"].values()), rtol=1e-4)
    sd_ref = np.asarray(ref["sd"])
    zero = sd_ref < 1e-6 * ref["sigma"]  # lme4 at 0 (it may stop at 1e-10)
    np.testing.assert_allclose(est.sd[~zero], sd_ref[~zero], rtol=1e-4)
    assert (est.sd[zero] < 1e-6 * est.sigma).all()
    corr_ref = np.asarray(ref["corr"], dtype=np.float64)
    np.testing.assert_allclose(est.corr[np.ix_(~zero, ~zero)], corr_ref[np.ix_(~zero, ~zero)],
                               rtol=1e-4)
    assert est.singular == ref["singular"]
    assert any(est.boundary.values()) == ref["singular"]
    named = est.as_dict()
    assert named[f"tau[{ref['group']}|{ref['coefficients'][0]}]"] == est.sd[0]
    if correlated:
        a, b = ref["coefficients"][:2]
        assert named[f"rho[{ref['group']}|{a},{b}]"] == est.corr[0, 1]


def test_boundary_flags_name_the_parameter():
    est = fit_slopes(reference_stats("boundary"), method="reml", group="g",
                     coefficients=["Intercept", "x"])
    assert est.boundary == {"tau[g|Intercept]": False, "tau[g|x]": False,
                            "rho[g|Intercept,x]": True}
    est = fit_slopes(reference_stats("boundary"), method="ml", correlated=False, group="g",
                     coefficients=["Intercept", "x"])
    assert est.boundary == {"tau[g|Intercept]": False, "tau[g|x]": True}


# ---- shares with slopes -------------------------------------------------------------------------

def test_icc_curve_and_mean_variance_vpc_equal_their_definitions():
    rng = np.random.default_rng(7)
    S, q, G, N = 5, 2, 4, 30
    A = rng.normal(size=(S, q, q))
    V = A @ np.swapaxes(A, 1, 2)
    sigma = rng.uniform(0.5, 2.0, size=S)
    grid = np.column_stack([np.ones(G), np.linspace(0, 9, G)])
    got = shares.icc_curve(V, sigma**2, grid)
    rows = np.column_stack([np.ones(N), rng.uniform(0, 9, N)])
    vpc = shares.vpc_mean_variance(V, sigma**2, rows)
    assert got.shape == (S, G) and vpc.shape == (S,)
    for s in range(S):
        for g in range(G):
            t2 = sum(grid[g, i] * V[s, i, j] * grid[g, j] for i in range(q) for j in range(q))
            assert got[s, g] == pytest.approx(t2 / (t2 + sigma[s] ** 2), rel=1e-12)
        mean_t2 = np.mean([rows[i] @ V[s] @ rows[i] for i in range(N)])
        assert vpc[s] == pytest.approx(mean_t2 / (mean_t2 + sigma[s] ** 2), rel=1e-12)
