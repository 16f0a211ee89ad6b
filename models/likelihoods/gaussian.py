"""The Gaussian likelihood: y = linear predictor + random effects + e, e ~ N(0, sigma^2)."""

from __future__ import annotations

import math

from varcomp.models.likelihoods.base import Likelihood

__all__ = ["GAUSSIAN"]


def residual_variance(posterior):
    """sigma^2 per draw: the residual variance every share divides by (with the tau^2)."""
    return posterior["sigma"] ** 2


def prior_scale(center: float, sd: float) -> float:
    """sd(y), every default prior's scale; |mean| (or 1) when the response does not vary."""
    if sd > 0 and math.isfinite(sd):
        return sd
    return abs(center) if center != 0 else 1.0


def cluster_logp(n, xbar, ss, mu, tau, sigma, xp=None):
    """Each cluster's log density, its effect integrated out (the closed form's terms)."""
    import numpy as np

    from varcomp.models.density import marginal_logp_terms

    return marginal_logp_terms(n, xbar, ss, mu, tau, sigma, np if xp is None else xp)


def replicate(mean, posterior, rng):
    """Rows drawn as mean + sigma z: ``mean`` (S, ...), sigma the S flattened draws."""
    import numpy as np

    sigma = np.asarray(posterior["sigma"]).reshape(-1)
    sigma = sigma.reshape(sigma.shape + (1,) * (np.ndim(mean) - 1))
    return mean + sigma * rng.standard_normal(np.shape(mean))


def replicate_stats(mean, n, posterior, rng):
    """Cluster means mean + sigma/sqrt(n) z and sds sigma sqrt(chi^2_{n-1}/(n-1)) (Cochran).

    Exactly the means and sds of n rows N(mean, sigma^2), drawn in O(L) per draw; the sds only
    of clusters of two rows or more.
    """
    import numpy as np

    sigma = np.asarray(posterior["sigma"]).reshape(-1, 1)
    means = mean + sigma / np.sqrt(n) * rng.standard_normal(np.shape(mean))
    dof = n[n >= 2] - 1
    sds = sigma * np.sqrt(rng.chisquare(dof, size=(np.shape(mean)[0], dof.size)) / dof)
    return means, sds


def row_logp(y, mean, posterior):
    """Log N(y; mean, sigma^2) per row: (S, N) for ``mean`` (S, N) and sigma's S draws."""
    import numpy as np

    s = np.asarray(posterior["sigma"]).reshape(-1, 1)
    r = y - mean
    return -0.5 * (r * r) / s**2 - (0.5 * np.log(2.0 * np.pi) + np.log(s))


GAUSSIAN = Likelihood(name="gaussian", params=("sigma",), residual_sd="sigma",
                      residual_variance=residual_variance, prior_scale=prior_scale,
                      cluster_logp=cluster_logp, replicate=replicate,
                      replicate_stats=replicate_stats, row_logp=row_logp)
