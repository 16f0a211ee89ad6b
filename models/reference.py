"""A near-exact posterior of the one-way model by quadrature, to compare fits with."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import interpolate, optimize, special

from varcomp.models.data import ClusteredData
from varcomp.models.priors import Priors

__all__ = ["PROBS", "STATS", "ReferencePosterior", "reference_posterior"]

STATS = ("mean", "q05", "q50", "q95")
PROBS = {"q05": 0.05, "q50": 0.5, "q95": 0.95}


@dataclass(frozen=True)
class ReferencePosterior:
    """Near-exact posterior summaries by quadrature.

    Attributes
    ----------
    summary : DataFrame
        Index ``mu, tau, sigma, icc``; columns ``mean, q05, q50, q95``.
    log_tau, log_sigma : ndarray
        The final grid's axes.
    log_density : ndarray
        Unnormalised log posterior of (log tau, log sigma) on the grid, mu integrated out.
    """

    summary: pd.DataFrame
    log_tau: np.ndarray
    log_sigma: np.ndarray
    log_density: np.ndarray

    def value(self, param: str, stat: str) -> float:
        """One summary, e.g. ``value("tau", "q95")``."""
        return float(self.summary.loc[param, stat])


def _log_post_mu_integrated(n, xbar, ss, priors: Priors, lt, ls):
    r"""Log p(log tau, log sigma | X) + const with mu integrated out; and mu | tau, sigma.

    Given (tau, sigma) the likelihood is Gaussian in mu with precision sum_l w_l,
    w_l = n_l / (sigma^2 + n_l tau^2); with mu ~ N(m0, s0^2):

    .. math::
        \int p(X | \mu) p(\mu) d\mu = C \, (P s_0^2)^{-1/2}
            \exp\{-\tfrac12 [\textstyle\sum_l w_l (\bar x_l - m)^2 + (m - m_0)^2 / s_0^2]\},

    P = sum w + 1/s0^2, m = (sum w xbar + m0/s0^2) / P and C the mu-free part of
    :func:`models.density.marginal_logp_terms`. The Jacobian of (tau, sigma) -> logs adds
    log tau + log sigma. Returns (log density, conditional mean of mu, conditional var of mu).
    """
    lt, ls = np.broadcast_arrays(lt, ls)
    tau, sigma = np.exp(lt), np.exp(ls)
    s2, t2 = (sigma * sigma)[..., None], (tau * tau)[..., None]
    v = s2 + n * t2
    w = n / v
    m0, s0 = priors.mu.loc, priors.mu.scale
    prec = w.sum(-1) + 1.0 / s0**2
    # the mean relative to m0 keeps large offsets (data far from 0) exact
    m = m0 + (w * (xbar - m0)).sum(-1) / prec
    q = (w * (xbar - m[..., None]) ** 2).sum(-1) + (m - m0) ** 2 / s0**2
    c = (-0.5 * n * math.log(2 * math.pi) - 0.5 * (n - 1.0) * np.log(s2) - 0.5 * np.log(v)
         - 0.5 * ss / s2).sum(-1)
    lp = (c - 0.5 * q - 0.5 * np.log(prec * s0**2)
          + priors.tau.logpdf(tau) + priors.sigma.logpdf(sigma) + lt + ls)
    return lp, m, 1.0 / prec


def _grid_eval(n, xbar, ss, priors, lt, ls):
    """Log density on the outer product ``lt x ls`` (chunked over lt to bound memory)."""
    lp = np.empty((lt.size, ls.size))
    m = np.empty_like(lp)
    var = np.empty_like(lp)
    chunk = max(1, int(2_000_000 // max(ls.size * n.size, 1)))
    for i in range(0, lt.size, chunk):
        sl = slice(i, i + chunk)
        lp[sl], m[sl], var[sl] = _log_post_mu_integrated(n, xbar, ss, priors, lt[sl, None],
                                                         ls[None, :])
    return lp, m, var


def _marginal_summary(x: np.ndarray, log_m: np.ndarray, transform, probs, refine: int = 20):
    """Mean of ``transform(x)`` and quantiles of x from a log marginal density on nodes ``x``.

    log m is smooth, so a cubic spline of it, integrated on a ``refine`` times finer grid,
    makes the CDF (and its inversion) accurate far beyond the node spacing.
    """
    fine = np.linspace(x[0], x[-1], (x.size - 1) * refine + 1)
    lm = interpolate.CubicSpline(x, log_m - log_m.max())(fine)
    dens = np.exp(lm)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    total = cdf[-1]
    cdf /= total
    g = transform(fine)
    mean = float(np.sum(0.5 * (g[1:] * dens[1:] + g[:-1] * dens[:-1]) * np.diff(fine)) / total)
    qs = [float(transform(np.interp(p, cdf, fine))) for p in probs]
    return mean, qs


def _box(lt, ls, lp, drop: float):
    """Bounding box (one cell of padding) of the nodes with log density > max - drop."""
    keep = lp > lp.max() - drop
    it, js = np.nonzero(keep)
    ht, hs = lt[1] - lt[0], ls[1] - ls[0]
    return ((max(lt[0], lt[it.min()] - ht), min(lt[-1], lt[it.max()] + ht)),
            (max(ls[0], ls[js.min()] - hs), min(ls[-1], ls[js.max()] + hs)), keep)


def reference_posterior(
    data: ClusteredData,
    priors: Priors | None = None,
    *,
    grid: int = 256,
    drop: float = 40.0,
    k: int = 0,
) -> ReferencePosterior:
    r"""Near-exact posterior of the one-way model by quadrature.

    mu is integrated out analytically under its Normal prior (:func:`_log_post_mu_integrated`);
    (log tau, log sigma) is a ``grid`` x ``grid`` lattice, refined three times onto the box
    where the log density is within ``drop`` of its maximum (40 nats: the mass outside is
    below 1e-15 of the total for a Gaussian, about e^-40 for tau's exponential left tail on
    the log scale). Marginals of log tau, log sigma and u = log tau - log sigma (icc =
    logistic(2u), from a second lattice in (u, log sigma)) are summed over the other axis
    (spectrally accurate for smooth integrands) and integrated with a spline; mu's marginal is
    the mixture of its conditional normals over the lattice.

    Returns
    -------
    ReferencePosterior
        ``summary`` with the mean and 5/50/95% quantiles of mu, tau, sigma, icc.
    """
    priors = priors or Priors.default(data, k)
    n, xbar, ss = data.stats.column(k)
    s = priors.scale
    hi_t = math.log(max(priors.tau.quantile(1 - 1e-12), 10 * s))
    hi_s = math.log(max(priors.sigma.quantile(1 - 1e-12), 10 * s))
    bt, bs = (math.log(s) - 25.0, hi_t), (math.log(s) - 25.0, hi_s)
    for _ in range(4):
        lt, ls = np.linspace(*bt, grid), np.linspace(*bs, grid)
        lp, m, var = _grid_eval(n, xbar, ss, priors, lt, ls)
        if not np.isfinite(lp.max()):
            raise ValueError("reference posterior: the log density is not finite on the grid")
        bt, bs, keep = _box(lt, ls, lp, drop)
    lp0 = lp - lp.max()
    probs = [PROBS[q] for q in STATS[1:]]
    rows = {}
    log_mt = special.logsumexp(lp0, axis=1)
    rows["tau"] = _marginal_summary(lt, log_mt, np.exp, probs)
    log_ms = special.logsumexp(lp0, axis=0)
    rows["sigma"] = _marginal_summary(ls, log_ms, np.exp, probs)
    # mu: a mixture of normals N(m_ij, var_ij) with the lattice weights
    wts = np.exp(lp0)
    wts /= wts.sum()
    mm, sd = m.ravel(), np.sqrt(var.ravel())
    wv = wts.ravel()
    sel = wv > 1e-18 * wv.max()
    mm, sd, wv = mm[sel], sd[sel], wv[sel] / wv[sel].sum()

    def cdf(x: float) -> float:
        return float(np.sum(wv * special.ndtr((x - mm) / sd)))

    lo, hi = float((mm - 12 * sd).min()), float((mm + 12 * sd).max())
    mu_q = [optimize.brentq(lambda x, p=p: cdf(x) - p, lo, hi, xtol=1e-13 * max(1.0, abs(hi)),
                            rtol=1e-14) for p in probs]
    rows["mu"] = (float(np.sum(wv * mm)), mu_q)
    # icc = tau^2 / (tau^2 + sigma^2) = logistic(2u), u = log tau - log sigma: its own lattice
    uu = (lt[:, None] - ls[None, :])[keep]
    pad = (lt[1] - lt[0]) + (ls[1] - ls[0])
    bu = (uu.min() - pad, uu.max() + pad)
    u = np.linspace(*bu, grid)
    lpu, _, _ = _log_post_mu_integrated(n, xbar, ss, priors, u[:, None] + ls[None, :], ls[None, :])
    log_mu_u = special.logsumexp(lpu - lpu.max(), axis=1)
    rows["icc"] = _marginal_summary(u, log_mu_u, lambda x: special.expit(2.0 * x), probs)
    summary = pd.DataFrame({p: [rows[p][0], *rows[p][1]] for p in ("mu", "tau", "sigma", "icc")},
                           index=list(STATS)).T
    return ReferencePosterior(summary, lt, ls, lp)
