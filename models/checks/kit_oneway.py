"""The one-way family's check kit (:class:`models.checks.logp.CheckKit`).

The oracle is scipy's MvNormal of each cluster's stacked rows (:func:`oracles.scipy_loglik`);
points are random (mu, tau, sigma) with tau / sigma log-spaced over 1e-4..1e2; a form's
likelihood is its whole log density minus its own prior terms, the group effects integrated out
exactly (:func:`integrated_loglik`); the compiled twin is :mod:`models.compiled.oneway`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from varcomp.models.checks.base import constrained_logp
from varcomp.models.checks.kit import CheckKit, Native, split_point
from varcomp.models.checks.oracles import scipy_loglik
from varcomp.models.data import ClusteredData
from varcomp.models.density import group_effect_conditional

__all__ = ["KIT", "integrated_loglik"]


def integrated_loglik(model, data: ClusteredData, priors, mode: str | None = None) -> Callable:
    r"""``f(point) -> (log p(X | mu, tau, sigma), prior)`` from ``model``'s own logp.

    The likelihood is the model's whole log density minus its own prior terms of mu, tau and
    sigma (also returned, to compare with :meth:`Priors.logpdf`), with the group effects
    integrated out exactly. For Gaussian latents the identity
    :math:`\log p(X) = \log p(X, \hat M) + \sum_l \tfrac12 \log(2\pi v_l)` holds, with
    :math:`\hat M_l, v_l` the conditional mean and variance of M_l given the data
    (:func:`models.density.group_effect_conditional`): log p(X, M) is quadratic in M with
    curvature 1 / v_l. The non-centred model's latent is the offset o = M / tau, whose density
    is tau times M's (p_o(o) = tau p_M(tau o)), so its joint is corrected by -L log(tau) to
    compare densities in the M space. Models without latents need no correction.
    """
    fn, names = constrained_logp(model, mode, prior_names=priors.free_names)
    n = data.stats.n[:, 0].astype(np.float64)
    xbar = data.stats.mean[:, 0]
    if (n < 1).any():
        raise ValueError("every group needs at least one observation for the latent identity")
    latent = "group_effect" if "group_effect" in names else (
        "group_effect_offset" if "group_effect_offset" in names else None)

    def f(p: dict) -> tuple[float, float]:
        mu, tau, sigma = p["mu"], p["tau"], p["sigma"]
        point = dict(priors.free_point(mu, tau, sigma))
        correction = 0.0
        if latent is not None:
            m_hat, v = group_effect_conditional(n, xbar, mu, tau, sigma)
            correction = 0.5 * float(np.sum(np.log(2.0 * np.pi * v)))
            if latent == "group_effect":
                point[latent] = m_hat
            else:  # offset o = M / tau: p_o(o) = tau p_M(tau o), one factor per group
                point[latent] = m_hat / tau
                correction -= n.size * math.log(tau)
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def points(data: ClusteredData, priors, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (mu, tau, sigma): sigma near the within-group sd, tau/sigma from 1e-4 to 1e2."""
    n, _, ss = data.stats.column(0)
    dof = n.sum() - n.size
    sigma0 = math.sqrt(ss.sum() / dof) if dof > 0 and ss.sum() > 0 else priors.scale
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)  # covers tau -> 0 and tau >> sigma
    rng.shuffle(ratio)
    sigma = sigma0 * np.exp(rng.uniform(-1.0, 1.0, n_points))
    mu = float(np.mean(data.y[:, 0])) + priors.scale * rng.normal(0.0, 1.0, n_points)
    return [{"mu": float(m), "tau": float(r * s), "sigma": float(s), "tau_over_sigma": float(r)}
            for m, r, s in zip(mu, ratio, sigma, strict=True)]


def native(data: ClusteredData, priors, model) -> Native:
    """The compiled one-way kernel; its coordinates are the PyMC model's value variables."""
    from varcomp.models.compiled import oneway

    block = oneway.parameter_block(data.stats, priors)
    size, point = split_point(model)
    return Native(size, lambda z: oneway.logp_and_grad(z, block), point, lambda g: g)


KIT = CheckKit(
    oracle=lambda data, p: scipy_loglik(data, p["mu"], p["tau"], p["sigma"]),
    oracle_name="scipy MvNormal of each cluster's stacked rows",
    points=points,
    integrated=integrated_loglik,
    prior_logpdf=lambda priors, p: priors.logpdf_free(p["mu"], p["tau"], p["sigma"]),
    native=native,
    n_points=20,
    mode=lambda data: "FAST_COMPILE" if int(data.sizes.max()) <= 50 else "FAST_RUN",
)
"""The one-way family's check kit."""
