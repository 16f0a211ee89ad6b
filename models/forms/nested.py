r"""The nested family: ``y ~ X + (1|a/b/...)`` (pupils in classes in schools), in four forms.

.. math::
    y = X\beta + \sum_{d=1}^{D} Z_d u_d + e,\qquad u_d \sim N(0, \tau_d^2 I)

with every level-d unit inside one level-(d-1) unit. The forms: latent ``centred`` and
``noncentred``; ``marginal``, the literal MvNormal of each top-level unit's stacked rows
(units of one layout share a node); ``sufficient``, the closed form that applies the rank-one
identity once per level from per-cell statistics: O(cells x k) per gradient at any depth
(:mod:`models.compiled.lmm`). Names: ``beta``, ``tau`` and ``vpc`` by factor as written in the
formula (``batch``, ``batch:cask``), ``vpc[residual]``, ``corr`` (rows sharing the factors down
to a level), ``r2_marginal``, ``r2_conditional``.
"""

from __future__ import annotations

from varcomp.models.data import ClusteredData, DataError
from varcomp.models.forms import mixed
from varcomp.models.forms.base import Family, Form
from varcomp.models.lmm import LmmPriors, add_derived, add_top_effects, estimates, parse_lmm_priors
from varcomp.models.pointwise import mixed_loglik, mixed_prior
from varcomp.models.predictive import mixed_new_cluster

__all__ = ["FAMILY"]

MARGINAL_MAX_BLOCKS = 8
MARGINAL_MAX_UNIT = 200


def _skip_marginal(data: ClusteredData) -> str | None:
    try:
        blocks = mixed.unit_blocks(data, max_dim=MARGINAL_MAX_UNIT)
    except DataError as exc:
        return str(exc)
    if len(blocks) > MARGINAL_MAX_BLOCKS:
        return (f"the literal MvNormal would need {len(blocks)} blocks (distinct unit layouts; "
                f"limit {MARGINAL_MAX_BLOCKS} for --model all): ask for --model marginal to run "
                f"it anyway")
    return None


def _compiled(data: ClusteredData, priors: LmmPriors | None):
    from varcomp.models.compiled import lmm

    priors = priors or LmmPriors.default(data)
    return lmm.compile_nested(data, priors) if lmm.supported(priors) else None


FAMILY = Family(
    name="nested",
    title="nested random-intercept model",
    forms={
        "centred": Form("centred", "u_d ~ N(0, tau_d) per level, y ~ N(X beta + sum_d u_d, sigma)",
                        mixed.build_centred, mixed.latent_values, latent=True),
        "noncentred": Form("noncentred", "u_d = tau_d * u_d_offset", mixed.build_noncentred,
                           mixed.latent_values, latent=True),
        "marginal": Form("marginal", "literal MvNormal of each top-level unit's rows",
                         mixed.build_marginal_blocks, mixed.marginal_block_values,
                         skip=_skip_marginal),
        "sufficient": Form("sufficient", "closed form from per-cell statistics, one rank-one "
                           "update per level: O(cells x k)", mixed.build_sufficient_nested,
                           mixed.sufficient_nested_values, compiled=_compiled),
    },
    default_form="sufficient",
    default_priors=LmmPriors.default,
    parse_priors=lambda data, specs: parse_lmm_priors(LmmPriors.default(data), specs),
    headline="vpc",
    summary_vars=("beta", "tau", "sigma", "vpc", "corr", "deff", "r2_marginal", "r2_conditional"),
    compare_vars=("beta", "tau", "sigma", "vpc"),
    add_effects=lambda idata, data, seed: add_top_effects(idata, data, seed=seed),
    estimates=estimates,
    derive=add_derived,
    cluster_loglik=mixed_loglik,
    log_prior=mixed_prior,
    new_cluster=mixed_new_cluster,
    oracle="varcomp.models.checks.lmm:KIT",
    design=True,
)
