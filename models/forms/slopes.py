r"""The random-slopes family: ``y ~ x + (1 + x|g)`` (or ``(x||g)``) on one grouping factor.

.. math::
    y_l = X_l\beta + Z_l b_l + e_l,\qquad b_l \sim N_q(0, V),\qquad e_l \sim N(0, \sigma^2 I)

Four forms, one posterior of (beta, tau, rho, sigma): ``centred`` (b_l ~ MvNormal(0, V) by the
Cholesky factor), ``noncentred`` (b_l = chol(V) z_l), ``marginal`` (the literal MvNormal of each
cluster's rows, clusters of one layout of Z and X rows batched into one MvNormal) and
``sufficient`` (lme4's Woodbury identity from the per-cluster cross-products of
:mod:`models.slopes_stats`: per cluster a q x q Cholesky, written elementwise in PyTensor so
PyMC differentiates it; O(L q^3) per gradient whatever the rows). The prior and everything per
draw is :mod:`models.slopes_model`.
"""

from __future__ import annotations

import numpy as np

from varcomp.models.data import ClusteredData
from varcomp.models.density import LOG_2PI
from varcomp.models.forms.base import Family, Form
from varcomp.models.slopes_model import (
    HEADLINE,
    SlopesPriors,
    add_slope_effects,
    curve_table,
    derive,
    estimates,
    layout,
    parse_slopes_priors,
    slopes_log_prior,
    slopes_loglik,
    stats_of,
)

__all__ = ["FAMILY", "woodbury_loglik_pt"]

MARGINAL_MAX_CLUSTER = 200
MARGINAL_MAX_LAYOUTS = 50


def _start(data: ClusteredData, priors: SlopesPriors | None):
    import pymc as pm

    priors = priors or SlopesPriors.default(data)
    lay = priors.layout
    coords = {"group": [str(g) for g in data.groups], "term": list(data.design.terms),
              "slope_term": [t for t in data.design.terms if t != "Intercept"],
              "factor": lay.coords, "coef": list(lay.columns)}
    if lay.pairs:
        coords["pair"] = lay.pair_coords
    return pm.Model(coords=coords), priors


def _build_latent(data: ClusteredData, priors: SlopesPriors | None, centred: bool):
    import pymc as pm
    import pytensor.tensor as pt

    model, priors = _start(data, priors)
    Z = layout(data).Z
    with model:
        y = pm.Data("y_obs", data.y[:, 0])
        beta, _, chol, sigma = priors.create()
        if centred:
            b = pm.MvNormal("b", mu=np.zeros(Z.shape[1]), chol=chol, dims=("group", "coef"))
        else:
            z = pm.Normal("b_offset", 0.0, 1.0, dims=("group", "coef"))
            b = pm.Deterministic("b", pt.dot(z, chol.T), dims=("group", "coef"))
        eta = pt.dot(pt.as_tensor(data.design.X), beta) + (pt.as_tensor(Z) * b[data.codes]).sum(1)
        pm.Normal("y", eta, sigma, observed=y)
    return model


def build_centred(data: ClusteredData, *, priors: SlopesPriors | None = None):
    """Latent centred form: b_l ~ MvNormal(0, V) (Cholesky factor), y ~ N(X beta + Z b, sigma)."""
    return _build_latent(data, priors, True)


def build_noncentred(data: ClusteredData, *, priors: SlopesPriors | None = None):
    """Non-centred form: b_l = chol(V) z_l, z_l ~ N(0, I): the same posterior."""
    return _build_latent(data, priors, False)


def _latent_values(data: ClusteredData) -> dict[str, np.ndarray]:
    return {"y_obs": data.y[:, 0].copy()}


# --------------------------------------------------------------------------- marginal
def marginal_blocks(data: ClusteredData) -> list[np.ndarray]:
    """Clusters grouped by the layout of their Z rows: ``[rows (clusters, n) int, ...]``."""
    Z = layout(data).Z
    order = np.argsort(data.codes, kind="stable")
    ends = np.cumsum(np.bincount(data.codes, minlength=len(data.groups)))
    groups: dict[bytes, list[np.ndarray]] = {}
    for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True):
        rows = order[a:b]
        groups.setdefault(Z[rows].tobytes() + bytes([rows.size % 256]), []).append(rows)
    return [np.stack(r) for r in groups.values()]


def build_marginal(data: ClusteredData, *, priors: SlopesPriors | None = None):
    """The literal MvNormal(X_l beta, Z_l V Z_l' + sigma^2 I) of each cluster's rows.

    Clusters whose Z rows are equal share one covariance and one batched ``pm.MvNormal``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    model, priors = _start(data, priors)
    Z, X = layout(data).Z, data.design.X
    with model:
        beta, _, chol, sigma = priors.create()
        V = pt.dot(chol, chol.T)
        for i, rows in enumerate(marginal_blocks(data)):
            Zl = Z[rows[0]]
            cov = pt.dot(pt.dot(pt.as_tensor(Zl), V), Zl.T) + sigma**2 * pt.eye(rows.shape[1])
            mean = pt.dot(pt.as_tensor(X[rows]), beta)
            pm.MvNormal(f"y_b{i}", mu=mean, cov=cov,
                        observed=pm.Data(f"y_b{i}_obs", data.y[rows, 0]))
    return model


def _marginal_values(data: ClusteredData) -> dict[str, np.ndarray]:
    return {f"y_b{i}_obs": data.y[rows, 0] for i, rows in enumerate(marginal_blocks(data))}


def _skip_marginal(data: ClusteredData) -> str | None:
    biggest = int(np.bincount(data.codes).max())
    layouts = len(marginal_blocks(data))
    if biggest <= MARGINAL_MAX_CLUSTER and layouts <= MARGINAL_MAX_LAYOUTS:
        return None
    return (f"the literal MvNormal costs O(n^3) per cluster layout and gradient ({layouts} "
            f"layouts, largest cluster {biggest} rows; limits {MARGINAL_MAX_LAYOUTS} and "
            f"{MARGINAL_MAX_CLUSTER} for --model all): ask for --model marginal to run it anyway")


# --------------------------------------------------------------------------- sufficient
def woodbury_loglik_pt(st, beta, chol, sigma, Zty, Xty_l, yty_l):
    r"""Log p(y | beta, V, sigma) from the per-cluster cross-products (PyTensor).

    Lambda = chol(V) / sigma, A_l = Lambda' Z_l'Z_l Lambda + I = C_l C_l' (an elementwise
    Cholesky over the clusters, q small), u_l = C_l^-1 Lambda' Z_l' r_l;
    log L = -1/2 [N log(2 pi sigma^2) + sum_l log|A_l| + (r'r - sum_l |u_l|^2) / sigma^2].
    """
    import pytensor.tensor as pt

    q = st.q
    lam = chol / sigma
    A = pt.matmul(pt.matmul(lam.T[None], pt.as_tensor(st.ZtZ)), lam[None])  # (L, q, q)
    d = Zty - pt.as_tensor(st.ZtX).dot(beta)  # (L, q): Z_l' r_l
    c = pt.dot(d, lam)  # (L, q): Lambda' Z_l' r_l
    C = [[None] * q for _ in range(q)]
    logdet = 0.0
    for i in range(q):
        for j in range(i + 1):
            s = A[:, i, j] + (1.0 if i == j else 0.0)
            for m in range(j):
                s = s - C[i][m] * C[j][m]
            if i == j:
                C[i][i] = pt.sqrt(s)
                logdet = logdet + 2.0 * pt.sum(pt.log(C[i][i]))
            else:
                C[i][j] = s / C[j][j]
    u2 = 0.0
    u = []
    for i in range(q):
        s = c[:, i]
        for m in range(i):
            s = s - C[i][m] * u[m]
        u.append(s / C[i][i])
        u2 = u2 + pt.sum(u[i] ** 2)
    XtX = pt.as_tensor(st.XtX)
    rr = pt.sum(yty_l) - 2.0 * pt.dot(pt.sum(Xty_l, axis=0), beta) + pt.dot(beta,
                                                                          pt.dot(XtX, beta))
    s2 = sigma**2
    return -0.5 * (st.n * (LOG_2PI + pt.log(s2)) + logdet + (rr - u2) / s2)


def build_sufficient(data: ClusteredData, *, priors: SlopesPriors | None = None):
    """Woodbury closed form from Z_l'Z_l, Z_l'X_l, Z_l'y_l, X'X, X'y, y'y (a Potential)."""
    import pymc as pm

    model, priors = _start(data, priors)
    st = stats_of(data)
    with model:
        Zty = pm.Data("Zty", st.Zty)
        Xty_l = pm.Data("Xty_l", st.Xty_l)
        yty_l = pm.Data("yty_l", st.yty_l)
        beta, _, chol, sigma = priors.create()
        pm.Potential("loglik", woodbury_loglik_pt(st, beta, chol, sigma, Zty, Xty_l, yty_l))
    return model


def _compiled(data: ClusteredData, priors: SlopesPriors | None):
    from varcomp.models.compiled import slopes

    priors = priors or SlopesPriors.default(data)
    return slopes.compile_sufficient(data, priors) if slopes.supported(priors) else None


def _sufficient_values(data: ClusteredData) -> dict[str, np.ndarray]:
    st = stats_of(data)
    return {"Zty": st.Zty, "Xty_l": st.Xty_l, "yty_l": st.yty_l}


FAMILY = Family(
    name="slopes",
    title="random slopes (correlated random coefficients on one factor)",
    forms={
        "centred": Form("centred", "b_l ~ MvNormal(0, V), y ~ N(X beta + Z b, sigma)",
                        build_centred, _latent_values, latent=True),
        "noncentred": Form("noncentred", "b_l = chol(V) z_l, z_l ~ N(0, I)", build_noncentred,
                           _latent_values, latent=True),
        "marginal": Form("marginal", "literal MvNormal(X_l beta, Z_l V Z_l' + sigma^2 I) per "
                         "cluster, batched by layout", build_marginal, _marginal_values,
                         skip=_skip_marginal),
        "sufficient": Form("sufficient", "Woodbury from the per-cluster cross-products: "
                           "O(L q^3) per gradient", build_sufficient, _sufficient_values,
                           compiled=_compiled),
    },
    default_form="sufficient",
    default_priors=SlopesPriors.default,
    parse_priors=parse_slopes_priors,
    summary_vars=("beta", "tau", "rho", "sigma", HEADLINE),
    compare_vars=("beta", "tau", "rho", "sigma"),
    add_effects=add_slope_effects,
    estimates=estimates,
    derive=derive,
    cluster_loglik=slopes_loglik,
    log_prior=slopes_log_prior,
    headline=HEADLINE,
    design=True,
    fit_tables=curve_table,
    effect_vars=(("b", "group"),),
    oracle="varcomp.models.checks.kit_slopes:KIT",
)
