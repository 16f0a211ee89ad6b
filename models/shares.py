"""The variance partition: every share varcomp reports, from variance components (one place).

Pure numpy (or plain floats): each function takes variance draws (any shape, broadcast
alike) and returns the share per draw. The inputs:

- ``tau2``: a mapping factor -> tau_f^2 draws (the random-effects variances), in the
  formula's order (nested: coarsest first); :func:`icc` and the one-factor R^2 take one array;
- ``residual``: the likelihood's distribution-specific variance per draw (sigma^2 for the
  Gaussian likelihood, :meth:`models.likelihoods.Likelihood.residual_variance`);
- ``fixed``: sigma_f^2 = Var(X beta) over the rows where there are covariates
  (:func:`fixed_variance`), 0 without;
- ``n``: cluster sizes (Kish's design effect, the reliability of a cluster mean).

The PyMC graphs and the compiled kernels compute ``icc`` inside the sampler (a Deterministic
or an expanded draw), where a numpy call is impossible: their expressions name this module as
the definition and ``tests/test_shares.py`` checks that they equal it on the same draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np

__all__ = ["DATA_ICC_NODES", "LOGIT_VARIANCE", "PROBIT_VARIANCE", "corr", "deff",
           "deff_components", "fixed_variance", "icc", "icc_curve", "icc_data_binary",
           "icc_data_poisson", "icc_unadjusted", "mean_size", "normal_rule",
           "poisson_lognormal_variance",
           "poisson_trigamma_variance", "r2_conditional", "r2_marginal", "reliability",
           "shares_with", "slope_variance", "vpc", "vpc_mean_variance", "weighted_size"]

LOGIT_VARIANCE = float(np.pi**2 / 3.0)
"""The logistic distribution's variance pi^2/3: a logit model's latent residual variance."""
PROBIT_VARIANCE = 1.0
"""The standard normal's variance: a probit model's latent residual variance."""
DATA_ICC_NODES = 256
"""Gauss-Hermite nodes of :func:`icc_data_binary` (its error against scipy's adaptive
quadrature, logit link: below 1e-12 for tau <= 3, 1e-7 at tau = 5, 3e-4 at tau = 10, where
the fixed nodes no longer resolve the inverse link; ``tests/test_glmm.py``)."""


def icc(tau2, residual):
    """The ICC tau^2 / (tau^2 + residual) (with covariates: the adjusted ICC).

    The between-cluster share of the variance left after the fixed effects.
    """
    return tau2 / (tau2 + residual)


def slope_variance(V, z):
    """tau^2(x) = z(x)' V z(x): the random effects' variance at random-effects row(s) ``z``.

    ``V`` (..., q, q) draws of the coefficients' covariance, ``z`` (G, q) rows (the intercept's 1
    and the slope columns at x); returns (..., G).
    """
    return np.einsum("gi,...ij,gj->...g", np.asarray(z, dtype=np.float64), V,
                     np.asarray(z, dtype=np.float64))


def icc_curve(V, residual, z_grid):
    """The ICC with random slopes as a function of x: tau^2(x) / (tau^2(x) + residual).

    ``V`` (S, q, q) draws, ``residual`` (S,) the residual variance per draw (sigma^2 for the
    Gaussian likelihood, as every share here takes variances), ``z_grid`` (G, q) the random-effects
    row at each x of the grid. Returns (S, G): the correlation of two rows of one cluster at the
    same x.
    """
    return icc(slope_variance(V, z_grid), np.asarray(residual, dtype=np.float64)[..., None])


def vpc_mean_variance(V, residual, z_rows):
    """Johnson's (2014) VPC with random slopes: the mean random-effects variance over the rows.

    sigma_b^2 = mean_i z_i' V z_i = tr(V Z'Z / N) over the data's random-effects rows ``z_rows``
    (N, q); ``V`` (..., q, q) draws, ``residual`` (...) the residual variance. Returns
    sigma_b^2 / (sigma_b^2 + residual) per draw. From the statistics, Z'Z is the sum of the
    per-cluster Z_l'Z_l (``models.slopes_stats``).
    """
    z = np.asarray(z_rows, dtype=np.float64)
    moment = z.T @ z / len(z)
    tau2 = np.einsum("...ij,ij->...", V, moment)
    return icc(tau2, residual)


def icc_unadjusted(tau2, residual, fixed):
    """tau^2 / (sigma_f^2 + tau^2 + residual): the ICC of the response itself."""
    return tau2 / (fixed + tau2 + residual)


def r2_marginal(tau2, residual, fixed):
    """sigma_f^2 / (sigma_f^2 + sum tau^2 + residual) (Nakagawa & Schielzeth 2013).

    ``tau2``: the total random-effects variance (one factor's tau^2, or the sum).
    """
    return fixed / (fixed + tau2 + residual)


def r2_conditional(tau2, residual, fixed):
    """(sigma_f^2 + sum tau^2) / (sigma_f^2 + sum tau^2 + residual)."""
    return (fixed + tau2) / (fixed + tau2 + residual)


def _total(tau2: Mapping, residual):
    total = 0
    for v in tau2.values():
        total = total + v
    return total + residual


def vpc(tau2: Mapping, residual) -> dict:
    """Each component's share of the variance (VPC); the shares sum to 1.

    factor -> tau_f^2 / (sum tau^2 + residual), then ``"residual"`` -> residual / (the same).
    """
    total = _total(tau2, residual)
    return {**{f: v / total for f, v in tau2.items()}, "residual": residual / total}


def shares_with(factors, nested: bool) -> np.ndarray:
    """(F, F) 0/1: row f marks the components two rows in the same level of factor f share.

    Nested (coarsest first): the factors down to f (same school, different class). Crossed:
    the factors whose grouping columns are a subset of f's (the same ``a:b`` cell is the same
    ``a`` and the same ``b``).
    """
    names = list(factors)
    if nested:
        return np.tril(np.ones((len(names), len(names))))
    cols = [set(str(f).split(":")) for f in names]
    return np.array([[float(cols[g] <= cols[f]) for g in range(len(names))]
                     for f in range(len(names))])


def corr(tau2: Mapping, residual, nested: bool) -> dict:
    """Per factor, the correlation of two rows in the same level of that factor.

    The rows differ in the components that level does not imply (:func:`shares_with`).
    """
    names = list(tau2)
    t2 = np.stack([np.asarray(tau2[f], dtype=np.float64) for f in names], axis=-1)
    shared = t2 @ shares_with(names, nested).T
    total = _total(tau2, residual)
    return {f: shared[..., i] / total for i, f in enumerate(names)}


def deff(icc_draws, n):
    """Kish's design effect of a mean of clustered rows, 1 + (n - 1) ICC.

    ``n``: the mean cluster size (:func:`mean_size`; :func:`weighted_size` for the
    size-weighted one).
    """
    return 1.0 + (n - 1.0) * icc_draws


def deff_components(tau2: Mapping, residual, sizes: Mapping):
    """The design effect of a mean over all rows with several factors, 1 + sum_f vpc_f (n_f - 1).

    n_f (``sizes[f]``): factor f's size-weighted mean level size, sum over levels n_l^2 / N.
    """
    shares = vpc(tau2, residual)
    out = 1.0
    for f in tau2:
        out = out + shares[f] * (sizes[f] - 1.0)
    return out


def reliability(icc_draws, n):
    """The reliability of a mean of ``n`` rows of one cluster: n ICC / (1 + (n - 1) ICC)."""
    return n * icc_draws / (1.0 + (n - 1.0) * icc_draws)


def mean_size(n) -> float:
    """The mean cluster size n_bar (clusters with no row left out)."""
    n = np.asarray(n, dtype=np.float64)
    return float(n[n > 0].mean())


def weighted_size(n) -> float:
    """The size-weighted mean cluster size sum n^2 / sum n: the mean size of a row's cluster."""
    n = np.asarray(n, dtype=np.float64)
    return float((n**2).sum() / n.sum())


def fixed_variance(beta, cov):
    """sigma_f^2 = beta' Cov(X) beta per draw (``beta`` (..., k), ``cov`` (k, k))."""
    return np.einsum("...i,ij,...j->...", beta, cov, beta)


# ---------------------------------------------------------------- non-Gaussian responses
def poisson_lognormal_variance(eta0, tau2):
    """A Poisson model's latent distribution-specific variance, log-normal approximation.

    ln(1 + 1/lambda) with lambda = exp(eta0 + tau2 / 2), the mean rate over the random effects
    (Nakagawa, Johnson & Schielzeth 2017); ``eta0`` the mean linear predictor, ``tau2`` the
    summed random-effects variance, per draw.
    """
    lam = np.exp(np.asarray(eta0, dtype=np.float64) + 0.5 * np.asarray(tau2))
    return np.log1p(1.0 / lam)


def poisson_trigamma_variance(eta0, tau2):
    """The same variance by the trigamma approximation psi_1(lambda) (Nakagawa et al. 2017)."""
    from scipy.special import polygamma

    lam = np.exp(np.asarray(eta0, dtype=np.float64) + 0.5 * np.asarray(tau2))
    return polygamma(1, lam)


@lru_cache(maxsize=4)
def normal_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights (summing to 1) for E[g(u)], u ~ N(0, 1); read-only.

    From numpy's ``hermgauss`` (weight exp(-x^2)) scaled by sqrt(2): equal to ``hermegauss``
    to 4e-15, and computed once per process. Measured: ``hermegauss(256)`` took 0.46 s per
    call (``hermgauss(256)`` 13 ms), 13 calls (~6 s) of a cbpp fit under load.
    """
    x, w = np.polynomial.hermite.hermgauss(nodes)
    x, w = np.sqrt(2.0) * x, w / w.sum()
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


def icc_data_binary(eta0, tau2, inverse_link, nodes: int = DATA_ICC_NODES):
    """The ICC of binary rows on the data scale: Var(p) / (Var(p) + E[p (1 - p)]).

    p = inverse_link(eta0 + u), u ~ N(0, tau2): the correlation of two 0/1 rows of one cluster.
    Both moments by Gauss-Hermite quadrature over u (``nodes`` nodes), vectorised over draws;
    Var(p) + E[p(1 - p)] = E[p](1 - E[p]).
    """
    x, w = normal_rule(nodes)
    eta0 = np.asarray(eta0, dtype=np.float64)
    sd = np.sqrt(np.asarray(tau2, dtype=np.float64))
    p = inverse_link(eta0[..., None] + sd[..., None] * x)
    m1 = p @ w
    m2 = (p * p) @ w
    return (m2 - m1 * m1) / (m1 * (1.0 - m1))


def icc_data_poisson(eta0, tau2):
    """The ICC of Poisson counts on the data scale (log-normal closed form).

    With lambda = exp(eta0 + u), u ~ N(0, tau2): E[lambda] = m = exp(eta0 + tau2 / 2),
    Var(lambda) = m^2 (exp(tau2) - 1); the ICC is Var(lambda) / (Var(lambda) + m).
    """
    tau2 = np.asarray(tau2, dtype=np.float64)
    m = np.exp(np.asarray(eta0, dtype=np.float64) + 0.5 * tau2)
    v = m * m * np.expm1(tau2)
    return v / (v + m)
