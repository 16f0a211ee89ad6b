r"""Each top-level cluster's log-likelihood and the log prior, per posterior draw, for every family.

A cluster's log-likelihood here is log p(y_i | theta) with the cluster's own effects integrated
out (the marginal density of its rows, from the closed forms): the quantity whose leave-one-out
predictive density is the leave-one-*cluster*-out elpd, what ``arviz.loo`` computes from the
``log_likelihood`` group these functions fill (dim ``group``). It differs from per-row LOO, which
predicts a held-out row of a cluster whose effect the other rows have pinned down. The log
prior (group ``log_prior``) is the density of the priors as specified (the model's own
parameters), which ``arviz.psens`` power-scales. Crossed designs have no per-cluster density
(the clusters share the other factors' levels): their ``log_likelihood`` holds each draw's
log density of all rows, the effects integrated out (:func:`crossed_loglik`), which is all
power-scaling needs; where that costs too much and the fit drew the effects (the latent forms),
each draw's density of all rows given its effects (:func:`conditional_loglik`) instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from varcomp.models.effects import draw_blocks
from varcomp.models.likelihoods import GAUSSIAN, Likelihood

__all__ = ["MAX_CROSSED_FLOPS", "MAX_POINTWISE", "add_pointwise", "conditional_loglik",
           "crossed_loglik", "crossed_stats", "crossed_terms", "mixed_loglik", "mixed_prior",
           "mv_loglik", "mv_prior", "oneway_loglik", "oneway_prior"]

MAX_POINTWISE = 10_000_000
"""Largest chains x draws x clusters stored in ``log_likelihood`` (80 MB of float64)."""


def _draws(post, name: str) -> np.ndarray:
    """A posterior variable as (S, ...) with S = chains x draws."""
    v = post[name].values
    return v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])


def _params(post, likelihood: Likelihood) -> list[np.ndarray]:
    """(S,) draws of each of the likelihood's own parameters (Gaussian: sigma), in its order."""
    return [_draws(post, p) for p in likelihood.params]


def oneway_loglik(data, post, likelihood: Likelihood = GAUSSIAN) -> np.ndarray:
    """(S, L) one-way cluster log densities (the likelihood's ``cluster_logp``)."""
    n, xbar, ss = data.stats.n[:, 0].astype(np.float64), data.stats.mean[:, 0], data.stats.ss[:, 0]
    mu, tau = (_draws(post, v)[:, None] for v in ("mu", "tau"))
    params = [p[:, None] for p in _params(post, likelihood)]
    out = np.empty((len(mu), n.size))
    for b in draw_blocks(len(mu), n.size):
        out[b] = likelihood.cluster_logp(n, xbar, ss, mu[b], tau[b], *(p[b] for p in params))
    return out


def mv_loglik(data, post, likelihood: Likelihood = GAUSSIAN, chunk: int = 200) -> np.ndarray:
    """(S, L) multivariate cluster log densities (:func:`models.mvstats.cluster_loglik`)."""
    from varcomp.models.mvstats import cluster_loglik, pattern_stats

    st = pattern_stats(data)
    mu, V, Sigma = (_draws(post, v) for v in ("mu", "V", "Sigma"))
    return np.concatenate([cluster_loglik(st, mu[a:a + chunk], V[a:a + chunk],
                                          Sigma[a:a + chunk]) for a in range(0, len(mu), chunk)])


def mixed_loglik(data, post, likelihood: Likelihood = GAUSSIAN,
                 chunk: int = 200) -> np.ndarray | None:
    """(S, L) top-level unit log densities; None when the factors cross.

    See :func:`models.lmm.unit_loglik` (the Gaussian closed form, given the likelihood's
    parameters).
    """
    from varcomp.models.lmm import unit_loglik, unit_loglik_prepared

    if not data.design.nested:
        return None
    beta, tau = (_draws(post, v) for v in ("beta", "tau"))
    params = _params(post, likelihood)
    prepared = unit_loglik_prepared(data)
    return np.concatenate([unit_loglik(data, beta[a:a + chunk], tau[a:a + chunk],
                                       *(p[a:a + chunk] for p in params), prepared=prepared)
                           for a in range(0, len(beta), chunk)])


MAX_CROSSED_FLOPS = 20_000_000
"""Largest cost per draw, R^2 (m + R), of :func:`crossed_loglik` (m levels of the largest factor,
R of the others): a few seconds for 4,000 draws. ScotsSec costs 6e4, InstEval's shape 5e9."""


def crossed_stats(data):
    """The sums :func:`crossed_loglik` reads, from the per-cell statistics (any data source).

    ``G`` = sum over rows of w w' with w = [y, x]; ``zw`` (q, 1 + k) = Z'w; ``zz`` (q, q) = Z'Z;
    ``sizes`` rows per level; ``owner`` each level's factor; ``big`` the factor eliminated
    first (most levels: its block of Z'Z is diagonal). None above :data:`MAX_CROSSED_FLOPS`.
    """
    from varcomp.models.cells import factor_codes

    cells, factors = data.cells, data.design.factors
    m = [len(f.levels) for f in factors]
    big = int(np.argmax(m))
    rest = sum(m) - m[big]
    if rest * rest * (m[big] + rest) > MAX_CROSSED_FLOPS:
        return None
    order = [big] + [i for i in range(len(factors)) if i != big]
    codes = [factor_codes(cells, factors[i]) for i in order]
    offset = np.cumsum([0] + [m[i] for i in order])
    cols = np.stack([c + o for c, o in zip(codes, offset[:-1], strict=True)], axis=1)  # (C, F)
    sums = cells.n[:, None] * cells.mean  # (C, 1 + k)
    G = cells.m2.sum(axis=0) + np.einsum("ci,cj->ij", sums, cells.mean)
    q = int(offset[-1])
    zw = np.zeros((q, sums.shape[1]))
    zz = np.zeros((q, q))
    for a in range(cols.shape[1]):
        np.add.at(zw, cols[:, a], sums)
        for b in range(cols.shape[1]):
            np.add.at(zz, (cols[:, a], cols[:, b]), cells.n)
    owner = np.repeat(order, [m[i] for i in order])
    return {"G": G, "zw": zw, "zz": zz, "owner": owner, "m_big": m[big], "n": cells.n.sum()}


def crossed_loglik(data, post, likelihood: Likelihood = GAUSSIAN) -> np.ndarray | None:
    r"""(S,) log density of all rows per draw, every factor's effects integrated out.

    With :math:`D = \mathrm{diag}(\tau_f^2)` over the q levels and
    :math:`K = \sigma^2 I + D^{1/2} Z^\top Z D^{1/2}` (Woodbury, exact at tau = 0):

    .. math::
        \log p(y\mid\beta,\tau,\sigma) = -\tfrac12\big[N\log 2\pi + (N - q)\log\sigma^2
        + \log|K| + (r^\top r - c^\top K^{-1} c)/\sigma^2\big],\quad
        r = y - X\beta,\ c = D^{1/2} Z^\top r

    The bracket's terms are :func:`crossed_terms`. None above :data:`MAX_CROSSED_FLOPS`.
    """
    t = crossed_terms(data, post, likelihood)
    if t is None:
        return None
    logdet = t["logdet_schur"] + t["logdet_eliminated"]
    return -0.5 * (t["constant"] + logdet + t["quad"])


def crossed_terms(data, post, likelihood: Likelihood = GAUSSIAN) -> dict[str, np.ndarray] | None:
    r"""The terms of :func:`crossed_loglik`'s bracket per draw, each (S,).

    ``constant`` (N log 2 pi + (N - q) log sigma^2), ``logdet_eliminated`` (log|K_aa|: K's block of
    the factor with most levels, diagonal, eliminated in closed form), ``logdet_schur`` (log of
    the Schur complement of the other R levels, factored densely: O(R^2 (m + R)) per draw) and
    ``quad``. None above :data:`MAX_CROSSED_FLOPS`.
    """
    st = crossed_stats(data)
    if st is None:
        return None
    beta, tau = (_draws(post, v) for v in ("beta", "tau"))
    s2_all = np.asarray(likelihood.residual_variance(post)).reshape(-1)  # sigma^2
    G, zw, zz, owner, mb, N = st["G"], st["zw"], st["zz"], st["owner"], st["m_big"], st["n"]
    q = owner.size
    na, C, B0 = np.diag(zz)[:mb], zz[:mb, mb:], zz[mb:, mb:]
    out = {k: np.empty(len(beta)) for k in ("constant", "logdet_schur", "logdet_eliminated",
                                            "quad")}
    chunk = max(1, 2_000_000 // max(C.size, 1))
    for a in range(0, len(beta), chunk):
        sl = slice(a, a + chunk)
        b1 = np.concatenate([np.ones((len(beta[sl]), 1)), -beta[sl]], axis=1)
        t = tau[sl][:, owner]  # (s, q): each level's tau; t[:, :mb] is the big factor's
        s2 = s2_all[sl]
        rr = np.einsum("si,ij,sj->s", b1, G, b1)
        c = t * (b1 @ zw.T)  # (s, q)
        kaa = s2[:, None] + t[:, :mb] ** 2 * na  # (s, m) the diagonal block
        ta, tb = t[:, 0], t[:, mb:]
        w = np.einsum("lr,sl,lp->srp", C, 1.0 / kaa, C, optimize=True)  # C' Kaa^-1 C
        S = (s2[:, None, None] * np.eye(q - mb) + tb[:, :, None] * tb[:, None, :]
             * (B0 - (ta**2)[:, None, None] * w))
        ca = c[:, :mb]
        cb = c[:, mb:] - ta[:, None] * tb * ((ca / kaa) @ C)
        L = np.linalg.cholesky(S)
        v = np.linalg.solve(L, cb[..., None])[..., 0]
        out["logdet_schur"][sl] = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
        out["logdet_eliminated"][sl] = np.log(kaa).sum(axis=1)
        out["quad"][sl] = (rr - (ca * ca / kaa).sum(axis=1) - (v * v).sum(axis=1)) / s2
        out["constant"][sl] = N * np.log(2.0 * np.pi) + (N - q) * np.log(s2)
    return out


def conditional_loglik(data, post, effects: Sequence[str],
                       likelihood: Likelihood = GAUSSIAN) -> np.ndarray | None:
    r"""(S,) log density of all rows per draw given the draw's effects, none integrated out.

    .. math::
        \log p(y\mid\beta,u,\sigma) = \textstyle\sum_i \log N\big(y_i;\ x_i\beta
        + \sum_f u_f[\mathrm{level}_f(i)],\ \sigma\big)

    ``effects``: the posterior variable of each factor's effects, in the design's factor order
    (the latent forms' ``u_<factor>``). O(draws x rows), a block of draws at a time
    (:func:`models.effects.draw_blocks`). None unless the posterior holds all of them.
    """
    factors = data.design.factors
    if len(effects) != len(factors) or any(e not in post for e in effects):
        return None
    X, y = data.design.X, data.y[:, 0]
    beta = _draws(post, "beta")
    params = dict(zip(likelihood.params, _params(post, likelihood), strict=True))
    us = [_draws(post, e) for e in effects]
    out = np.empty(len(beta))
    for b in draw_blocks(len(beta), y.size):
        mean = beta[b] @ X.T  # (s, N) linear predictor plus effects
        for u, f in zip(us, factors, strict=True):
            mean += u[b][:, f.codes]
        out[b] = likelihood.row_logp(y, mean, {p: v[b] for p, v in params.items()}).sum(axis=1)
    return out


def oneway_prior(data, post, priors) -> np.ndarray:
    """(S,) log prior of (mu, tau, sigma)."""
    return priors.logpdf_free(*(_draws(post, v) for v in ("mu", "tau", "sigma")))


def mixed_prior(data, post, priors) -> np.ndarray:
    """(S,) log prior of (alpha, slopes, tau, sigma) (:meth:`models.lmm.LmmPriors.logpdf`)."""
    beta, tau, sigma = (_draws(post, v) for v in ("beta", "tau", "sigma"))
    return priors.logpdf(beta, tau, sigma)


def mv_prior(data, post, priors) -> np.ndarray:
    """The density of (mu, sds, R) per draw: mu normal, sds HalfNormal, correlations LKJ(eta)."""
    from scipy import stats

    from varcomp.models.priors import lkj_log_norm

    mu = _draws(post, "mu")
    out = stats.norm(priors.mu_loc, priors.mu_scale).logpdf(mu).sum(axis=-1)
    for name, sds, eta in (("V", priors.tau_scale, priors.eta_between),
                           ("Sigma", priors.sigma_scale, priors.eta_within)):
        M = _draws(post, name)
        sd = np.sqrt(np.diagonal(M, axis1=-2, axis2=-1))
        R = M / (sd[..., :, None] * sd[..., None, :])
        out = out + stats.halfnorm(scale=np.asarray(sds)).logpdf(sd).sum(axis=-1)
        out = out + (eta - 1.0) * np.linalg.slogdet(R)[1] - lkj_log_norm(priors.p, eta)
    return out


def add_pointwise(idata, family, data, priors, effects: Sequence[str] = ()) -> str | None:
    """Add ``log_likelihood`` and ``log_prior`` to ``idata``; which likelihood, None if skipped.

    ``log_likelihood`` holds ``y``: each top-level cluster's log density (dim ``group``, from
    ``family.cluster_loglik``), or where the family has none (crossed designs) each draw's
    density of all rows (``family.total_loglik``; no ``group`` dim), both with the effects
    integrated out ("marginal"). Where the total is skipped for its cost and the posterior
    holds every factor's effects (``effects``, the latent forms' variables), it is each draw's
    density of all rows given them (:func:`conditional_loglik`, "conditional"). The kind is
    returned and kept as the group's ``likelihood`` attribute. Skipped where none applies and
    above :data:`MAX_POINTWISE` cluster values.
    """
    import warnings

    import xarray as xr

    post = idata.posterior
    shape = (post.sizes["chain"], post.sizes["draw"])
    ll = None
    if family.cluster_loglik:
        if shape[0] * shape[1] * data.n_groups > MAX_POINTWISE:
            return None
        ll = family.cluster_loglik(data, post, likelihood=family.likelihood)
    kind = "marginal"
    if ll is not None:
        coords = {"chain": post.chain, "draw": post.draw,
                  "group": [str(g) for g in data.groups]}
        loglik = xr.Dataset({"y": (("chain", "draw", "group"), ll.reshape(*shape, -1))},
                            coords=coords)
    else:
        total = (family.total_loglik(data, post, likelihood=family.likelihood)
                 if family.total_loglik else None)
        if total is None:
            if family.conditional_loglik:
                kind, total = "conditional", family.conditional_loglik(data, post, effects)
            else:
                kind, total = "conditional", conditional_loglik(data, post, effects,
                                                                likelihood=family.likelihood)
        if total is None:
            return None
        loglik = xr.Dataset({"y": (("chain", "draw"), total.reshape(shape))},
                            coords={"chain": post.chain, "draw": post.draw})
    loglik.attrs["likelihood"] = kind
    prior = xr.Dataset({"prior": (("chain", "draw"), family.log_prior(data, post,
                                                                      priors).reshape(shape))},
                       coords={"chain": post.chain, "draw": post.draw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in ("log_likelihood", "log_prior"):
            if group in idata.groups():
                del idata[group]
        idata.add_groups({"log_likelihood": loglik, "log_prior": prior})
    return kind
