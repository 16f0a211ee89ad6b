r"""Each top-level cluster's log-likelihood and the log prior, per posterior draw, for every family.

A cluster's log-likelihood here is log p(y_i | theta) with the cluster's own effects integrated
out (the marginal density of its rows, from the closed forms): the quantity whose leave-one-out
predictive density is the leave-one-*cluster*-out elpd, what ``arviz.loo`` computes from the
``log_likelihood`` group these functions fill (dim ``group``). It differs from per-row LOO, which
predicts a held-out row of a cluster whose effect the other rows have pinned down. The log
prior (group ``log_prior``) is the density of the priors as specified (the model's own
parameters), which ``arviz.psens`` power-scales. Crossed designs have no per-cluster density
(the clusters share the other factors' levels): they get neither group.
"""

from __future__ import annotations

import numpy as np

from varcomp.models.effects import draw_blocks

__all__ = ["MAX_POINTWISE", "add_pointwise", "mixed_loglik", "mixed_prior", "mv_loglik",
           "mv_prior", "oneway_loglik", "oneway_prior"]

MAX_POINTWISE = 10_000_000
"""Largest chains x draws x clusters stored in ``log_likelihood`` (80 MB of float64)."""


def _draws(post, name: str) -> np.ndarray:
    """A posterior variable as (S, ...) with S = chains x draws."""
    v = post[name].values
    return v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])


def oneway_loglik(data, post) -> np.ndarray:
    """(S, L) one-way cluster log densities (:func:`models.density.marginal_logp_terms`)."""
    from varcomp.models.density import marginal_logp_terms

    n, xbar, ss = data.stats.n[:, 0].astype(np.float64), data.stats.mean[:, 0], data.stats.ss[:, 0]
    mu, tau, sigma = (_draws(post, v)[:, None] for v in ("mu", "tau", "sigma"))
    out = np.empty((len(mu), n.size))
    for b in draw_blocks(len(mu), n.size):
        out[b] = marginal_logp_terms(n, xbar, ss, mu[b], tau[b], sigma[b])
    return out


def mv_loglik(data, post, chunk: int = 200) -> np.ndarray:
    """(S, L) multivariate cluster log densities (:func:`models.mvstats.cluster_loglik`)."""
    from varcomp.models.mvstats import cluster_loglik, pattern_stats

    st = pattern_stats(data)
    mu, V, Sigma = (_draws(post, v) for v in ("mu", "V", "Sigma"))
    return np.concatenate([cluster_loglik(st, mu[a:a + chunk], V[a:a + chunk],
                                          Sigma[a:a + chunk]) for a in range(0, len(mu), chunk)])


def mixed_loglik(data, post, chunk: int = 200) -> np.ndarray | None:
    """(S, L) top-level unit log densities; None when the factors cross.

    See :func:`models.lmm.unit_loglik`.
    """
    from varcomp.models.lmm import unit_loglik, unit_loglik_prepared

    if not data.design.nested:
        return None
    beta, tau, sigma = (_draws(post, v) for v in ("beta", "tau", "sigma"))
    prepared = unit_loglik_prepared(data)
    return np.concatenate([unit_loglik(data, beta[a:a + chunk], tau[a:a + chunk],
                                       sigma[a:a + chunk], prepared=prepared)
                           for a in range(0, len(beta), chunk)])


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


def add_pointwise(idata, family, data, priors) -> bool:
    """Add ``log_likelihood`` (dim ``group``) and ``log_prior`` to ``idata``; False if skipped.

    ``family``'s ``cluster_loglik`` and ``log_prior`` compute them; skipped where the family has
    no per-cluster density (crossed designs) and above :data:`MAX_POINTWISE` values.
    """
    import warnings

    import xarray as xr

    post = idata.posterior
    shape = (post.sizes["chain"], post.sizes["draw"])
    if shape[0] * shape[1] * data.n_groups > MAX_POINTWISE:
        return False
    ll = family.cluster_loglik(data, post) if family.cluster_loglik else None
    if ll is None:
        return False
    coords = {"chain": post.chain, "draw": post.draw, "group": [str(g) for g in data.groups]}
    loglik = xr.Dataset({"y": (("chain", "draw", "group"), ll.reshape(*shape, -1))},
                        coords=coords)
    prior = xr.Dataset({"prior": (("chain", "draw"), family.log_prior(data, post,
                                                                      priors).reshape(shape))},
                       coords={"chain": post.chain, "draw": post.draw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in ("log_likelihood", "log_prior"):
            if group in idata.groups():
                del idata[group]
        idata.add_groups({"log_likelihood": loglik, "log_prior": prior})
    return True
