r"""The posterior predictive of a new cluster: its effect and its mean, for every family.

A cluster not in the data has effect M_new ~ N(0, tau^2) (multivariate: N_p(0, V)) given the
parameters, so per posterior draw M_new = tau z with z ~ N(0, 1), and its mean is the model's
mean at the covariates' averages plus M_new: mu + M_new (one-way), x-bar' beta + M_new (mixed
models; for several factors M_new is a new level of the top factor, averaged over the others).
These are what a user predicting a new school, batch or county needs: the spread of cluster
means around the grand mean, not the uncertainty of the grand mean alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_new_cluster", "mixed_new_cluster", "mv_new_cluster", "oneway_new_cluster"]


def oneway_new_cluster(data, post, rng) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """One-way: effect tau z, mean mu + effect."""
    tau = post["tau"].values
    effect = tau * rng.standard_normal(tau.shape)
    return {"new_cluster_effect": ((), effect), "new_cluster_mean": ((), post["mu"].values
                                                                      + effect)}


def mv_new_cluster(data, post, rng) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Multivariate: effect L_V z (dim outcome), mean mu + effect."""
    V = post["V"].values
    L = np.linalg.cholesky(V)
    effect = np.einsum("...ij,...j->...i", L, rng.standard_normal(V.shape[:-1]))
    return {"new_cluster_effect": (("outcome",), effect),
            "new_cluster_mean": (("outcome",), post["mu"].values + effect)}


def mixed_new_cluster(data, post, rng) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Mixed models: effect tau_top z, mean x-bar' beta + effect (x-bar: the covariates' means)."""
    from varcomp.models.forms import family_of

    tau = post["tau"].values
    tau_top = tau if family_of(data).scalar_tau else tau[..., 0]
    effect = tau_top * rng.standard_normal(tau_top.shape)
    xbar = data.cells.pooled[0][1:]  # the covariates' means
    return {"new_cluster_effect": ((), effect),
            "new_cluster_mean": ((), post["beta"].values @ xbar + effect)}


def add_new_cluster(idata, family, data, seed: int | None = 0) -> None:
    """Add the family's new-cluster draws to ``idata.posterior_predictive``."""
    import warnings

    import xarray as xr

    if family.new_cluster is None:
        return
    post = idata.posterior
    draws = family.new_cluster(data, post, np.random.default_rng(seed))
    coords = {"chain": post.chain, "draw": post.draw}
    if "outcome" in post.coords:
        coords["outcome"] = post.outcome
    ds = xr.Dataset({k: (("chain", "draw", *dims), v) for k, (dims, v) in draws.items()},
                    coords=coords)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "posterior_predictive" in idata.groups():
            idata.posterior_predictive.update(ds)
        else:
            idata.add_groups({"posterior_predictive": ds})
