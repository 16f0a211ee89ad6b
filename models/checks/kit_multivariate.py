"""The multivariate family's check kit (:class:`models.checks.kit.CheckKit`).

The oracle is scipy's MvNormal of each cluster's stacked observed vector
(:func:`oracles.scipy_loglik_mv`; rows with missing outcomes stack only what is observed); points
are random (mu, V, Sigma) with LKJ(2) correlations; the numpy information form
(:func:`models.mvstats.marginal_loglik`) is checked beside the forms as ``numpy``. The PyMC prior
terms are compared by relative error with the independent :func:`oracles.mv_prior_logpdf` after
removing PyMC's wrong-signed LKJ constant (:func:`oracles.pymc_lkj_constant_offset`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from varcomp.models import mvstats as mv
from varcomp.models.checks.base import constrained_logp
from varcomp.models.checks.kit import CheckKit, Native, split_point
from varcomp.models.checks.oracles import (
    lkj_corr_draw,
    mv_prior_logpdf,
    pymc_lkj_constant_offset,
    scipy_loglik_mv,
)
from varcomp.models.data import ClusteredData

__all__ = ["KIT", "integrated_loglik_mv"]

PRIOR_VARS = ("mu", "chol_V_std", "chol_Sigma_std")


def integrated_loglik_mv(model, data: ClusteredData, priors, mode: str | None) -> Callable:
    r"""``f(point) -> (log p(X | mu, V, Sigma), PyMC prior terms)`` from ``model``'s logp.

    The model's whole log density (no Jacobian) minus its own prior terms of mu, chol_V_std,
    chol_Sigma_std. Latent forms are integrated exactly by the Gaussian identity
    log p(X) = log p(X, M_hat) + sum_l 1/2 log|2 pi C_l|, with M_hat_l and C_l the conditional
    mean and covariance of M_l given the cluster's observed data
    (:func:`models.mvstats.cluster_conditional`; log p(X, M) is quadratic in M with
    Hessian -C^-1). The non-centred latent o_l = L_V^-1 M_l has density |L_V| p_M(L_V o_l),
    so its joint is corrected by -L log|L_V|.
    """
    fn, names = constrained_logp(model, mode, prior_names=PRIOR_VARS)
    stats_ = mv.pattern_stats(data)
    latent = next((v for v in ("group_mean", "group_effect_offset") if v in names), None)

    def f(p: dict):
        mu, V, Sigma = p["mu"], p["V"], p["Sigma"]
        point = priors.point(mu, V, Sigma)
        correction = 0.0
        if latent is not None:
            mean, root = mv.cluster_conditional(stats_, mu, V, Sigma)
            correction = float(np.linalg.slogdet(root)[1].sum()
                               + 0.5 * data.n_groups * data.p * math.log(2.0 * math.pi))
            Lv = np.linalg.cholesky(V)
            if latent == "group_mean":
                point[latent] = np.asarray(mu) + mean
            else:
                point[latent] = np.linalg.solve(Lv, mean.T).T
                correction -= data.n_groups * float(np.log(np.diag(Lv)).sum())
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def points(data: ClusteredData, priors, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (mu, V, Sigma) points.

    Sigma near the within-cluster covariance's scale, tau/sigma log-spaced 1e-4..1e2,
    correlations from LKJ(2).
    """
    p = data.p
    st = mv.pattern_stats(data)
    q = st.complete_index
    sd_w = np.nanstd(data.y, axis=0, ddof=1)
    if q is not None:
        dof = st.n[:, q].sum() - (st.n[:, q] > 0).sum()
        if dof > p:
            sd_w = np.sqrt(np.diag(st.scatter[q]) / dof)
    sd_w = np.where(np.isfinite(sd_w) & (sd_w > 0), sd_w, 1.0)
    center = np.nanmean(data.y, axis=0)
    spread = np.nanstd(data.y, axis=0)
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)
    rng.shuffle(ratio)
    out = []
    for r in ratio:
        s = sd_w * np.exp(rng.uniform(-1.0, 1.0, p))
        t = r * s * np.exp(rng.uniform(-0.5, 0.5, p))
        Sigma = s[:, None] * lkj_corr_draw(p, 2.0, rng) * s[None, :]
        V = t[:, None] * lkj_corr_draw(p, 2.0, rng) * t[None, :]
        out.append({"mu": center + spread * rng.normal(size=p), "V": V, "Sigma": Sigma,
                    "tau_over_sigma": float(r)})
    return out


def prior_logpdf(priors, p: dict) -> float:
    """The independent LKJ-Cholesky prior density plus PyMC's constant (its normaliser's sign)."""
    return (mv_prior_logpdf(priors, priors.point(p["mu"], p["V"], p["Sigma"]))
            + pymc_lkj_constant_offset(priors))


def numpy_form(data: ClusteredData, pts: list[dict]) -> dict[str, np.ndarray]:
    """The numpy information form (:func:`models.mvstats.marginal_loglik`) at the points."""
    st = mv.pattern_stats(data)
    return {"numpy": np.array([mv.marginal_loglik(st, x["mu"], x["V"], x["Sigma"])
                               for x in pts])}


def native(data: ClusteredData, priors, model) -> Native:
    """The compiled multivariate kernel; its coordinates are the PyMC model's value variables."""
    from varcomp.models.compiled import multivariate

    block = multivariate.parameter_block(data, priors)
    size, point = split_point(model)
    return Native(size, lambda z: multivariate.logp_and_grad(z, block), point, lambda g: g)


def describe(data: ClusteredData) -> str:
    n_missing = int((~np.isfinite(data.y)).any(axis=1).sum())
    return (f"{data.n_groups} clusters, p = {data.p}, {n_missing} of {data.n_obs} rows partly "
            f"missing")


KIT = CheckKit(
    oracle=lambda data, p: scipy_loglik_mv(data, p["mu"], p["V"], p["Sigma"]),
    oracle_name="scipy MvNormal of the stacked observed vectors",
    points=points,
    integrated=integrated_loglik_mv,
    prior_logpdf=prior_logpdf,
    native=native,
    prior_relative=True,
    extras=numpy_form,
    n_points=10,
    describe=describe,
    facts=lambda data: {"rows_partly_missing": int((~np.isfinite(data.y)).any(axis=1).sum())},
)
"""The multivariate family's check kit."""
