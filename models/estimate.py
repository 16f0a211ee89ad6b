"""Maximum-likelihood and REML point estimates of the one-way model, boundary-aware."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize

from varcomp.models import shares
from varcomp.models.data import ClusteredData
from varcomp.models.errors import DataError

__all__ = ["PointEstimate", "fit_ml", "fit_reml"]

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PointEstimate:
    """A point estimate with its criterion (lme4's deviance or REML criterion)."""

    method: str
    mu: float
    tau: float
    sigma: float
    icc: float
    criterion: float
    boundary: bool

    def as_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return asdict(self)


def _profiled(theta: float, n, xbar, ss, reml: bool) -> tuple[float, float, float]:
    """Profiled criterion at theta = tau / sigma (lme4's relative covariance factor).

    With w_l = n_l / (1 + n_l theta^2): mu_hat = sum w xbar / sum w, and
    Q = sum_l [S_l + w_l (xbar_l - mu_hat)^2] = sigma^2 r^T V^-1 r, log|V| = N log sigma^2 +
    sum log(1 + n_l theta^2). ML: sigma^2 = Q / N, -2 log L = N (1 + log(2 pi Q / N)) + sum log(.).
    REML adds log|X^T V^-1 X| and uses N - 1:  (N-1)(1 + log(2 pi Q/(N-1))) + sum log(.) +
    log sum w.
    Returns (criterion, mu_hat, sigma2_hat).
    """
    t2 = theta * theta
    w = n / (1.0 + n * t2)
    mu = float((w * xbar).sum() / w.sum())
    q = float(ss.sum() + (w * (xbar - mu) ** 2).sum())
    logdet = float(np.log1p(n * t2).sum())
    N = float(n.sum())
    dof = N - 1.0 if reml else N
    s2 = q / dof
    crit = dof * (1.0 + LOG_2PI + math.log(s2)) + logdet
    if reml:
        crit += math.log(float(w.sum()))
    return crit, mu, s2


def _slope(t: float, n, xbar, ss, reml: bool) -> float:
    r"""The slope d criterion / d t at t = theta^2 (analytic, so the optimum is found to rounding).

    With w_l = n_l / (1 + n_l t): dw/dt = -w^2, and by the envelope theorem (mu_hat minimises
    the weighted sum) dQ/dt = -sum w^2 (xbar - mu_hat)^2; d/dt sum log(1 + n t) = sum w;
    REML adds d/dt log sum w = -sum w^2 / sum w.
    """
    w = n / (1.0 + n * t)
    mu = float((w * xbar).sum() / w.sum())
    q = float(ss.sum() + (w * (xbar - mu) ** 2).sum())
    dq = -float((w * w * (xbar - mu) ** 2).sum())
    dof = float(n.sum()) - (1.0 if reml else 0.0)
    out = dof * dq / q + float(w.sum())
    if reml:
        out -= float((w * w).sum() / w.sum())
    return out


def _polish(theta: float, n, xbar, ss, reml: bool) -> float:
    """The interior optimum to rounding.

    The root of :func:`_slope` around the bounded search's point (criterion values alone locate it
    only to ~1e-7, the square root of their rounding).
    """
    t = theta * theta
    lo, hi = t, t
    for _ in range(60):
        lo, hi = lo / 1.01, hi * 1.01
        if _slope(lo, n, xbar, ss, reml) < 0.0 < _slope(hi, n, xbar, ss, reml):
            root = optimize.brentq(_slope, lo, hi, args=(n, xbar, ss, reml), xtol=1e-300,
                                   rtol=4 * np.finfo(float).eps)
            return math.sqrt(root)
    return theta  # no sign change near: keep the bounded search's point


def _fit(data: ClusteredData, reml: bool, k: int = 0) -> PointEstimate:
    n, xbar, ss = data.stats.column(k)
    if n.size < 2:
        raise DataError("ML/REML need at least two clusters")

    def f(log_theta: float) -> float:
        return _profiled(math.exp(log_theta), n, xbar, ss, reml)[0]

    # Optimise on log theta, bracketing generously; theta = 0 (tau = 0) is checked separately
    # because the log scale never reaches the boundary.
    grid = np.linspace(-12.0, 8.0, 81)
    vals = np.array([f(g) for g in grid])
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10})
    theta = _polish(math.exp(float(res.x)), n, xbar, ss, reml)
    crit, mu, s2 = _profiled(theta, n, xbar, ss, reml)
    crit0, mu0, s20 = _profiled(0.0, n, xbar, ss, reml)
    # Boundary: tau = 0 when no interior point beats it (the criterion keeps decreasing
    # towards theta = 0, or its minimum is at the lower end of the bracket).
    boundary = crit0 <= crit + 1e-9 or i == 0
    if boundary:
        theta, crit, mu, s2 = 0.0, crit0, mu0, s20
    sigma = math.sqrt(s2)
    tau = theta * sigma
    icc = shares.icc(tau * tau, s2)
    return PointEstimate("reml" if reml else "ml", mu, tau, sigma, icc, crit, bool(boundary))


def fit_ml(data: ClusteredData, k: int = 0) -> PointEstimate:
    """Maximum-likelihood estimate; ``criterion`` is -2 max log-likelihood (lme4's deviance)."""
    return _fit(data, reml=False, k=k)


def fit_reml(data: ClusteredData, k: int = 0) -> PointEstimate:
    """REML estimate; ``criterion`` is lme4's REML criterion (-2 restricted log-likelihood)."""
    return _fit(data, reml=True, k=k)
