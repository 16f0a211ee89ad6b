r"""The crossed family: ``y ~ X + (1|a) + (1|b) [+ (1|a:b)]``, in four forms.

The model (parts x operators, students x lecturers):

.. math::
    y = X\beta + \sum_f Z_f u_f + e,\qquad u_f \sim N(0, \tau_f^2 I)

with factors that do not nest. The covariance does not split into independent blocks, so:
latent ``centred`` and ``noncentred`` for every design, and ``partial`` between them (it centres
the factors whose levels the rows pin down and non-centres the others, :func:`centring`: the
default for unbalanced data); ``marginal``, one MvNormal of all rows while N is small
(:data:`MARGINAL_MAX_ROWS`); ``sufficient`` for balanced designs only (every combination of the
grouping variables equally often), whose covariance has parameter-free eigenspaces, the ANOVA
strata: the closed form costs O(2^|F| k^2) per gradient (:mod:`models.compiled.lmm_strata`).
An unbalanced crossed design has no closed form: ``sufficient`` does not apply (its ``applies``
gives the reason; asked for by name it is refused with it).
Names as the nested family's: ``beta``, ``tau`` and ``vpc`` by factor, ``corr``, R^2.
"""

from __future__ import annotations

import numpy as np

from varcomp.models.cells import strata_of
from varcomp.models.data import ClusteredData, DataError
from varcomp.models.density import LOG_2PI
from varcomp.models.forms import mixed
from varcomp.models.forms.base import Family, Form
from varcomp.models.lmm import LmmPriors, add_derived, estimates, parse_lmm_priors
from varcomp.models.pointwise import crossed_loglik, mixed_prior
from varcomp.models.predictive import mixed_new_cluster

__all__ = ["FAMILY", "build_centred_where_identified", "build_sufficient_strata", "centring",
           "level_information"]

MARGINAL_MAX_ROWS = 300
"""``--model all`` runs the all-rows MvNormal (O(N^3) per gradient) up to this many rows."""


def build_sufficient_strata(data: ClusteredData, *, priors: LmmPriors | None = None):
    r"""Closed form of a balanced crossed design through its ANOVA strata.

    .. math::
        \log L = -\tfrac N2\log 2\pi - \tfrac12\sum_S\big[\dim_S\log\lambda_S
                 + \lVert P_S(y - X\beta)\rVert^2/\lambda_S\big],\quad
        \lambda_S = \sigma^2 + \textstyle\sum_{T \supseteq S} \tau_T^2\, n \prod_{f \notin T} m_f

    from per-stratum cross-products (``pm.Data`` ``strata_yy``, ``strata_xy``, ``y_mean``,
    ``ybar_c``).
    """
    import pymc as pm
    import pytensor.tensor as pt

    st = strata_of(data)
    model, priors = mixed.start(data, priors)
    n_f = len(data.design.factors)
    with model:
        yy = pm.Data("strata_yy", st.yy)
        xy = pm.Data("strata_xy", st.xy)
        y_mean = pm.Data("y_mean", np.asarray(st.y_mean))
        ybar_c = pm.Data("ybar_c", np.asarray(st.ybar_c))
        beta, tau, sigma = priors.create()
        t = pt.stack([priors.tau_at(tau, d) for d in range(n_f)])
        lam = sigma**2 + pt.dot(pt.as_tensor(st.coef), t**2)
        e = y_mean + ybar_c - pt.dot(st.x_mean + st.xbar_c, beta)
        quad = yy - 2.0 * pt.dot(xy, beta) + pt.sum(pt.dot(pt.as_tensor(st.xx), beta) * beta,
                                                     axis=-1)
        quad = pt.set_subtensor(quad[0], st.n_obs * e**2)  # the grand-mean stratum
        keep = st.dim > 0
        logl = -0.5 * st.n_obs * LOG_2PI - 0.5 * pt.sum(
            (st.dim * pt.log(lam) + quad / lam)[np.flatnonzero(keep)])
        pm.Potential("loglik", logl)
    return model


def _sufficient_values(data: ClusteredData) -> dict[str, np.ndarray]:
    st = strata_of(data)
    return {"strata_yy": st.yy, "strata_xy": st.xy, "y_mean": np.asarray(st.y_mean),
            "ybar_c": np.asarray(st.ybar_c)}


def _sufficient_applies(data: ClusteredData) -> str | None:
    """None for a balanced design; else why it has no closed form (:func:`strata_of`)."""
    try:
        strata_of(data)
    except DataError as exc:
        return str(exc)
    return None


def _skip_marginal(data: ClusteredData) -> str | None:
    if data.n_obs <= MARGINAL_MAX_ROWS:
        return None
    return (f"the literal MvNormal of all {data.n_obs:,} rows costs O(N^3) per gradient (limit "
            f"{MARGINAL_MAX_ROWS} rows for --model all): ask for --model marginal to run it")


def _compiled(data: ClusteredData, priors: LmmPriors | None):
    from varcomp.models.compiled import lmm

    priors = priors or LmmPriors.default(data)
    return lmm.compile_strata(data, priors) if lmm.supported(priors) else None


CENTRED_MIN_INFO = 1.0
"""Information about a level's effect, from which a factor's effects are centred (see
:func:`centring`): n tau^2 / sigma^2 = 1 is where a level's rows and the prior weigh the same."""


def level_information(data) -> np.ndarray:
    r"""Each factor's information about its median level's effect, relative to the prior's.

    :math:`I_f = \tilde n_f\,\hat\tau_f^2/\hat\sigma^2`, with :math:`\tilde n_f` the median
    rows per level and :math:`\hat\tau, \hat\sigma` the REML estimate
    (:func:`models.lmm.estimates`' optimiser). Given tau and sigma, a level's effect has posterior
    variance :math:`\tau^2/(1 + I)`: for I >> 1 its rows pin it down (centred geometry is
    nearly Gaussian), for I << 1 the prior does (the centred funnel; non-centred offsets are
    nearly independent of tau).
    """
    from varcomp.models.cells import factor_codes, level_sizes
    from varcomp.models.lmm_estimate import fit_lmm_cells

    d, cells = data.design, data.cells
    reml = fit_lmm_cells(cells.n, cells.mean, cells.m2,
                         [factor_codes(cells, f) for f in d.factors], reml=True,
                         terms=list(d.terms), names=[f.name for f in d.factors])
    tau = np.array([reml.tau[f.name] for f in d.factors], dtype=np.float64)
    medians = np.array([np.median(n) for n in level_sizes(data)])
    return medians * tau**2 / max(float(reml.sigma) ** 2, 1e-300)


def centring(data) -> tuple[bool, ...]:
    """Per factor: centre its effects (True) where :func:`level_information` >= 1.

    The ``partial`` form of the crossed family (partially non-centred), the default for
    unbalanced designs. One rule
    for the whole model cannot serve ScotsSec (primary schools I = 1.3, secondary schools
    I = 0.6): fully centred fails the gate there and fully non-centred mixes slowly on
    InstEval's shape (both I > 1); docs/guide/models.md has the numbers.
    """
    return tuple(bool(i >= CENTRED_MIN_INFO) for i in level_information(data))


def build_centred_where_identified(data: ClusteredData, *, priors: LmmPriors | None = None):
    """The latent model, each factor centred or not by :func:`centring`."""
    return mixed.build_latent(data, priors=priors, centred=centring(data))


def _no_effects(idata, data, seed) -> None:
    """Draw no crossed effects: given (beta, tau, sigma) they need a q x q solve per draw.

    The latent forms carry them.
    """
    return None


FAMILY = Family(
    name="crossed",
    title="crossed random-intercept model",
    forms={
        "centred": Form("centred", "u_f ~ N(0, tau_f) per factor, y ~ N(X beta + sum_f u_f, "
                        "sigma)", mixed.build_centred, mixed.latent_values, latent=True),
        "noncentred": Form("noncentred", "u_f = tau_f * u_f_offset", mixed.build_noncentred,
                           mixed.latent_values, latent=True),
        "partial": Form("partial", "u_f ~ N(0, tau_f) for each factor whose levels the rows pin "
                        "down (n tau^2 / sigma^2 >= 1 at REML), u_f = tau_f * u_f_offset for the "
                        "others", build_centred_where_identified, mixed.latent_values,
                        latent=True),
        "marginal": Form("marginal", "literal MvNormal of all rows (small data)",
                         mixed.build_marginal_all, lambda data: {"y_obs": data.y[:, 0].copy()},
                         skip=_skip_marginal),
        "sufficient": Form("sufficient", "closed form through the ANOVA strata (balanced "
                           "designs): O(2^F k^2)", build_sufficient_strata, _sufficient_values,
                           compiled=_compiled, applies=_sufficient_applies),
    },
    default_form="sufficient",
    fallback_form="partial",
    default_priors=LmmPriors.default,
    parse_priors=lambda data, specs: parse_lmm_priors(LmmPriors.default(data), specs),
    headline="vpc",
    summary_vars=("beta", "tau", "sigma", "vpc", "corr", "deff", "r2_marginal", "r2_conditional"),
    compare_vars=("beta", "tau", "sigma", "vpc"),
    add_effects=_no_effects,
    estimates=estimates,
    derive=add_derived,
    total_loglik=crossed_loglik,
    log_prior=mixed_prior,
    new_cluster=mixed_new_cluster,
    oracle="varcomp.models.checks.lmm:KIT",
    design=True,
)

