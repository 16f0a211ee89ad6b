r"""The mixed-model families' check kit (covariates, nested, crossed) and simulator.

- :func:`scipy_loglik_lmm`: the oracle, written from the definition: scipy's MvNormal of the
  stacked rows with covariance sigma^2 I + sum_f tau_f^2 Z_f Z_f^T built densely, by top-level
  unit when the factors nest (blocks are independent) and over all rows otherwise.
- :data:`KIT` (:class:`models.checks.kit.CheckKit`): every form's log-likelihood (its whole log
  density without Jacobian minus its own prior terms; latent effects integrated out exactly by
  the Gaussian identity log p(y) = log p(y, u_hat) + 1/2 log|2 pi H^-1|,
  H = Z'Z / sigma^2 + diag(1 / tau^2)) against the oracle at random points; the prior terms
  against :meth:`LmmPriors.logpdf`; the compiled ``sufficient`` form (:mod:`models.compiled.lmm`)
  in the PyMC form's coordinates.
- :func:`simulate_mixed`: y for a design (the simulator of
  :class:`models.checks.sbc_models.MixedSBC`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from varcomp.models.checks.base import constrained_logp
from varcomp.models.checks.kit import CheckKit, Native
from varcomp.models.data import ClusteredData
from varcomp.models.forms import family_of
from varcomp.models.forms.mixed import effect_names
from varcomp.models.lmm import LmmPriors

__all__ = ["KIT", "integrated_loglik_lmm", "scipy_loglik_lmm", "simulate_mixed"]

PRIOR_VARS = ("alpha", "slope", "tau", "sigma")


def _tau_vec(tau, n_factors: int) -> np.ndarray:
    return np.atleast_1d(np.asarray(tau, dtype=np.float64)).reshape(n_factors)


def scipy_loglik_lmm(data: ClusteredData, beta, tau, sigma) -> float:
    """Ground truth: scipy's MvNormal of the stacked rows (per top-level unit when nested)."""
    d = data.design
    tau = _tau_vec(tau, len(d.factors))
    mean = d.X @ np.asarray(beta, dtype=np.float64)
    units = [np.flatnonzero(d.factors[0].codes == u) for u in range(d.factors[0].m)] \
        if d.nested else [np.arange(data.n_obs)]
    total = 0.0
    for rows in units:
        cov = sigma**2 * np.eye(rows.size)
        for t, f in zip(tau, d.factors, strict=True):
            c = f.codes[rows]
            cov = cov + t**2 * (c[:, None] == c[None, :])
        total += float(stats.multivariate_normal(mean[rows], cov).logpdf(data.y[rows, 0]))
    return total


def _effects_conditional(data: ClusteredData, beta, tau, sigma):
    """Mode and log|2 pi H^-1| / 2 of all group effects given (beta, tau, sigma), densely."""
    d = data.design
    tau = _tau_vec(tau, len(d.factors))
    Z = np.concatenate([np.eye(f.m)[f.codes] for f in d.factors], axis=1)
    prec = np.concatenate([np.full(f.m, 1.0 / t**2) for t, f in zip(tau, d.factors, strict=True)])
    H = Z.T @ Z / sigma**2 + np.diag(prec)
    r = data.y[:, 0] - d.X @ np.asarray(beta, dtype=np.float64)
    u = np.linalg.solve(H, Z.T @ r / sigma**2)
    half_logdet = 0.5 * (Z.shape[1] * math.log(2 * math.pi) - np.linalg.slogdet(H)[1])
    splits = np.cumsum([f.m for f in d.factors])[:-1]
    return np.split(u, splits), half_logdet


def integrated_loglik_lmm(model, data: ClusteredData, priors=None,
                          mode: str | None = None) -> Callable:
    """``f(point) -> (log p(y | beta, tau, sigma), prior terms)`` from the model.

    ``point`` holds ``beta``, ``tau`` (one per factor) and ``sigma``; the model's tau is a
    scalar where the family says so (:attr:`Family.scalar_tau`).
    """
    names_in = [rv.name for rv in model.free_RVs]
    prior_names = [v for v in PRIOR_VARS if v in names_in]
    fn, names = constrained_logp(model, mode, prior_names=prior_names)
    effects = effect_names(data)
    priors: LmmPriors = LmmPriors.default(data)  # the centring of alpha, whatever the priors
    n_f = len(data.design.factors)
    scalar_tau = family_of(data).scalar_tau

    def f(p: dict):
        beta, tau, sigma = p["beta"], p["tau"], p["sigma"]
        beta = np.asarray(beta, dtype=np.float64)
        tau_v = _tau_vec(tau, n_f)
        slopes = beta[list(priors.slope_index)]
        point = {"tau": float(tau_v[0]) if scalar_tau else tau_v, "sigma": sigma,
                 "slope": slopes}
        if priors.intercept_index is not None:
            point["alpha"] = beta[priors.intercept_index] + slopes @ np.asarray(priors.x_mean)
        correction = 0.0
        if any(name in names or f"{name}_offset" in names for name, _ in effects):
            u, correction = _effects_conditional(data, beta, tau_v, sigma)
            for (name, _), u_f, t in zip(effects, u, tau_v, strict=True):
                if name in names:
                    point[name] = u_f
                else:  # offset o = u / tau: p_o(o) = tau^m p_u(tau o)
                    point[f"{name}_offset"] = u_f / t
                    correction -= u_f.size * math.log(t)
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def points(data: ClusteredData, priors, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (beta, tau, sigma): beta near least squares, tau/sigma log-spaced 1e-4..1e2."""
    d = data.design
    X, y = d.X, data.y[:, 0]
    b_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ b_ols
    s0 = float(np.std(resid)) or 1.0
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)
    rng.shuffle(ratio)
    out = []
    for r in ratio:
        sigma = s0 * math.exp(rng.uniform(-1.0, 1.0))
        tau = r * sigma * np.exp(rng.uniform(-0.5, 0.5, len(d.factors)))
        beta = b_ols + 0.3 * s0 * rng.normal(size=b_ols.size) / np.maximum(X.std(axis=0), 1.0)
        out.append({"beta": beta, "tau": tau, "sigma": sigma, "tau_over_sigma": float(r)})
    return out


def native(data: ClusteredData, priors: LmmPriors, model) -> Native:
    """The compiled kernel (:mod:`models.compiled.lmm`) in the PyMC model's coordinates.

    The kernel's coordinates are (beta in term order, log tau by factor, log sigma); PyMC's
    are its value variables (slope, alpha, tau, sigma) in the model's order.
    """
    from varcomp.models.compiled import lmm

    family = family_of(data)
    compiled = family.form("sufficient").compiled(data, priors)
    value_names = [v.name for v in model.value_vars]
    k, F = len(priors.terms), len(priors.tau)
    i0, slopes = priors.intercept_index, list(priors.slope_index)

    def point(z: np.ndarray) -> dict:
        out = {"slope_std__": z[slopes], "sigma_log_std__": z[k + F],
               "tau_log_std__": z[k] if family.scalar_tau else z[k:k + F]}
        if i0 is not None:
            out["alpha_std__"] = z[i0]
        return {n: out[n] for n in value_names}

    order = ([*slopes] if slopes else []) + ([i0] if i0 is not None else []) + \
        list(range(k, k + F + 1))

    def grad_of(g: np.ndarray) -> np.ndarray:
        want = np.empty_like(g)
        want[order] = g
        return want

    return Native(k + F + 1, lambda z: lmm.logp_and_grad(z, compiled.user_data), point, grad_of)


def describe(data: ClusteredData) -> str:
    factors = ", ".join(f"{f.name} ({f.m})" for f in data.design.factors)
    return f"{data.n_obs} rows, factors {factors}"


KIT = CheckKit(
    oracle=lambda data, p: scipy_loglik_lmm(data, p["beta"], p["tau"], p["sigma"]),
    oracle_name="scipy MvNormal of the stacked rows",
    points=points,
    integrated=integrated_loglik_lmm,
    prior_logpdf=lambda priors, p: priors.logpdf(p["beta"], p["tau"], p["sigma"]),
    native=native,
    n_points=12,
    describe=describe,
)
"""The mixed-model families' check kit (regression, nested, crossed)."""


def simulate_mixed(data: ClusteredData, beta, tau, sigma, rng: np.random.Generator) -> np.ndarray:
    """Simulate y = X beta + sum_f u_f[codes] + e for ``data``'s design."""
    d = data.design
    tau = _tau_vec(tau, len(d.factors))
    y = d.X @ np.asarray(beta) + rng.normal(0.0, sigma, data.n_obs)
    for t, f in zip(tau, d.factors, strict=True):
        y = y + rng.normal(0.0, t, f.m)[f.codes]
    return y
