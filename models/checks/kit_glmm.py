r"""The random-intercept GLMM families' check kit (binomial, Poisson; one factor or several).

A point holds beta, tau (one per factor, link scale) and the effects u (one array per factor):

- :func:`joint_loglik` (the latent forms' oracle): the rows' log pmfs given the effects plus the
  effects' normal log densities, :math:`\sum_i \log p(y_i \mid \eta_i) + \sum_f \sum_l
  \log N(u_{fl}; 0, \tau_f^2)`, with scipy's distributions (binomial written as
  log C(n, y) + y log p + (n - y) log(1 - p) with log p and log(1 - p) from scipy's
  ``logcdf``/``logsf`` of the logistic or normal, exact where p rounds to 0 or 1; Poisson
  ``stats.poisson.logpmf``). Independent of the PyMC graph and of :mod:`models.likelihoods`.
- :func:`marginal_loglik` (the integrated forms' oracle, one grouping factor): each cluster's
  :math:`\log \int \prod_i p(y_i \mid \eta_i + \tau z) \phi(z)\,dz` by ``scipy.integrate.quad``
  (brute force: around the mode in z, 40 curvature widths each side, relative 1e-13), not by the
  Gauss-Hermite rule the forms use.
- The prior terms with scipy (:func:`prior_logpdf`): the intercept at the covariates' means and
  the slopes normal, each tau its scale prior.

A latent form's value is its whole log density (no Jacobian) minus its prior terms of alpha,
slope, tau: the joint of rows and effects (the non-centred offsets o = u / tau mapped back to u
by -m log tau per factor). The broken form (:data:`models.checks.broken.BROKEN`) has the other
link.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import integrate, optimize, special, stats

from varcomp.models.checks.base import constrained_logp
from varcomp.models.checks.kit import CheckKit
from varcomp.models.checks.oracles import scale_prior_logpdf
from varcomp.models.data import ClusteredData
from varcomp.models.forms import family_of
from varcomp.models.forms.mixed import effect_names

__all__ = ["KIT", "integrated_loglik_glmm", "joint_loglik", "marginal_loglik", "prior_logpdf",
           "row_logpmf"]

PRIOR_VARS = ("alpha", "slope", "tau")
HALF_WIDTH = 40.0
"""Integration range of :func:`marginal_loglik`: the mode +- this many curvature widths."""


def row_logpmf(data: ClusteredData, eta: np.ndarray, rows=slice(None)) -> np.ndarray:
    """Each row's log pmf given its linear predictor ``eta`` (offset included), scipy."""
    y = data.y[rows, 0]
    if data.likelihood == "poisson":
        return stats.poisson.logpmf(y, np.exp(eta))
    if data.likelihood != "binomial" or data.link not in ("logit", "probit"):
        raise ValueError(f"no oracle for the {data.likelihood} ({data.link}) response")
    n = data.trials[rows]
    dist = stats.logistic if data.link == "logit" else stats.norm
    lp, lq = dist.logcdf(eta), dist.logsf(eta)
    return (special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)
            + y * lp + (n - y) * lq)


def fixed_predictor(data: ClusteredData, beta) -> np.ndarray:
    """X beta + offset per row."""
    eta = data.design.X @ np.asarray(beta, dtype=np.float64)
    return eta if data.offset is None else eta + np.asarray(data.offset, dtype=np.float64)


def joint_loglik(data: ClusteredData, p: dict) -> float:
    """Log p(y | beta, u) + sum_f log N(u_f; 0, tau_f^2): the latent forms' oracle."""
    eta = fixed_predictor(data, p["beta"])
    total = 0.0
    for f, u, t in zip(data.design.factors, p["u"], np.atleast_1d(p["tau"]), strict=True):
        eta = eta + u[f.codes]
        total += float(np.sum(stats.norm(0.0, t).logpdf(u)))
    return total + float(np.sum(row_logpmf(data, eta)))


def _cluster_log_integral(data: ClusteredData, rows: np.ndarray, eta0: np.ndarray,
                          tau: float) -> float:
    """Log of the integral over z of p(y_rows | eta0 + tau z) phi(z), by quad."""
    def g(z: float) -> float:
        return float(np.sum(row_logpmf(data, eta0 + tau * z, rows))) + stats.norm.logpdf(z)

    mode = optimize.minimize_scalar(lambda z: -g(z), bracket=(-1.0, 1.0), tol=1e-12).x
    h = 1e-4
    curvature = -(g(mode + h) - 2.0 * g(mode) + g(mode - h)) / h**2  # >= 1: the normal's
    width = HALF_WIDTH / math.sqrt(max(curvature, 1e-3))
    top = g(mode)
    parts = [integrate.quad(lambda z: math.exp(g(z) - top), a, b, epsabs=0.0, epsrel=1e-13,
                            limit=200)[0] for a, b in ((mode - width, mode),
                                                       (mode, mode + width))]
    return top + math.log(sum(parts))


def marginal_loglik(data: ClusteredData, p: dict) -> float:
    """Log p(y | beta, tau) with one factor's effects integrated out per cluster by quad."""
    if not family_of(data).scalar_tau:
        raise ValueError("the integrated GLMM density is per cluster of one grouping factor")
    f, tau = data.design.factors[0], float(np.atleast_1d(p["tau"])[0])
    eta = fixed_predictor(data, p["beta"])
    return sum(_cluster_log_integral(data, rows, eta[rows], tau)
               for rows in (np.flatnonzero(f.codes == g) for g in range(f.m)))


def prior_logpdf(priors, p: dict) -> float:
    """The prior terms from scipy: alpha (intercept at the covariates' means), slopes, taus."""
    beta = np.asarray(p["beta"], dtype=np.float64)
    slopes = beta[list(priors.slope_index)]
    out = sum(float(stats.norm(pr.loc, pr.scale).logpdf(s))
              for pr, s in zip(priors.slopes, slopes, strict=True))
    if priors.intercept is not None:
        alpha = beta[priors.intercept_index] + slopes @ np.asarray(priors.x_mean)
        out += float(stats.norm(priors.intercept.loc, priors.intercept.scale).logpdf(alpha))
    return out + sum(scale_prior_logpdf(pr, t) for pr, t in
                     zip(priors.tau, np.atleast_1d(p["tau"]), strict=True))


def integrated_loglik_glmm(model, data: ClusteredData, priors, mode: str | None) -> Callable:
    """``f(point) -> (loglik, prior terms)``: the form's log density minus its prior terms.

    A latent form's loglik is the joint of rows and effects (the point's u; non-centred
    offsets o = u / tau with -m log tau per factor); an integrated form's is the marginal.
    """
    present = {rv.name for rv in model.free_RVs}
    fn, names = constrained_logp(model, mode, prior_names=[v for v in PRIOR_VARS
                                                           if v in present])
    effects = [name for name, _ in effect_names(data)]
    scalar_tau = family_of(data).scalar_tau

    def f(p: dict) -> tuple[float, float]:
        beta = np.asarray(p["beta"], dtype=np.float64)
        tau = np.atleast_1d(np.asarray(p["tau"], dtype=np.float64))
        slopes = beta[list(priors.slope_index)]
        point = {"tau": float(tau[0]) if scalar_tau else tau, "slope": slopes}
        if priors.intercept_index is not None:
            point["alpha"] = beta[priors.intercept_index] + slopes @ np.asarray(priors.x_mean)
        correction = 0.0
        for name, u, t in zip(effects, p["u"], tau, strict=True):
            if name in names:
                point[name] = u
            elif f"{name}_offset" in names:  # p_o(o) = tau^m p_u(tau o)
                point[f"{name}_offset"] = u / t
                correction -= u.size * math.log(t)
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def points(data: ClusteredData, priors, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (beta, tau, u): the intercept near its prior centre, tau log-spaced 1e-3..1e1."""
    factors = data.design.factors
    ratio = 10.0 ** np.linspace(-3.0, 1.0, n_points)
    rng.shuffle(ratio)
    center = priors.intercept.loc if priors.intercept is not None else 0.0
    out = []
    for r in ratio:
        tau = r * np.exp(rng.uniform(-0.5, 0.5, len(factors)))
        slopes = rng.normal(0.0, 0.5, len(priors.slopes)) / np.asarray(priors.x_scale)
        beta = priors.beta(center + 0.5 * rng.normal(), slopes)
        u = [t * rng.normal(size=f.m) for t, f in zip(tau, factors, strict=True)]
        out.append({"beta": beta, "tau": tau, "u": u, "tau_over_sigma": float(r)})
    return out


def describe(data: ClusteredData) -> str:
    factors = ", ".join(f"{f.name} ({f.m})" for f in data.design.factors)
    return f"{data.n_obs} rows, {data.likelihood} ({data.link}), factors {factors}, tau 1e-3..1e1"


KIT = CheckKit(
    oracle=marginal_loglik,
    oracle_name="scipy quad per cluster of the rows' pmfs x N(0, tau)",
    joint_oracle=joint_loglik,
    joint_oracle_name="scipy row pmfs + the effects' normal densities",
    points=points,
    integrated=integrated_loglik_glmm,
    prior_logpdf=prior_logpdf,
    n_points=8,
    describe=describe,
)
"""The GLMM families' check kit (binomial, poisson and their multilevel variants)."""
