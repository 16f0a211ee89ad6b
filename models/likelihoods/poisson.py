r"""The Poisson likelihood: y_i ~ Poisson(exp(eta_i + offset_i)), log link.

Offsets (``offset(np.log(exposure))``) enter the linear predictor with coefficient 1 (they are
not subtracted from the response as for a Gaussian one). The latent-scale
distribution-specific variance is the log-normal ln(1 + 1/lambda) (default, as
``performance::icc``/``insight::get_variance``) or the trigamma psi_1(lambda), lambda =
exp(eta0 + sum tau^2 / 2) (Nakagawa, Johnson & Schielzeth 2017); the data-scale ICC is the
log-normal closed form (:func:`models.shares.icc_data_poisson`).
"""

from __future__ import annotations

from varcomp.models.likelihoods.base import Likelihood

__all__ = ["POISSON"]


def _no_residual(posterior):
    raise TypeError("a Poisson model has no residual parameter: its distribution-specific "
                    "variance is latent_variance(link, eta0, tau2)")


def _prior_scale(center: float, sd: float) -> float:
    return 1.0  # the log scale


def inverse_link(eta, link: str = "log"):
    """The rate exp(eta) (numpy)."""
    import numpy as np

    return np.exp(eta)


def row_logp(y, eta, link: str, trials=None):
    """The log pmf y eta - exp(eta) - log y! per row (``eta`` includes the offset)."""
    import numpy as np
    from scipy.special import gammaln

    eta = np.asarray(eta, dtype=np.float64)
    return y * eta - np.exp(eta) - gammaln(y + 1.0)


def observe(eta, data) -> None:
    """``y ~ Poisson(exp(eta + offset))`` on the containers ``y_obs`` and ``offset``."""
    import pymc as pm

    values = containers(data)
    y = pm.Data("y_obs", values["y_obs"])
    off = pm.Data("offset", values["offset"])
    pm.Poisson("y", mu=pm.math.exp(eta + off), observed=y)


def containers(data) -> dict:
    """The counts and each row's offset (0 without one)."""
    import numpy as np

    off = data.offset if data.offset is not None else np.zeros(data.n_obs)
    return {"y_obs": data.y[:, 0].copy(), "offset": np.asarray(off, dtype=np.float64).copy()}


def latent_variance(link: str, eta0, tau2) -> dict:
    """{"lognormal": ln(1 + 1/lambda), "trigamma": psi_1(lambda)} per draw (default first)."""
    from varcomp.models import shares

    return {"lognormal": shares.poisson_lognormal_variance(eta0, tau2),
            "trigamma": shares.poisson_trigamma_variance(eta0, tau2)}


def data_icc(link: str, eta0, tau2):
    """The log-normal closed form of the counts' ICC."""
    from varcomp.models import shares

    return shares.icc_data_poisson(eta0, tau2)


def replicate_rows(eta, trials, link: str, rng):
    """Counts drawn as Poisson(exp(eta)), ``eta`` (S, N) with offsets."""
    import numpy as np

    return rng.poisson(np.exp(eta))


def _replicate(mean, posterior, rng):
    raise TypeError("Poisson replicates are drawn from the linear predictor: replicate_rows")


POISSON = Likelihood(name="poisson", params=(), residual_sd=None,
                     residual_variance=_no_residual, prior_scale=_prior_scale,
                     cluster_logp=None, replicate=_replicate, links=("log",),
                     observe=observe, containers=containers, row_logpmf=row_logp,
                     latent_variance=latent_variance, data_icc=data_icc,
                     replicate_rows=replicate_rows, inverse_link=inverse_link)
