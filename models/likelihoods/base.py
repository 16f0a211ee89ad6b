"""The record of a response distribution: what a likelihood owns, apart from the model's terms.

A model is a likelihood x random-effects terms x fixed effects. The terms (one-way,
nested, crossed, multivariate) live in the family records (:mod:`models.forms`); the fixed
effects in the design (:mod:`models.design`); the response distribution here. Imported by
:mod:`models.forms.base` at start-up: no numpy at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Likelihood"]


@dataclass(frozen=True)
class Likelihood:
    """A response distribution with an identity or canonical link.

    Attributes
    ----------
    name : str
        ``gaussian``.
    params : tuple of str
        Its parameters beyond the linear predictor, as the posterior names them (``("sigma",)``;
        empty for a distribution without one).
    residual_sd : str or None
        The parameter the report shows as the residual component's sd (``sigma``), or None
        where the distribution-specific variance has no parameter of its own.
    residual_variance : callable
        ``residual_variance(posterior) -> draws``: the distribution-specific variance that
        enters every share (:mod:`models.shares`); ``posterior`` is anything indexed by
        parameter name (an xarray Dataset, a dict of floats such as an ML/REML estimate).
    prior_scale : callable
        ``prior_scale(center, sd) -> float``: the scale every default prior is a multiple of,
        from the response's mean and sd.
    cluster_logp : callable
        The log density of one cluster's rows with its effect integrated out, per draw
        (Gaussian: :func:`models.density.marginal_logp_terms` from the cluster statistics).
    replicate : callable
        ``replicate(mean, posterior, rng) -> draws``: predictive rows around ``mean``, whose
        leading axis is the draws of ``posterior``'s parameters (flattened). A GLMM likelihood
        draws rows from the linear predictor instead (:attr:`replicate_rows`).
    replicate_stats : callable or None
        ``replicate_stats(mean, n, posterior, rng) -> (means, sds)``: the means and sds (ddof 1,
        clusters of n >= 2 rows only) of replicated clusters of ``n`` rows around each cluster's
        mean ``mean`` (S, L), without drawing the rows (one-way predictive checks).
    row_logp : callable or None
        ``row_logp(y, mean, posterior) -> (S, N)``: each row's log density given its mean
        (S, N) and the draws (S,) of the parameters in ``posterior`` (conditional likelihoods).
    links : tuple of str
        The links it accepts, the default first (``identity`` for the Gaussian).

    Every other module reads the distribution's own parameters (``sigma``) only through these
    callables and :attr:`params` (passed to :attr:`cluster_logp` in that order).

    The fields below are None for the Gaussian likelihood (whose model families need none of
    them) and set by the non-Gaussian ones (:mod:`models.likelihoods.binomial`,
    :mod:`models.likelihoods.poisson`), which the GLMM families (:mod:`models.forms.glmm`) read:

    observe : callable or None
        ``observe(eta, data) -> None``: in a PyMC model context, the observed rows ``y`` given
        the linear predictor ``eta`` (offsets included), reading the containers ``y_obs`` (and
        ``trials``) it creates from ``data``; ``data.link`` chooses the link.
    containers : callable or None
        ``containers(data) -> {name: array}``: the values of the ``pm.Data`` containers
        :attr:`observe` creates (``data_values`` of every form).
    row_logpmf : callable or None
        ``row_logpmf(y, eta, link, trials) -> array``: each row's log probability (numpy,
        broadcast over leading draw axes of ``eta``): the pointwise log-likelihood.
    latent_variance : callable or None
        ``latent_variance(link, eta0, tau2) -> {name: draws}``: the distribution-specific
        variance on the latent (link) scale (Nakagawa, Johnson & Schielzeth 2017), the default
        first; ``eta0`` is the mean linear predictor and ``tau2`` the summed random-effects
        variance per draw (the Poisson variances depend on them).
    data_icc : callable or None
        ``data_icc(link, eta0, tau2) -> draws``: the ICC on the data scale
        (:mod:`models.shares`).
    replicate_rows : callable or None
        ``replicate_rows(eta, trials, link, rng) -> draws``: rows drawn given the linear
        predictor (predictive checks).
    inverse_link : callable or None
        ``inverse_link(eta, link) -> mean``: a row's probability or rate (numpy).
    """

    name: str
    params: tuple[str, ...]
    residual_sd: str | None
    residual_variance: Callable[[Any], Any]
    prior_scale: Callable[[float, float], float]
    cluster_logp: Callable[..., Any]
    replicate: Callable[..., Any]
    replicate_stats: Callable[..., Any] | None = None
    row_logp: Callable[..., Any] | None = None
    links: tuple[str, ...] = ("identity",)
    observe: Callable[..., Any] | None = None
    containers: Callable[..., Any] | None = None
    row_logpmf: Callable[..., Any] | None = None
    latent_variance: Callable[..., Any] | None = None
    data_icc: Callable[..., Any] | None = None
    replicate_rows: Callable[..., Any] | None = None
    inverse_link: Callable[..., Any] | None = None
