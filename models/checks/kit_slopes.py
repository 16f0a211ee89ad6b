r"""The random-slopes family's check kit.

A point holds beta, tau (one per coefficient), rho (the correlated pairs, LKJ(2) draws), sigma
and the effects b (clusters x coefficients):

- :func:`marginal_loglik` (the integrated forms' oracle): scipy's MvNormal of each cluster's
  stacked rows, mean X_l beta, covariance Z_l V Z_l' + sigma^2 I (the block-diagonal covariance
  of all rows, block by block), V = diag(tau) R diag(tau) built here from the pairs.
- :func:`joint_loglik` (the latent forms' oracle): the rows' conditional normal densities
  N(y_i; x_i'beta + z_i'b_l, sigma^2) plus scipy's MvNormal(0, V) of each cluster's b_l.
- :func:`prior_logpdf`: the priors with scipy (normals, half-t, the LKJ density with its
  correct normalising constant, :func:`oracles.lkj_logpdf`) plus the log Jacobian from rho to
  the forms' free variables, the CPCs u (:meth:`models.slopes_model.SlopesPriors.cpc`: their Beta
  density is the LKJ density plus it), compared absolutely to 1e-6.

A latent form's value is its log density minus its prior terms: centred at b, non-centred at
o_l = chol(V)^-1 b_l with -L log|chol(V)| to map the offsets' density back to b's. The broken
form (:data:`models.checks.broken.BROKEN`) has the transposed Cholesky factor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from varcomp.models.checks.base import constrained_logp
from varcomp.models.checks.kit import CheckKit
from varcomp.models.checks.oracles import (
    lkj_corr_draw,
    lkj_logpdf,
    scale_prior_logpdf,
)
from varcomp.models.data import ClusteredData
from varcomp.models.slopes_model import layout

__all__ = ["KIT", "integrated_loglik_slopes", "joint_loglik", "marginal_loglik",
           "prior_logpdf"]


def covariance(data: ClusteredData, tau, rho) -> np.ndarray:
    """V = diag(tau) R diag(tau), R from the correlated pairs of the layout (identity else)."""
    lay = layout(data)
    R = np.eye(lay.q)
    for r, (i, j) in zip(np.atleast_1d(rho), lay.pairs, strict=True):
        R[i, j] = R[j, i] = r
    tau = np.asarray(tau, dtype=np.float64)
    return tau[:, None] * R * tau[None, :]


def marginal_loglik(data: ClusteredData, p: dict) -> float:
    """sum_l log MVN(y_l; X_l beta, Z_l V Z_l' + sigma^2 I) with scipy."""
    Z, X, y = layout(data).Z, data.design.X, data.y[:, 0]
    V = covariance(data, p["tau"], p["rho"])
    total = 0.0
    for g in range(len(data.groups)):
        rows = np.flatnonzero(data.codes == g)
        cov = Z[rows] @ V @ Z[rows].T + p["sigma"] ** 2 * np.eye(rows.size)
        total += float(stats.multivariate_normal(X[rows] @ p["beta"], cov).logpdf(y[rows]))
    return total


def joint_loglik(data: ClusteredData, p: dict) -> float:
    """sum_i log N(y_i; x_i'beta + z_i'b_l, sigma^2) + sum_l log MVN(b_l; 0, V) with scipy."""
    Z, X, y = layout(data).Z, data.design.X, data.y[:, 0]
    b = p["b"]
    eta = X @ p["beta"] + np.sum(Z * b[data.codes], axis=1)
    V = covariance(data, p["tau"], p["rho"])
    rows = float(np.sum(stats.norm(eta, p["sigma"]).logpdf(y)))
    return rows + float(np.sum(stats.multivariate_normal(np.zeros(V.shape[0]), V).logpdf(b)))


def prior_logpdf(priors, p: dict) -> float:
    """The priors with scipy, plus PyMC's LKJ constant per correlated term (see the module)."""
    f = priors.fixed
    beta = np.asarray(p["beta"], dtype=np.float64)
    slopes = beta[list(f.slope_index)]
    out = sum(float(stats.norm(pr.loc, pr.scale).logpdf(s))
              for pr, s in zip(f.slopes, slopes, strict=True))
    if f.intercept is not None:
        alpha = beta[f.intercept_index] + slopes @ np.asarray(f.x_mean)
        out += float(stats.norm(f.intercept.loc, f.intercept.scale).logpdf(alpha))
    out += sum(scale_prior_logpdf(pr, t) for pr, t in zip(priors.tau, p["tau"], strict=True))
    out += scale_prior_logpdf(f.sigma, p["sigma"])
    R = np.eye(priors.layout.q)
    for r, (i, j) in zip(np.atleast_1d(p["rho"]), priors.layout.pairs, strict=True):
        R[i, j] = R[j, i] = r
    for block in (b for b in priors.layout.blocks if len(b) > 1):
        out += lkj_logpdf(R[np.ix_(block, block)], priors.eta)
    if priors.layout.pairs:  # the forms' free variables are the CPCs u: Beta(u) = LKJ + log|J|
        out += priors.cpc(np.atleast_1d(p["rho"]))[1]
    return out


def integrated_loglik_slopes(model, data: ClusteredData, priors, mode: str | None) -> Callable:
    """``f(point) -> (loglik, prior terms)``: the form's log density minus its prior terms."""
    present = [rv.name for rv in model.free_RVs]
    prior_names = [v for v in present if v in ("alpha", "slope", "tau", "sigma", "cpc")
                   or v.startswith("cpc_")]
    fn, names = constrained_logp(model, mode, prior_names=prior_names)
    lay, f = priors.layout, priors.fixed
    n_groups = len(data.groups)

    def f_(p: dict) -> tuple[float, float]:
        beta = np.asarray(p["beta"], dtype=np.float64)
        slopes = beta[list(f.slope_index)]
        point = {"slope": slopes, "tau": np.asarray(p["tau"]), "sigma": p["sigma"]}
        if f.intercept_index is not None:
            point["alpha"] = beta[f.intercept_index] + slopes @ np.asarray(f.x_mean)
        if lay.pairs:
            point.update(priors.cpc(np.atleast_1d(p["rho"]))[0])
        correction = 0.0
        if "b" in names:
            point["b"] = p["b"]
        elif "b_offset" in names:
            chol = np.linalg.cholesky(p["V"])
            point["b_offset"] = np.linalg.solve(chol, p["b"].T).T
            correction -= n_groups * float(np.sum(np.log(np.diag(chol))))
        total, prior = fn(point)
        return total - prior + correction, prior

    return f_


def points(data: ClusteredData, priors, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (beta, tau, rho, sigma, b): tau/sigma log-spaced 1e-4..1e2, LKJ(2) correlations."""
    lay = priors.layout
    X, y = data.design.X, data.y[:, 0]
    b_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    s0 = float(np.std(y - X @ b_ols)) or 1.0
    z_sd = np.array([float(np.std(lay.Z[:, j])) or 1.0 for j in range(lay.q)])
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)
    rng.shuffle(ratio)
    out = []
    for r in ratio:
        sigma = s0 * math.exp(rng.uniform(-1.0, 1.0))
        tau = r * sigma * np.exp(rng.uniform(-0.5, 0.5, lay.q)) / z_sd
        rho = []
        for blk in (b for b in lay.blocks if len(b) > 1):
            R = lkj_corr_draw(len(blk), priors.eta, rng)
            rho += list(R[np.triu_indices(len(blk), 1)])
        beta = b_ols + 0.3 * s0 * rng.normal(size=b_ols.size) / np.maximum(X.std(axis=0), 1.0)
        V = covariance(data, tau, np.array(rho))
        b = rng.normal(size=(len(data.groups), lay.q)) @ np.linalg.cholesky(V).T
        out.append({"beta": beta, "tau": tau, "rho": np.array(rho), "sigma": sigma, "V": V,
                    "b": b, "tau_over_sigma": float(r)})
    return out


def describe(data: ClusteredData) -> str:
    lay = layout(data)
    return f"{data.n_obs} rows, {len(data.groups)} clusters, coefficients {', '.join(lay.coords)}"


KIT = CheckKit(
    oracle=marginal_loglik,
    oracle_name="scipy MvNormal of each cluster's rows, Z V Z' + sigma^2 I",
    joint_oracle=joint_loglik,
    joint_oracle_name="scipy normals of the rows given b + MvNormal(0, V) of b",
    points=points,
    integrated=integrated_loglik_slopes,
    prior_logpdf=prior_logpdf,
    n_points=8,
    describe=describe,
)
"""The random-slopes family's check kit."""
