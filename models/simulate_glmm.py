r"""Seeded simulators of the GLMM families (one random intercept) and of random slopes.

.. math::
    \text{GLMM: } M_l \sim N(0, \tau^2),\quad \eta_{lj} = \mu + M_l,\quad
    y_{lj} \sim \text{Bernoulli}(g^{-1}(\eta)),\ \text{Binomial}(K, g^{-1}(\eta))
    \text{ or Poisson}(e^{\eta})

    \text{slopes: } b_l \sim N_2(0, V),\quad
    y_{lj} = \beta_0 + \beta_1 x_{lj} + b_{l0} + b_{l1} x_{lj} + e_{lj},\quad
    e_{lj} \sim N(0, \sigma^2),\ x_{lj} \sim N(x_{mean}, x_{sd}^2)

Each returns a :class:`~models.simulate.Simulated` whose ``formula`` and ``family`` read the
frame back (:meth:`Simulated.data`) as ``varcomp fit`` would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

from varcomp.models.errors import DataError
from varcomp.models.simulate import Simulated, cluster_sizes
from varcomp.models.simulate_mv import check_pd

__all__ = ["GLMM_FAMILIES", "simulate_glmm", "simulate_slopes"]

GLMM_FAMILIES = ("bernoulli", "binomial", "poisson")
LINKS = {"bernoulli": ("logit", "probit"), "binomial": ("logit", "probit"), "poisson": ("log",)}


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise DataError(f"{name} must be a finite number, got {value}")
    return value


def _labels(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.repeat(np.arange(sizes.size), sizes)
    labels = np.array([f"g{i + 1}" for i in range(sizes.size)], dtype=object)
    return codes, labels[codes]


def simulate_glmm(
    family: str,
    L: int,
    n: int | Sequence[int],
    *,
    mu: float = 0.0,
    tau: float = 1.0,
    trials: int | None = None,
    link: str | None = None,
    rng: np.random.Generator | int | None = None,
) -> Simulated:
    """Simulate a one-way GLMM: link(E y_lj) = mu + M_l, M_l ~ N(0, tau^2).

    Parameters
    ----------
    family : {"bernoulli", "binomial", "poisson"}
    L, n
        Number of clusters; one cluster size or one per cluster (rows per cluster).
    mu, tau : float
        Intercept and between-cluster sd on the link scale (tau > 0).
    trials : int
        Trials per row (binomial only, >= 1).
    link : str, optional
        ``logit`` (default) or ``probit`` for the binomial kinds; ``log`` for Poisson.
    rng : numpy Generator or seed

    Returns
    -------
    Simulated
        ``frame`` with columns ``group``, ``y`` (and ``trials`` for binomial); ``effects`` M_l;
        ``formula`` ``p(y, trials) ~ 1 + (1|group)`` or ``y ~ 1 + (1|group)``.
    """
    if family not in GLMM_FAMILIES:
        raise DataError(f"family must be one of {', '.join(GLMM_FAMILIES)}, got {family!r}")
    link = link or LINKS[family][0]
    if link not in LINKS[family]:
        raise DataError(f"the {family} simulator takes link {' or '.join(LINKS[family])}, "
                        f"got {link!r}")
    if family == "binomial":
        if trials is None or isinstance(trials, bool) or not float(trials).is_integer() \
                or trials < 1:
            raise DataError(f"the binomial simulator needs trials per row, a whole number >= 1, "
                            f"got {trials!r}")
        trials = int(trials)
    elif trials is not None:
        raise DataError(f"trials are for the binomial simulator only, not {family} (a "
                        f"{family} row is one {'trial' if family == 'bernoulli' else 'count'})")
    sizes = cluster_sizes(L, n)
    mu = _finite("mu", mu)
    tau = _finite("tau", tau)
    if not tau > 0:
        raise DataError(f"tau must be a positive finite standard deviation, got {tau}")
    rng = np.random.default_rng(rng)
    effects = rng.normal(0.0, tau, size=sizes.size)
    codes, groups = _labels(sizes)
    eta = mu + effects[codes]
    frame = pd.DataFrame({"group": groups})
    if family == "poisson":
        frame["y"] = rng.poisson(np.exp(eta))
        formula = "y ~ 1 + (1|group)"
    else:
        p = special.expit(eta) if link == "logit" else special.ndtr(eta)
        frame["y"] = rng.binomial(trials or 1, p)
        formula = "y ~ 1 + (1|group)"
        if family == "binomial":
            frame["trials"] = np.full(codes.size, trials, dtype=np.int64)
            formula = "p(y, trials) ~ 1 + (1|group)"
    params = {"family": family, "link": link, "mu": mu, "tau": tau, "trials": trials,
              "sizes": sizes}
    return Simulated(frame, effects, params, formula=formula, family=family)


def simulate_slopes(
    L: int,
    n: int | Sequence[int],
    *,
    beta: Sequence[float] = (0.0, 1.0),
    V=((1.0, 0.0), (0.0, 1.0)),
    sigma: float = 1.0,
    x_mean: float = 0.0,
    x_sd: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> Simulated:
    """Simulate y ~ x + (1 + x | group): b_l ~ N_2(0, V), y = X beta + Z b_l + N(0, sigma^2).

    ``x`` is drawn per row from N(x_mean, x_sd^2). ``V`` (2 x 2, intercept then slope) is checked
    by :func:`models.simulate_mv.check_pd`. ``effects`` holds the (L, 2) b_l; ``formula`` is
    ``y ~ x + (1 + x | group)``.
    """
    sizes = cluster_sizes(L, n)
    beta = np.asarray(beta, dtype=np.float64)
    if beta.shape != (2,) or not np.all(np.isfinite(beta)):
        raise DataError(f"beta must be two finite numbers (intercept, slope), got {beta}")
    V = check_pd(V, "V")
    if V.shape != (2, 2):
        raise DataError(f"V must be 2 x 2 (intercept, slope), got {V.shape}")
    sigma, x_sd = float(sigma), float(x_sd)
    for name, v in (("sigma", sigma), ("x_sd", x_sd)):
        if not (v > 0 and np.isfinite(v)):
            raise DataError(f"{name} must be a positive finite standard deviation, got {v}")
    x_mean = _finite("x_mean", x_mean)
    rng = np.random.default_rng(rng)
    effects = rng.standard_normal((sizes.size, 2)) @ np.linalg.cholesky(V).T
    codes, groups = _labels(sizes)
    x = rng.normal(x_mean, x_sd, size=codes.size)
    b = effects[codes]
    y = beta[0] + b[:, 0] + (beta[1] + b[:, 1]) * x + rng.normal(0.0, sigma, size=codes.size)
    frame = pd.DataFrame({"group": groups, "x": x, "y": y})
    params = {"beta": beta, "V": V, "sigma": sigma, "x_mean": x_mean, "x_sd": x_sd,
              "sizes": sizes}
    return Simulated(frame, effects, params, formula="y ~ x + (1 + x | group)")
