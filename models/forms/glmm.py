r"""The random-intercept GLMM families: binomial (Bernoulli) and Poisson responses.

.. math::
    g(E[y_i]) = \eta_i = x_i^\top\beta + \textstyle\sum_f u_{f, l_f(i)} + \text{offset}_i,
    \qquad u_f \sim N(0, \tau_f^2 I)

One builder serves every random-intercept structure (one factor, nested, crossed, with
covariates): the latent forms ``centred`` (``u_f ~ N(0, tau_f)``) and ``noncentred``
(``u_f = tau_f * u_f_offset``). The response distribution is the data's likelihood record
(:mod:`models.likelihoods.binomial`, :mod:`models.likelihoods.poisson`), which creates the
observed rows ``y`` from the linear predictor. With one factor, ``marginal`` and ``sufficient``
integrate the intercept out by quadrature (:mod:`models.forms.glmm_integrated`; the default is
``sufficient`` where no covariate varies within clusters, else ``marginal``); with several they
are absent (their reason names the latent forms). Names as the Gaussian mixed
families: ``beta`` (dim ``term``), ``tau`` (scalar for one factor, dim ``factor`` otherwise),
``group_effect`` (dim ``group``, one factor) or ``u_<factor>``; per draw ``icc`` (latent),
``icc_data``, ``vpc`` (several factors), ``r2_marginal``/``r2_conditional`` with covariates
(:func:`models.glmm.add_derived`). Priors: :class:`models.glmm.GlmmPriors` (link scale).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from varcomp.models.forms import glmm_integrated as integ
from varcomp.models.forms import mixed
from varcomp.models.forms.base import Family, Form
from varcomp.models.glmm import (
    GlmmPriors,
    add_derived,
    estimates,
    likelihood_of,
    parse_glmm_priors,
)
from varcomp.models.likelihoods import BINOMIAL, POISSON, Likelihood

__all__ = ["FAMILIES", "build_centred", "build_latent", "build_noncentred",
           "conditional_loglik", "latent_values"]



def build_latent(data, *, priors: GlmmPriors | None = None, centred: bool = True):
    """The latent GLMM with every factor's effects centred (or all non-centred)."""
    import pymc as pm
    import pytensor.tensor as pt

    priors = priors or GlmmPriors.default(data)
    model, _ = mixed.start(data, priors)
    design = data.design
    n_f = len(design.factors)
    with model:
        beta, tau = priors.create()
        eta = pt.dot(pt.as_tensor(design.X), beta)
        for d, (f, (name, dim)) in enumerate(zip(design.factors, mixed.effect_names(data),
                                                 strict=True)):
            t = tau if n_f == 1 else tau[d]
            if centred:
                u = pm.Normal(name, 0.0, t, dims=dim)
            else:
                z = pm.Normal(f"{name}_offset", 0.0, 1.0, dims=dim)
                u = pm.Deterministic(name, t * z, dims=dim)
            eta = eta + u[f.codes]
        likelihood_of(data).observe(eta, data)
    return model


def build_centred(data, *, priors: GlmmPriors | None = None):
    """Centred: ``u_f ~ N(0, tau_f)``, ``y ~ Lik(g^{-1}(X beta + sum_f u_f[f] + offset))``."""
    return build_latent(data, priors=priors, centred=True)


def build_noncentred(data, *, priors: GlmmPriors | None = None):
    """Non-centred: ``u_f = tau_f * u_f_offset``, offsets ~ N(0, 1): the same model."""
    return build_latent(data, priors=priors, centred=False)


def latent_values(data) -> dict[str, np.ndarray]:
    """The latent forms' data containers (the likelihood's: ``y_obs``, ``trials``/``offset``)."""
    return likelihood_of(data).containers(data)


def _draws(post, name: str) -> np.ndarray:
    v = post[name].values
    return v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])


def conditional_loglik(data, post, effects) -> np.ndarray | None:
    """(S,) log probability of all rows per draw given the draw's effects (none integrated)."""
    factors = data.design.factors
    if len(effects) != len(factors) or any(e not in post for e in effects):
        return None
    lik = likelihood_of(data)
    values = lik.containers(data)
    eta = _draws(post, "beta") @ data.design.X.T + values.get("offset", 0.0)
    for e, f in zip(effects, factors, strict=True):
        eta = eta + _draws(post, e)[:, f.codes]
    return lik.row_logpmf(values["y_obs"], eta, data.link, values.get("trials")).sum(axis=1)


def _log_prior(data, post, priors) -> np.ndarray:
    return priors.logpdf(_draws(post, "beta"), _draws(post, "tau"))


def _no_effects(idata, data, seed) -> None:
    """Several factors: only the latent forms exist, and they hold their effects."""


def _several(data) -> str:
    return integ.FACTORS_REASON


def _integrated_forms(several: bool) -> dict[str, Form]:
    """``marginal`` and ``sufficient``: one factor's (:mod:`models.forms.glmm_integrated`)."""
    if several:
        return {"marginal": Form("marginal", "each cluster's integral by quadrature",
                                 build_centred, latent_values, applies=_several),
                "sufficient": Form("sufficient", "clusters grouped by their statistics",
                                   build_centred, latent_values, applies=_several)}
    return {
        "marginal": Form("marginal", "each cluster's intercept integrated out by quadrature "
                         "(rows; covariates may vary within clusters)", integ.build_marginal,
                         integ.marginal_values, compiled=integ.compiled_route(
                             integ.build_marginal)),
        "sufficient": Form("sufficient", "each cluster's integral from its statistics, "
                           "clusters grouped by them", integ.build_sufficient,
                           integ.sufficient_values, compiled=integ.compiled_route(
                               integ.build_sufficient), applies=integ.sufficient_absent),
    }


def _family(likelihood: Likelihood, several: bool) -> Family:
    label = {"binomial": "binomial (logit/probit)", "poisson": "Poisson (log)"}[likelihood.name]
    shares = ("icc", "icc_data", "vpc") if several else ("icc", "icc_data")
    extra = ("icc_trigamma",) if likelihood.name == "poisson" else ()
    return Family(
        name=f"{likelihood.name}{'_multilevel' if several else ''}",
        title=f"{label} random-intercept GLMM{' (several factors)' if several else ''}",
        forms={
            "centred": Form("centred", "u ~ N(0, tau), y ~ Lik(g^-1(X beta + u))", build_centred,
                            latent_values, latent=True),
            "noncentred": Form("noncentred", "u = tau * u_offset", build_noncentred,
                               latent_values, latent=True),
            **_integrated_forms(several),
        },
        default_form="noncentred" if several else "sufficient",
        fallback_form=None if several else "marginal",
        default_priors=GlmmPriors.default,
        parse_priors=lambda data, specs: parse_glmm_priors(GlmmPriors.default(data), specs),
        summary_vars=("beta", "tau", *shares, *extra, "r2_marginal", "r2_conditional"),
        compare_vars=("beta", "tau", "icc"),
        add_effects=_no_effects if several else integ.add_effects,
        cluster_loglik=None if several else integ.cluster_loglik,
        derive=add_derived,
        estimates=partial(estimates, agq=not several),
        log_prior=_log_prior,
        conditional_loglik=conditional_loglik,
        headline="vpc" if several else "icc",
        likelihood=likelihood,
        design=True,
        scalar_tau=not several,
        oracle="varcomp.models.checks.kit_glmm:KIT",
    )


FAMILIES = {f.name: f for f in (_family(lik, several) for lik in (BINOMIAL, POISSON)
                                for several in (False, True))}
"""``binomial``, ``poisson`` (one grouping factor) and ``binomial_multilevel``,
``poisson_multilevel`` (nested or crossed factors)."""
