r"""PyMC builders of the one-way model: four parameterisations of one posterior.

.. math::
    X_{lj} = \mu + M_l + e_{lj},\quad M_l \sim N(0, \tau^2),\quad e_{lj} \sim N(0, \sigma^2)

Every builder returns an unfitted ``pm.Model`` with coords ``group`` (the real labels), the
same free parameters ``mu``, ``tau``, ``sigma`` created by :meth:`models.priors.Priors.create`,
and the Deterministic ``icc = tau^2 / (tau^2 + sigma^2)``. :mod:`models.checks` shows that
their log densities (with the latent effects integrated out) agree to 1e-9 and that their
posteriors agree within Monte Carlo error.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from models.data import ClusteredData
from models.density import compound_symmetry_chol, group_effect_conditional, marginal_logp
from models.priors import Priors
from models.transforms import Affine

__all__ = [
    "add_group_effects",
    "build_centred",
    "build_marginal",
    "build_noncentred",
    "build_sufficient",
]


def _start(data: ClusteredData, priors: Priors | None) -> tuple[pm.Model, Priors]:
    if data.p != 1:
        raise ValueError("univariate builder given multivariate data; use models.multivariate")
    priors = priors or Priors.default(data)
    model = pm.Model(coords={"group": [str(g) for g in data.groups]})
    return model, priors


def _icc(tau, sigma):
    return pm.Deterministic("icc", tau**2 / (tau**2 + sigma**2))


def build_centred(data: ClusteredData, *, priors: Priors | None = None) -> pm.Model:
    r"""Latent (centred) form: ``group_effect ~ N(0, tau)``, ``y ~ N(mu + group_effect, sigma)``.

    Same posterior for ``mu``, ``tau``, ``sigma``, ``icc`` as :func:`build_sufficient`, which
    integrates the group effects out. Struggles when tau is near 0 (funnel).
    """
    model, priors = _start(data, priors)
    with model:
        mu, tau, sigma = priors.create()
        effect = pm.Normal("group_effect", 0.0, tau, dims="group",
                           default_transform=Affine(0.0, priors.scale))
        pm.Normal("y", mu + effect[data.codes], sigma, observed=data.y[:, 0])
        _icc(tau, sigma)
    return model


def build_noncentred(data: ClusteredData, *, priors: Priors | None = None) -> pm.Model:
    r"""Non-centred form: ``group_effect = tau * group_effect_offset``, offset ~ N(0, 1).

    The same model as :func:`build_centred` in other coordinates; struggles when the data pin
    the group effects down (large n_l or ICC near 1).
    """
    model, priors = _start(data, priors)
    with model:
        mu, tau, sigma = priors.create()
        offset = pm.Normal("group_effect_offset", 0.0, 1.0, dims="group")
        effect = pm.Deterministic("group_effect", tau * offset, dims="group")
        pm.Normal("y", mu + effect[data.codes], sigma, observed=data.y[:, 0])
        _icc(tau, sigma)
    return model


def size_blocks(data: ClusteredData) -> dict[int, np.ndarray]:
    """Clusters grouped by size: ``{k: (number of clusters of size k, k) response matrix}``.

    Rows are ordered by group then by their order in the data (a stable sort of the codes).
    """
    y = data.y[:, 0]
    order = np.argsort(data.codes, kind="stable")
    sizes = data.sizes
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ys = y[order]
    blocks: dict[int, np.ndarray] = {}
    for k in np.unique(sizes):
        g = np.flatnonzero(sizes == k)
        idx = starts[g][:, None] + np.arange(k)[None, :]
        blocks[int(k)] = ys[idx]
    return blocks


def build_marginal(data: ClusteredData, *, priors: Priors | None = None) -> pm.Model:
    r"""Marginal form: the literal MvNormal of each cluster, group effects integrated out.

    .. math::
        X_l \sim \mathrm{MvNormal}(\mu \mathbf 1, \sigma^2 I + \tau^2 \mathbf 1 \mathbf 1^\top)

    Clusters of equal size share one ``pm.MvNormal`` (observed ``y_n{k}``, shape (clusters, k)).
    Its Cholesky factor is given in closed form (:func:`models.density.compound_symmetry_chol`),
    so PyMC's MvNormal log density is used as is, while no O(k^3) factorisation or its gradient
    enters the graph; a cluster of size k costs O(k^2).
    """
    model, priors = _start(data, priors)
    with model:
        mu, tau, sigma = priors.create()
        for k, block in size_blocks(data).items():
            chol = compound_symmetry_chol(k, sigma, tau, xp=pt)
            pm.MvNormal(f"y_n{k}", mu=pt.ones(k) * mu, chol=chol, observed=block)
        _icc(tau, sigma)
    return model


def build_sufficient(data: ClusteredData, *, priors: Priors | None = None) -> pm.Model:
    r"""Closed-form marginal from sufficient statistics (n_l, xbar_l, S_l): O(L) per gradient.

    ``pm.Potential("loglik", ...)`` adds :func:`models.density.marginal_logp`, normalising
    constants included, so the model's log density equals the MvNormal form's exactly.
    """
    model, priors = _start(data, priors)
    n, xbar, ss = data.stats.column(0)
    with model:
        mu, tau, sigma = priors.create()
        pm.Potential("loglik", marginal_logp(n, xbar, ss, mu, tau, sigma, xp=pt))
        _icc(tau, sigma)
    return model


def add_group_effects(idata, data: ClusteredData, *, seed: int | None = 0):
    """Add exact ``group_effect`` draws to a posterior that integrated them out.

    For each posterior draw of (mu, tau, sigma), M_l is drawn from its conditional Normal
    N(n tau^2 (xbar - mu)/(sigma^2 + n tau^2), tau^2 sigma^2/(sigma^2 + n tau^2)), which makes
    (mu, tau, sigma, M) a draw from the joint posterior of the latent model. Does nothing if
    the posterior already has ``group_effect``.
    """
    post = idata.posterior
    if "group_effect" in post:
        return idata
    rng = np.random.default_rng(seed)
    n = data.stats.n[:, 0].astype(np.float64)
    xbar = data.stats.mean[:, 0]
    mu = post["mu"].values[..., None]
    tau = post["tau"].values[..., None]
    sigma = post["sigma"].values[..., None]
    mean, var = group_effect_conditional(n, xbar, mu, tau, sigma)
    draws = mean + np.sqrt(var) * rng.standard_normal(mean.shape)
    post["group_effect"] = xr.DataArray(
        draws, dims=("chain", "draw", "group"),
        coords={"chain": post.chain, "draw": post.draw, "group": [str(g) for g in data.groups]})
    return idata
