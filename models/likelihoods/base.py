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
        leading axis is the draws of ``posterior``'s parameters (flattened).
    replicate_stats : callable
        ``replicate_stats(mean, n, posterior, rng) -> (means, sds)``: the means and sds (ddof 1,
        clusters of n >= 2 rows only) of replicated clusters of ``n`` rows around each cluster's
        mean ``mean`` (S, L), without drawing the rows (one-way predictive checks).
    row_logp : callable
        ``row_logp(y, mean, posterior) -> (S, N)``: each row's log density given its mean
        (S, N) and the draws (S,) of the parameters in ``posterior`` (conditional likelihoods).

    Every other module reads the distribution's own parameters (``sigma``) only through these
    callables and :attr:`params` (passed to :attr:`cluster_logp` in that order).
    """

    name: str
    params: tuple[str, ...]
    residual_sd: str | None
    residual_variance: Callable[[Any], Any]
    prior_scale: Callable[[float, float], float]
    cluster_logp: Callable[..., Any]
    replicate: Callable[..., Any]
    replicate_stats: Callable[..., Any]
    row_logp: Callable[..., Any]
