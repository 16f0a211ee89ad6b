r"""The random-intercept regression family: ``y ~ x1 + C(x2) + (1|g)``, in four forms.

.. math::
    y_{lj} = x_{lj}^\top\beta + M_l + e_{lj},\qquad M_l \sim N(0, \tau^2),\qquad
    e_{lj} \sim N(0, \sigma^2)

The forms: latent ``centred`` and ``noncentred`` (:mod:`models.forms.mixed`), the literal
``marginal`` MvNormal of each cluster (mean X_l beta, the one-way model's padded blocks and
closed-form Cholesky factor), and ``sufficient``: the closed form from the global X'X, X'y, y'y
and each cluster's (n_l, 1'y_l, X_l'1), O(L k) per gradient (run as :mod:`models.compiled.lmm`,
grouped by cluster size). Names: ``beta`` (dim ``term``, formulae's column names), ``tau``,
``sigma``, and per draw ``icc`` (adjusted), ``icc_unadjusted``, ``r2_marginal``,
``r2_conditional`` (:func:`models.lmm.add_derived`).
"""

from __future__ import annotations

import numpy as np

from varcomp.models.data import ClusteredData
from varcomp.models.forms import mixed
from varcomp.models.forms.base import Family, Form
from varcomp.models.forms.oneway import (
    MARGINAL_MAX_CLUSTER,
    check_padded_memory,
    padded_mvnormal,
    padded_rows,
)
from varcomp.models.lmm import LmmPriors, add_derived, add_top_effects, estimates, parse_lmm_priors
from varcomp.models.pointwise import mixed_loglik, mixed_prior
from varcomp.models.predictive import mixed_new_cluster

__all__ = ["FAMILY", "build_marginal"]


def _blocks(data: ClusteredData):
    y = data.y[:, 0]
    return [(n, rows, real, np.where(real, y[rows], 0.0))
            for n, rows, real in padded_rows(data.codes, data.sizes)]


def build_marginal(data: ClusteredData, *, priors: LmmPriors | None = None):
    r"""Marginal form: the literal MvNormal(X_l beta, sigma^2 I + tau^2 11^T) of each cluster.

    The one-way model's padded size-range blocks (:func:`models.forms.oneway.padded_mvnormal`:
    closed-form Cholesky factor, the padding's constant added back) with mean X_l beta. Same
    posterior as the sufficient form.
    """
    import pytensor.tensor as pt

    blocks = _blocks(data)
    check_padded_memory([(n, v) for n, _, _, v in blocks], data.sizes)
    model, priors = mixed.start(data, priors)
    X = data.design.X
    with model:
        beta, tau, sigma = priors.create()
        means = [pt.dot(pt.as_tensor(X[rows]), beta) * real.astype(np.float64)
                 for _, rows, real, _ in blocks]
        padded_mvnormal([(n, v) for n, _, _, v in blocks], sigma, tau, means)
    return model


def _marginal_values(data: ClusteredData) -> dict[str, np.ndarray]:
    return {f"y_b{v.shape[1]}_obs": v for _, _, _, v in _blocks(data)}


def _skip_marginal(data: ClusteredData) -> str | None:
    biggest = int(data.sizes.max())
    if biggest <= MARGINAL_MAX_CLUSTER:
        return None
    return (f"the literal MvNormal costs O(n^2) per cluster and gradient and a cluster has "
            f"{biggest} rows (limit {MARGINAL_MAX_CLUSTER} for --model all): ask for "
            f"--model marginal to run it anyway")


def _compiled(data: ClusteredData, priors: LmmPriors | None):
    from varcomp.models.compiled import lmm

    priors = priors or LmmPriors.default(data)
    return lmm.compile_nested(data, priors) if lmm.supported(priors) else None


FAMILY = Family(
    name="regression",
    title="random-intercept regression",
    forms={
        "centred": Form("centred", "group_effect ~ N(0, tau), y ~ N(X beta + group_effect, "
                        "sigma)", mixed.build_centred, mixed.latent_values, latent=True),
        "noncentred": Form("noncentred", "group_effect = tau * group_effect_offset",
                           mixed.build_noncentred, mixed.latent_values, latent=True),
        "marginal": Form("marginal", "literal MvNormal(X_l beta, sigma^2 I + tau^2 11') per "
                         "cluster", build_marginal, _marginal_values, skip=_skip_marginal),
        "sufficient": Form("sufficient", "closed form from X'X, X'y, y'y and (n_l, 1'y_l, X_l'1):"
                           " O(L k) per gradient", mixed.build_sufficient_nested,
                           mixed.sufficient_nested_values, compiled=_compiled),
    },
    default_form="sufficient",
    default_priors=LmmPriors.default,
    parse_priors=lambda data, specs: parse_lmm_priors(LmmPriors.default(data), specs),
    summary_vars=("beta", "tau", "sigma", "icc", "icc_unadjusted", "r2_marginal",
                  "r2_conditional"),
    compare_vars=("beta", "tau", "sigma", "icc"),
    add_effects=lambda idata, data, seed: add_top_effects(idata, data, seed=seed),
    estimates=estimates,
    derive=add_derived,
    cluster_loglik=mixed_loglik,
    log_prior=mixed_prior,
    new_cluster=mixed_new_cluster,
    oracle="varcomp.models.checks.lmm:KIT",
    design=True,
    scalar_tau=True,
)
