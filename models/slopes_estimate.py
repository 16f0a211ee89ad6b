"""REML/ML and the exact log density of a random-slopes model, from its sufficient statistics.

The model (one grouping factor, L clusters, q random-effects columns, k fixed-effects columns):

    y_l = X_l beta + Z_l b_l + e_l,   b_l ~ N_q(0, V),   e_l ~ N(0, sigma^2 I),
    V = sigma^2 Lambda Lambda',

with Lambda lme4's relative covariance factor: lower triangular (diagonal for the uncorrelated
``(1 + x || g)``), theta its lower-triangle entries in lme4's order (column by column:
Lambda_11, Lambda_21, ..., Lambda_q1, Lambda_22, ...), the diagonal bounded below by 0.

Per cluster, A_l = Lambda' Z_l'Z_l Lambda + I_q = C_l C_l' (Cholesky). Then Cov(y_l) =
sigma^2 (Z_l Lambda Lambda' Z_l' + I), its determinant sigma^(2 n_l) |A_l|, and by Woodbury

    r_l' (Z_l Lambda Lambda' Z_l' + I)^-1 r_l = r_l'r_l - |C_l^-1 Lambda' Z_l' r_l|^2,

which needs only Z_l'Z_l, Z_l'X_l, Z_l'y_l and (for r_l'r_l) X_l'X_l, X_l'y_l, y_l'y_l
(``models.slopes_stats``). Profiling beta and sigma (Bates et al. 2015, J. Stat. Softw. 67(1),
section 3.4): with R_ZX_l = C_l^-1 Lambda' Z_l'X_l and r_Zy_l = C_l^-1 Lambda' Z_l'y_l,

    X'WX = X'X - sum R_ZX_l' R_ZX_l,   X'Wy = X'y - sum R_ZX_l' r_Zy_l,
    beta = (X'WX)^-1 X'Wy,             r2 = y'y - sum |r_Zy_l|^2 - beta' X'Wy   (lme4's PRSS),
    ML:   deviance = sum log|A_l| + n (1 + log(2 pi r2 / n)),
    REML: REMLcrit = sum log|A_l| + log|X'WX| + (n - k)(1 + log(2 pi r2 / (n - k))),

exactly lme4's ``deviance(fit)`` and ``REMLcrit(fit)``. One evaluation costs O(L q^3 + L q^2 k +
L q k^2) in numpy's batched Cholesky and solves, whatever the number of rows.

The optimiser is scipy's bounded L-BFGS-B from lme4's start (Lambda = I) with a central-difference
gradient (2 x len(theta) extra evaluations, each cheap). Boundary flags: a correlation within 1e-6
of +-1, an sd at 0 (below 1e-6 sigma); ``singular`` is lme4's ``isSingular`` rule (a bounded theta
below 1e-4).

Output names (one scheme, as ``summary.json`` will carry them): ``tau[g|c]`` the sd of
coefficient c of factor g, ``rho[g|a,b]`` the correlation of a and b (a before b in the term's
column order), ``sigma``, and the fixed effects by their column names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from varcomp.models.errors import DataError
from varcomp.models.slopes_stats import SlopeStats

__all__ = ["SlopesEstimate", "cluster_log_density", "deviance", "fit_slopes", "lambda_from_theta",
           "log_density", "rho_name", "tau_name", "theta_bounds", "theta_from_lambda"]

LOG_2PI = math.log(2.0 * math.pi)
BOUNDARY_CORR = 1e-6  # |rho| >= 1 - this is a correlation at +-1
BOUNDARY_SD = 1e-6  # sd / sigma below this is an sd at 0
SINGULAR_THETA = 1e-4  # lme4's isSingular tolerance on bounded theta


def tau_name(group: str, coef: str) -> str:
    """``tau[g|c]``: the sd of coefficient ``coef`` of grouping factor ``group``."""
    return f"tau[{group}|{coef}]"


def rho_name(group: str, a: str, b: str) -> str:
    """``rho[g|a,b]``: the correlation of coefficients ``a`` and ``b`` of factor ``group``."""
    return f"rho[{group}|{a},{b}]"


def _lower(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the lower triangle in lme4's (column-major) order."""
    cols, rows = np.triu_indices(q)
    return rows, cols


def lambda_from_theta(theta, q: int, correlated: bool = True) -> np.ndarray:
    """Lambda (q, q) from theta: lower triangle column by column, or the diagonal."""
    theta = np.asarray(theta, dtype=np.float64)
    lam = np.zeros((q, q))
    if correlated:
        rows, cols = _lower(q)
        lam[rows, cols] = theta
    else:
        lam[np.arange(q), np.arange(q)] = theta
    return lam


def theta_from_lambda(lam, correlated: bool = True) -> np.ndarray:
    """The inverse of :func:`lambda_from_theta`."""
    lam = np.asarray(lam, dtype=np.float64)
    if not correlated:
        return np.diag(lam).copy()
    rows, cols = _lower(lam.shape[0])
    return lam[rows, cols].copy()


def theta_bounds(q: int, correlated: bool = True) -> list[tuple[float | None, None]]:
    """L-BFGS-B bounds: the diagonal of Lambda >= 0, the rest free."""
    if not correlated:
        return [(0.0, None)] * q
    rows, cols = _lower(q)
    return [(0.0, None) if r == c else (None, None) for r, c in zip(rows, cols, strict=True)]


def _factor(stats: SlopeStats, lam: np.ndarray):
    """Per cluster: C_l (L, q, q) with C_l C_l' = Lambda' Z_l'Z_l Lambda + I, and sum log|A_l|."""
    A = lam.T @ stats.ZtZ @ lam + np.eye(stats.q)
    C = np.linalg.cholesky(A)
    logdet = 2.0 * np.log(np.diagonal(C, axis1=1, axis2=2)).sum(axis=1)
    return C, logdet


def _profiled(stats: SlopeStats, lam: np.ndarray):
    """(sum log|A_l|, X'WX, X'Wy, y'Wy) at Lambda."""
    C, logdet = _factor(stats, lam)
    R_ZX = np.linalg.solve(C, lam.T @ stats.ZtX)  # (L, q, k)
    r_Zy = np.linalg.solve(C, (lam.T @ stats.Zty[..., None]))[..., 0]  # (L, q)
    XtWX = stats.XtX - np.einsum("lqi,lqj->ij", R_ZX, R_ZX)
    XtWy = stats.Xty - np.einsum("lqi,lq->i", R_ZX, r_Zy)
    ytWy = stats.yty - float((r_Zy**2).sum())
    return float(logdet.sum()), XtWX, XtWy, ytWy


def _solve_beta(XtWX, XtWy, ytWy):
    chol = np.linalg.cholesky(XtWX)
    half = np.linalg.solve(chol, XtWy)
    beta = np.linalg.solve(chol.T, half)
    r2 = ytWy - float(half @ half)
    return beta, r2, 2.0 * float(np.log(np.diagonal(chol)).sum())


def deviance(stats: SlopeStats, theta, *, reml: bool = True, correlated: bool = True) -> float:
    """lme4's profiled criterion at theta: ``REMLcrit`` (``reml``) or the ML ``deviance``."""
    lam = lambda_from_theta(theta, stats.q, correlated)
    logdetA, XtWX, XtWy, ytWy = _profiled(stats, lam)
    try:
        _, r2, logdetX = _solve_beta(XtWX, XtWy, ytWy)
    except np.linalg.LinAlgError:
        return math.inf
    if not r2 > 0:
        return math.inf
    if reml:
        dof = stats.n - stats.k
        return logdetA + logdetX + dof * (1.0 + math.log(2.0 * math.pi * r2 / dof))
    return logdetA + stats.n * (1.0 + math.log(2.0 * math.pi * r2 / stats.n))


def _relative_factor(V, sigma) -> np.ndarray:
    """Any Lambda with Lambda Lambda' = V / sigma^2 (Cholesky; eigenvectors when V is singular)."""
    rel = np.asarray(V, dtype=np.float64) / float(sigma) ** 2
    try:
        return np.linalg.cholesky(rel)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(0.5 * (rel + rel.T))
        if vals.min() < -1e-10 * max(1.0, vals.max()):
            raise DataError("the random-effects covariance V is not positive semi-definite"
                            ) from None
        return vecs * np.sqrt(np.clip(vals, 0.0, None))


def cluster_log_density(stats: SlopeStats, beta, V, sigma) -> np.ndarray:
    """(L,): log N(y_l | X_l beta, Z_l V Z_l' + sigma^2 I) of each cluster, from the statistics.

    Woodbury with q x q blocks (see the module); the leave-one-cluster-out terms.
    """
    beta = np.asarray(beta, dtype=np.float64)
    s2 = float(sigma) ** 2
    lam = _relative_factor(V, sigma)
    C, logdet = _factor(stats, lam)
    rr = (stats.yty_l - 2.0 * stats.Xty_l @ beta
          + np.einsum("i,lij,j->l", beta, stats.XtX_l, beta))
    c = lam.T @ (stats.Zty - stats.ZtX @ beta)[..., None]  # (L, q, 1): Lambda' Z_l' r_l
    u = np.linalg.solve(C, c)[..., 0]
    quad = rr - (u**2).sum(axis=1)
    n = stats.n_l.astype(np.float64)
    return -0.5 * (n * (LOG_2PI + math.log(s2)) + logdet + quad / s2)


def log_density(stats: SlopeStats, beta, V, sigma) -> float:
    """The log density log p(y | beta, V, sigma): the sum of :func:`cluster_log_density`."""
    return float(cluster_log_density(stats, beta, V, sigma).sum())


@dataclass(frozen=True)
class SlopesEstimate:
    """An ML or REML fit of a random-slopes model (one grouping factor).

    ``sd`` (q,) per coefficient, ``corr`` (q, q) (NaN where an sd is 0; the identity off-diagonal
    zeros for the uncorrelated model), ``criterion`` lme4's REMLcrit or deviance, ``boundary``
    by output name (``tau[...]`` at 0, ``rho[...]`` at +-1), ``singular`` lme4's isSingular.
    """

    method: str
    group: str
    coefficients: tuple[str, ...]
    fixed_names: tuple[str, ...]
    correlated: bool
    theta: np.ndarray
    beta: np.ndarray
    sd: np.ndarray
    corr: np.ndarray
    sigma: float
    criterion: float
    boundary: dict[str, bool]
    singular: bool
    V: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        """Flat, named: ``tau[g|c]``, ``rho[g|a,b]`` (correlated only), ``sigma``, fixed effects."""
        out = {tau_name(self.group, c): float(s)
               for c, s in zip(self.coefficients, self.sd, strict=True)}
        if self.correlated:
            q = len(self.coefficients)
            for i in range(q):
                for j in range(i + 1, q):
                    out[rho_name(self.group, self.coefficients[i], self.coefficients[j])] = float(
                        self.corr[i, j])
        out["sigma"] = self.sigma
        out.update({name: float(b) for name, b in zip(self.fixed_names, self.beta, strict=True)})
        return out


def _gradient(f, x: np.ndarray) -> np.ndarray:
    g = np.empty_like(x)
    for i in range(len(x)):
        h = 1e-6 * max(1.0, abs(x[i]))
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2.0 * h)
    return g


def _minimise(crit, start: np.ndarray, q: int, correlated: bool) -> tuple[np.ndarray, float]:
    """Unbounded L-BFGS-B over theta, columns' signs then made lme4's, small diagonals snapped to 0.

    The criterion depends on Lambda Lambda' only, which is unchanged when a column of Lambda
    changes sign, so the search needs no bound: the diagonal may cross 0 and the columns are
    flipped afterwards (diagonal >= 0, lme4's convention). Decision: a bounded search (L-BFGS-B
    with the diagonal >= 0) stopped on the bound where a diagonal entry whose column is otherwise
    0 has a vanishing gradient even where 0 is a maximum along it (measured: Orthodont and
    sleepstudy's quadratic model stopped 1-11 units of deviance above lme4's optimum; the
    uncorrelated boundary case's ML fit at theta = 0). A diagonal entry that ends below 1e-4 is
    tried at exactly 0 and kept there when the criterion is no worse than 1e-10 relative (lme4's
    bobyqa lands on its bound; an unbounded search only approaches it).
    """
    options = {"ftol": 1e-15, "gtol": 1e-9, "maxiter": 5000}
    res = optimize.minimize(crit, np.asarray(start, dtype=np.float64),
                            jac=lambda t: _gradient(crit, t), method="L-BFGS-B", options=options)
    lam = lambda_from_theta(res.x, q, correlated)
    lam = lam * np.where(np.diag(lam) < 0, -1.0, 1.0)  # flip columns: same Lambda Lambda'
    theta = theta_from_lambda(lam, correlated)
    value = float(crit(theta))
    for i in (i for i, b in enumerate(theta_bounds(q, correlated)) if b[0] is not None):
        if 0 < theta[i] < SINGULAR_THETA:
            trial = theta.copy()
            trial[i] = 0.0
            f = crit(trial)
            if f <= value + 1e-10 * max(1.0, abs(value)):
                theta, value = trial, float(min(f, value))
    return theta, value


def fit_slopes(stats: SlopeStats, *, method: str = "reml", correlated: bool = True,
               group: str = "g", coefficients=None, fixed_names=None) -> SlopesEstimate:
    """REML (``method="reml"``) or ML fit by lme4's profiled criterion (see the module)."""
    if method not in ("reml", "ml"):
        raise DataError(f"method must be 'reml' or 'ml', not {method!r}")
    q, k = stats.q, stats.k
    coefficients = tuple(coefficients or (f"z{j}" for j in range(q)))
    fixed_names = tuple(fixed_names or (f"x{j}" for j in range(k)))
    if len(coefficients) != q or len(fixed_names) != k:
        raise DataError("one name per random-effects column and per fixed-effects column is needed")
    reml = method == "reml"
    if stats.n <= k + (1 if reml else 0):
        raise DataError(f"{stats.n} rows cannot estimate {k} fixed effects and a residual variance")
    eig = np.linalg.eigvalsh(stats.XtX)
    if eig.min() <= 1e-10 * eig.max():
        raise DataError("the fixed-effects columns are collinear (X'X is singular): drop a column")

    def crit(t):
        return deviance(stats, t, reml=reml, correlated=correlated)

    theta, value = _minimise(crit, theta_from_lambda(np.eye(q), correlated), q, correlated)
    lam = lambda_from_theta(theta, q, correlated)
    logdetA, XtWX, XtWy, ytWy = _profiled(stats, lam)
    beta, r2, _ = _solve_beta(XtWX, XtWy, ytWy)
    sigma = math.sqrt(r2 / (stats.n - k if reml else stats.n))
    V = sigma**2 * lam @ lam.T
    sd = np.sqrt(np.diag(V))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = V / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    if not correlated:
        corr = np.eye(q)
    boundary = {tau_name(group, c): bool(s < BOUNDARY_SD * sigma)
                for c, s in zip(coefficients, sd, strict=True)}
    if correlated:
        for i in range(q):
            for j in range(i + 1, q):
                at_one = bool(np.isfinite(corr[i, j]) and abs(corr[i, j]) >= 1.0 - BOUNDARY_CORR)
                boundary[rho_name(group, coefficients[i], coefficients[j])] = at_one
    lower = np.array([b[0] is not None for b in theta_bounds(q, correlated)])
    return SlopesEstimate(
        method=method, group=group, coefficients=coefficients, fixed_names=fixed_names,
        correlated=correlated, theta=theta, beta=beta, sd=sd, corr=corr, sigma=sigma,
        criterion=value, boundary=boundary,
        singular=bool((theta[lower] < SINGULAR_THETA).any()), V=V)
