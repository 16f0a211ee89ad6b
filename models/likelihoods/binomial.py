r"""The binomial likelihood (Bernoulli = one trial per row): y_i ~ Binomial(n_i, g^{-1}(eta_i)).

One record for both: a Bernoulli row is a binomial row of one trial (``data.trials`` all 1), so
the densities, shares and replicates are written once. Links: ``logit`` (default) and
``probit``. The latent-scale distribution-specific variance is pi^2/3 (logit) or 1 (probit)
(Nakagawa, Johnson & Schielzeth 2017); the data-scale ICC integrates over the random effect
(:func:`models.shares.icc_data_binary`). No residual sd: ``residual_sd`` is None.
"""

from __future__ import annotations

from varcomp.models.likelihoods.base import Likelihood

__all__ = ["BINOMIAL", "inverse_link", "log_probabilities"]


def _no_residual(posterior):
    raise TypeError("a binomial model has no residual parameter: its distribution-specific "
                    "variance is latent_variance(link, eta0, tau2)")


def _prior_scale(center: float, sd: float) -> float:
    return 1.0  # the link scale: every default prior is in logit/probit units


def inverse_link(eta, link: str):
    """The probability g^{-1}(eta) (numpy)."""
    from scipy import special

    return special.expit(eta) if link == "logit" else special.ndtr(eta)


def log_probabilities(eta, link: str):
    """The pair (log p, log(1 - p)) at ``eta``, computed stably in the tails."""
    import numpy as np
    from scipy import special

    if link == "logit":
        return -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
    return special.log_ndtr(eta), special.log_ndtr(-eta)


def row_logp(y, eta, link: str, trials):
    """The log pmf log C(n, y) + y log p + (n - y) log(1 - p) per row (broadcast over draws)."""
    import numpy as np
    from scipy.special import gammaln

    lp, lq = log_probabilities(np.asarray(eta, dtype=np.float64), link)
    const = gammaln(trials + 1.0) - gammaln(y + 1.0) - gammaln(trials - y + 1.0)
    return const + np.where(y > 0, y * lp, 0.0) + np.where(trials - y > 0, (trials - y) * lq, 0.0)


def observe(eta, data) -> None:
    """Observe ``y ~ Binomial(trials, g^{-1}(eta + offset))``.

    On the containers ``y_obs``, ``trials`` and ``offset``.
    """
    import pymc as pm

    values = containers(data)
    y = pm.Data("y_obs", values["y_obs"])
    n = pm.Data("trials", values["trials"])
    eta = eta + pm.Data("offset", values["offset"])
    if data.link == "logit":
        pm.Binomial("y", n=n, logit_p=eta, observed=y)
    else:
        pm.Binomial("y", n=n, p=pm.math.invprobit(eta), observed=y)


def containers(data) -> dict:
    """The successes, trials and offset (0 without one) of each row."""
    import numpy as np

    off = data.offset if data.offset is not None else np.zeros(data.n_obs)
    return {"y_obs": data.y[:, 0].copy(), "trials": data.trials.copy(),
            "offset": np.asarray(off, dtype=np.float64).copy()}


def latent_variance(link: str, eta0, tau2) -> dict:
    """pi^2/3 (logit) or 1 (probit) per draw: the latent residual variance."""
    import numpy as np

    from varcomp.models import shares

    value = shares.LOGIT_VARIANCE if link == "logit" else shares.PROBIT_VARIANCE
    return {link: np.full(np.shape(tau2), value)}


def data_icc(link: str, eta0, tau2):
    """Var(p) / (Var(p) + E[p (1 - p)]) by quadrature over the random effect."""
    from varcomp.models import shares

    return shares.icc_data_binary(eta0, tau2, lambda e: inverse_link(e, link))


def replicate_rows(eta, trials, link: str, rng):
    """Successes drawn as Binomial(trials, g^{-1}(eta)), ``eta`` (S, N)."""
    import numpy as np

    return rng.binomial(np.broadcast_to(trials, np.shape(eta)).astype(np.int64),
                        inverse_link(eta, link))


def _replicate(mean, posterior, rng):
    raise TypeError("binomial replicates are drawn from the linear predictor: replicate_rows")


BINOMIAL = Likelihood(name="binomial", params=(), residual_sd=None,
                      residual_variance=_no_residual, prior_scale=_prior_scale,
                      cluster_logp=None, replicate=_replicate, links=("logit", "probit"),
                      observe=observe, containers=containers, row_logpmf=row_logp,
                      latent_variance=latent_variance, data_icc=data_icc,
                      replicate_rows=replicate_rows, inverse_link=inverse_link)
