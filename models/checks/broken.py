"""Deliberately wrong models: a check is trusted only once one of these fails it.

Each is a :class:`~models.forms.base.Form` of its family (same priors, same sampler coordinates,
same data containers as the form it breaks), with one mistake in the likelihood. Never use them
for inference.
"""

from __future__ import annotations

import math

import numpy as np

from varcomp.models.data import ClusteredData
from varcomp.models.forms.base import Form
from varcomp.models.priors import MvPriors, Priors

__all__ = ["BROKEN", "build_broken_glmm_link", "build_broken_slopes_chol_transposed",
           "build_broken_tau_not_squared", "build_broken_V_not_scaled_by_n",
           "crossed_loglik_without_eliminated_block"]


def build_broken_tau_not_squared(data: ClusteredData, *, priors: Priors | None = None):
    r"""The one-way ``sufficient`` form with tau where tau^2 belongs (WRONG on purpose).

    .. math::
        X_l \sim \mathrm{MvNormal}(\mu 1, \sigma^2 I + \tau\, 1 1^\top) \quad (\text{wrong})

    :func:`models.checks.compare_logp` and :func:`models.checks.sbc` must fail it.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.density import marginal_logp
    from varcomp.models.forms import oneway

    model, priors = oneway._start(data, priors)
    values = oneway._sufficient_values(data)
    with model:
        n, xbar, ss = (pm.Data(k, values[k]) for k in ("n", "xbar", "ss"))
        mu, tau, sigma = priors.create()
        pm.Potential("loglik", marginal_logp(n, xbar, ss, mu, pt.sqrt(tau), sigma, xp=pt))
        oneway._icc(tau, sigma)
    return model


def build_broken_V_not_scaled_by_n(data: ClusteredData, *, priors: MvPriors | None = None):
    r"""The multivariate ``sufficient`` form with V / n_bar where V belongs (WRONG on purpose).

    For a balanced design with complete rows the likelihood then has log|Sigma + V| and
    (Sigma + V)^-1 where log|Sigma + n V| and (Sigma + n V)^-1 belong.
    :func:`models.checks.compare_logp` and :func:`models.checks.sbc` (``MultivariateSBC``) must
    fail it.
    """
    from varcomp.models.forms import multivariate

    model = multivariate.build_sufficient(data, priors=priors)
    packed = model["chol_V_std"]  # chol_V is linear in it: scaling it scales chol_V alike
    return _likelihood_with(model, {packed: packed / math.sqrt(float(data.sizes.mean()))})


def _likelihood_with(model, replace: dict):
    """``model`` plus a potential turning its ``loglik`` into ``loglik`` under ``replace``.

    Priors, Deterministics and data containers stay: the production form's log density with one
    substitution in its likelihood (PyMC's models do not let a potential be replaced).
    """
    import pymc as pm
    from pytensor.graph.replace import graph_replace

    right = model["loglik"]
    with model:
        pm.Potential("loglik_error", graph_replace(right, replace, strict=True) - right)
    return model


def _oneway_values(data: ClusteredData) -> dict[str, np.ndarray]:
    from varcomp.models.forms import oneway

    return oneway._sufficient_values(data)


def _mv_values(data: ClusteredData) -> dict[str, np.ndarray]:
    from varcomp.models.forms import multivariate

    return multivariate._sufficient_values(data)


def build_broken_mixed(data: ClusteredData, *, priors=None):
    """A mixed model's ``sufficient`` form with tau where tau^2 belongs (WRONG on purpose).

    The nested closed form, or the crossed strata, with g = 1 + tau A (lambda = sigma^2 +
    sum c tau): the production form's likelihood with sqrt(tau) in place of tau (tau > 0).
    """
    import pytensor.tensor as pt

    from varcomp.models.forms import crossed, mixed

    if data.design.nested:
        model = mixed.build_sufficient_nested(data, priors=priors)
    else:
        model = crossed.build_sufficient_strata(data, priors=priors)
    tau = model["tau"]
    return _likelihood_with(model, {tau: pt.sqrt(tau)})


def _mixed_values(data: ClusteredData) -> dict[str, np.ndarray]:
    from varcomp.models.forms import family_of

    return family_of(data).form("sufficient").data_values(data)


def crossed_loglik_without_eliminated_block(data, post, likelihood=None) -> np.ndarray | None:
    """:func:`models.pointwise.crossed_loglik` without log|K_aa| (WRONG on purpose).

    The largest factor's eliminated diagonal block is left out of log|K|; the checks of the
    crossed log density (the stacked MvNormal, leave-one-out, power-scaling) must fail it.
    """
    from varcomp.models.likelihoods import GAUSSIAN
    from varcomp.models.pointwise import crossed_terms

    t = crossed_terms(data, post, likelihood or GAUSSIAN)
    if t is None:
        return None
    return -0.5 * (t["constant"] + t["logdet_schur"] + t["quad"])


def build_broken_glmm_link(data: ClusteredData, *, priors=None):
    """A GLMM's ``centred`` form with the wrong link (WRONG on purpose).

    Binomial: the rows' probability is the probit of the logit model's linear predictor (or
    the logit of the probit's); Poisson: the rate is softplus(eta) = log(1 + exp(eta)) where
    exp(eta) belongs. The production form plus a potential: the wrong rows' log pmf minus the
    right one.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.forms import glmm

    model = glmm.build_centred(data, priors=priors)
    y = model["y"]
    observed, param = model.rvs_to_values[y], y.owner.inputs[-1]  # p or the Poisson rate
    if data.likelihood == "binomial":
        n = y.owner.inputs[-2]
        if data.link == "logit":  # eta = logit(p), p_wrong = Phi(eta)
            wrong = pm.math.invprobit(pt.log(param) - pt.log1p(-param))
        else:  # eta = probit(p), p_wrong = expit(eta)
            wrong = pm.math.sigmoid(pt.sqrt(2.0) * pt.erfinv(2.0 * param - 1.0))
        right, bad = pm.Binomial.dist(n=n, p=param), pm.Binomial.dist(n=n, p=wrong)
    else:
        right, bad = pm.Poisson.dist(mu=param), pm.Poisson.dist(mu=pt.log1p(param))
    with model:
        pm.Potential("loglik_error", pm.logp(bad, observed).sum() - pm.logp(right, observed).sum())
    return model


def build_broken_slopes_chol_transposed(data: ClusteredData, *, priors=None):
    """The random-slopes ``noncentred`` form with b_l = chol(V)' z_l (WRONG on purpose).

    The effects' covariance is then chol' chol, not V = chol chol'. The production form plus a
    potential: the rows' log density with the wrong effects minus the right one.
    """
    import pymc as pm
    import pytensor.tensor as pt
    from pytensor.graph.replace import graph_replace

    from varcomp.models.forms import slopes

    model = slopes.build_noncentred(data, priors=priors)
    b, y = model["b"], model["y"]  # b: a view of dot(z, chol'); y ~ N(mean, sigma)
    z, chol_t = b.owner.inputs[0].owner.inputs
    mean, sigma = y.owner.inputs[-2:]
    wrong = graph_replace(mean, {b: pt.dot(z, chol_t.T)}, strict=True)
    observed = model.rvs_to_values[y]
    with model:
        pm.Potential("loglik_error", pm.logp(pm.Normal.dist(wrong, sigma), observed).sum()
                     - pm.logp(pm.Normal.dist(mean, sigma), observed).sum())
    return model


def _glmm_values(data: ClusteredData) -> dict[str, np.ndarray]:
    from varcomp.models.forms import family_of

    return family_of(data).form("centred").data_values(data)


def _slopes_values(data: ClusteredData) -> dict[str, np.ndarray]:
    from varcomp.models.forms import family_of

    return family_of(data).form("noncentred").data_values(data)


_BROKEN_GLMM = Form("broken_wrong_link", "centred with the wrong link (wrong)",
                    build_broken_glmm_link, _glmm_values, latent=True)

_BROKEN_MIXED = Form("broken_tau_not_squared", "sufficient with tau for tau^2 (wrong)",
                     build_broken_mixed, _mixed_values)

BROKEN = {
    "oneway": Form("broken_tau_not_squared", "sufficient with tau for tau^2 (wrong)",
                   build_broken_tau_not_squared, _oneway_values),
    "multivariate": Form("broken_V_not_scaled_by_n", "sufficient with V / n_bar for V (wrong)",
                         build_broken_V_not_scaled_by_n, _mv_values),
    "regression": _BROKEN_MIXED,
    "nested": _BROKEN_MIXED,
    "crossed": _BROKEN_MIXED,
    "binomial": _BROKEN_GLMM,
    "poisson": _BROKEN_GLMM,
    "binomial_multilevel": _BROKEN_GLMM,
    "poisson_multilevel": _BROKEN_GLMM,
    "slopes": Form("broken_chol_transposed", "noncentred with chol(V)' for chol(V) (wrong)",
                   build_broken_slopes_chol_transposed, _slopes_values, latent=True),
}
"""The deliberately broken form of each family, by family name."""
