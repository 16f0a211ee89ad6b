"""AGQ of GLMM clusters against brute-force integration; its exact gradient; sufficient stats."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, optimize
from scipy.special import logsumexp

from varcomp.models.glm_density import logp
from varcomp.models.quadrature import (
    DEFAULT_K,
    cluster_logp,
    cluster_logp_draws,
    cluster_stats,
    sufficient_logp,
)

FAMILIES = [("binomial", "logit"), ("binomial", "probit"), ("poisson", "log")]


def brute(y, n, eta, tau, family, link):
    """log int exp f(u) du by scipy quad (epsrel 1e-13), stabilised at the mode found by Brent."""

    def f(u):
        return (
            logp(y, n, eta + u, family, link).sum()
            - 0.5 * u * u / tau**2
            - np.log(tau)
            - 0.5 * np.log(2 * np.pi)
        )

    m = optimize.minimize_scalar(lambda u: -f(u), bracket=(-1.0, 1.0)).x
    fm = f(m)
    val, _ = integrate.quad(
        lambda u: np.exp(f(u) - fm), -np.inf, np.inf, epsabs=0, epsrel=1e-13, limit=500
    )
    return fm + np.log(val)


def uncapped(y, n, eta, tau, family, link):
    """A deliberately broken rule: the trapezoid's step from the curvature at the mode alone.

    Step 0.5 s, without the cap in u (Gauss-Hermite's premise that the mode's curvature sets the
    scale); 401 nodes centred at the mode, so only the step is wrong.
    """
    r = cluster_logp(y, n, eta, np.zeros(y.size, int), tau, family, link, 1)
    h = 0.5 * r.scale[0]
    z = r.mode[0] + h * np.arange(-200, 201)

    def f(u):
        return (
            logp(y, n, eta + u, family, link).sum()
            - 0.5 * u * u / tau**2
            - np.log(tau)
            - 0.5 * np.log(2 * np.pi)
        )

    return logsumexp(np.log(h) + np.array([f(u) for u in z]))


def cluster(rng, family, size, kind):
    n = rng.integers(1, 6, size).astype(float) if family == "binomial" else np.ones(size)
    eta = rng.normal(-0.5, 0.7, size)
    if kind == "zero":
        y = np.zeros(size)
    elif kind == "one":
        y = n.copy()
    elif family == "binomial":
        y = rng.binomial(n.astype(int), 0.4).astype(float)
    else:
        y = rng.poisson(2.0, size).astype(float)
    return y, n, eta


# Measured (DEVELOPERS.md): the default trapezoid's worst error over this grid is 2e-11 (tau 2);
# Gauss-Hermite with 25 nodes reached 1.1e-7 at tau 1, 3.3e-5 at tau 2 and 1.8e-3 at tau 5.
@pytest.mark.parametrize("family,link", FAMILIES)
@pytest.mark.parametrize("tau", [0.05, 0.3, 0.5, 1.0, 2.0, 5.0])
def test_default_rule_equals_brute_force(family, link, tau):
    rng = np.random.default_rng(11)
    broken = 0.0
    for size in (1, 2, 5, 20, 200):
        for kind in ("random", "zero", "one"):
            if family == "poisson" and kind == "one":
                continue
            y, n, eta = cluster(rng, family, size, kind)
            b = brute(y, n, eta, tau, family, link)
            a = cluster_logp(y, n, eta, np.zeros(size, int), tau, family, link).logp[0]
            assert abs(a - b) < 1e-8, (size, kind, a, b)  # 1e-8 relative on the density scale
            if tau == 5.0:
                broken = max(broken, abs(uncapped(y, n, eta, tau, family, link) - b))
    if tau == 5.0:  # the same check catches a step set by the mode's curvature (4e-4 .. 1e-5)
        assert broken > 1e-6


@pytest.mark.parametrize("family,link", FAMILIES)
@pytest.mark.parametrize("K,tau", [(1, 0.9), (5, 0.9), (DEFAULT_K, 0.9), (DEFAULT_K, 3.0)])
def test_gradient_equals_finite_differences(family, link, K, tau):
    rng = np.random.default_rng(3)
    N = 60
    codes = rng.integers(0, 6, N)
    n = rng.integers(1, 5, N).astype(float)
    eta = rng.normal(-0.3, 0.8, N)
    y = (rng.binomial(n.astype(int), 0.4) if family == "binomial" else rng.poisson(1.5, N)).astype(
        float
    )
    h = 1e-6
    r = cluster_logp(y, n, eta, codes, tau, family, link, K, grad=True)

    def total(e, t):
        return cluster_logp(y, n, e, codes, t, family, link, K).logp

    fd_tau = (total(eta, tau + h) - total(eta, tau - h)) / (2 * h)
    v = rng.normal(size=N)
    fd_eta = (total(eta + h * v, tau).sum() - total(eta - h * v, tau).sum()) / (2 * h)
    assert np.max(np.abs(fd_tau - r.d_tau)) < 1e-7
    assert abs(fd_eta - r.d_eta @ v) < 1e-7


@pytest.mark.parametrize("family,link", FAMILIES)
def test_sufficient_statistics_equal_rows(family, link):
    rng = np.random.default_rng(5)
    L = 40
    codes = np.repeat(np.arange(L), rng.integers(1, 8, L))
    N = codes.size
    n = rng.integers(1, 4, N).astype(float)
    ec = rng.choice([-1.0, 0.5], L)
    off = rng.normal(0, 0.3, N) if family == "poisson" else None
    y = (rng.binomial(n.astype(int), 0.3) if family == "binomial" else rng.poisson(1.0, N)).astype(
        float
    )
    eta = ec[codes] + (off if off is not None else 0.0)
    r = cluster_logp(y, n, eta, codes, 0.7, family, link, grad=True)
    total, d_tau, d_eta = sufficient_logp(
        cluster_stats(y, n, codes, family, link, offset=off), ec, 0.7, family, link, grad=True
    )
    assert abs(r.logp.sum() - total) < 1e-10
    assert abs(r.d_tau.sum() - d_tau) < 1e-10
    assert np.max(np.abs(np.bincount(codes, r.d_eta) - d_eta)) < 1e-10
    # without the constants the totals differ by exactly the rows' normalising constants
    bare = cluster_logp(y, n, eta, codes, 0.7, family, link, const=False).logp.sum()
    assert abs(bare - r.logp.sum()) > 1e-3


def test_draws_equal_single_calls():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 7, 50)
    n = np.full(50, 3.0)
    y = rng.binomial(3, 0.5, 50).astype(float)
    eta = rng.normal(size=(5, 50))
    taus = np.array([0.2, 0.7, 1.1, 0.0, 0.4])
    out = cluster_logp_draws(y, n, eta, codes, taus, "binomial", "logit", block=2)
    for s in range(5):
        one = cluster_logp(y, n, eta[s], codes, taus[s], "binomial", "logit").logp
        assert np.max(np.abs(out[s] - one)) < 1e-12
    # tau = 0 is the independent-rows limit
    assert np.allclose(
        out[3], np.bincount(codes, logp(y, n, eta[3], "binomial", "logit")), rtol=0, atol=1e-12
    )
