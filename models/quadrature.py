"""Quadrature of a one-grouping-factor GLMM's cluster likelihoods: trapezoid (default) and AGQ.

For cluster l with rows j, fixed linear predictor eta_lj (x'beta + offset) and random intercept
u ~ N(0, tau^2), the marginal log density is

    A_l = log  int  exp f_l(u) du,   f_l(u) = sum_j log p(y_lj | eta_lj + u) + log N(u; 0, tau^2).

f_l is concave for the logit, probit and log links, so Newton's method (vectorised over clusters,
row sums by ``np.bincount`` over the cluster codes, backtracking when a step does not increase f)
finds its mode u_l. With s_l = (-f_l''(u_l))^(-1/2) and K Gauss-Hermite nodes x_k and weights w_k,

    A_l ~= log( sqrt(2) s_l  sum_k  w_k exp(x_k^2) exp f_l(u_l + sqrt(2) s_l x_k) ).

That is ``K = k`` (lme4's nAGQ = k; K = 1 is the Laplace approximation), what ``fit_glmm`` uses to
equal glmer. It converges slowly when tau >= 1 and a cluster is all-zero or all-one: the integrand's
prior side is a Gaussian tail of width tau while the likelihood side falls off on the row density's
own scale in u, both far from the curvature at the mode (K = 25: 1.8e-3 at tau = 5). The default
(``K=None``) is therefore a trapezoid rule on nodes u_l + s_l xi with xi = j h_l: step h_l = 0.5 in
units of s_l, reduced until h_l s_l <= ``STEP_U`` = 0.2; the grid runs out on each side until f_l
has fallen by ``TAIL_DROP`` = 40. For analytic, fast-decaying integrands the trapezoid converges
geometrically in 1/h; measured worst error against brute force over the grid of
tests/test_quadrature.py (cluster sizes 1..200, tau 0.05..5, all-zero/all-one clusters, three
families): 2e-11 with 47 (tau <= 0.3) to 414 (tau = 5) nodes per cluster (DEVELOPERS.md).
A call costs max over clusters of the node count times one pass over the rows.

Gradient. ``cluster_logp(..., grad=True)`` returns the exact derivative of the value *as computed*:
the nodes z_k = u_l + s_l xi_k move with the parameters through u_l and s_l (xi_k fixed: the
trapezoid's steps and ends are picked from discrete ladders), so dA/dtheta = sum_k omega_k
[df/dtheta(z_k) + f'(z_k)(du/dtheta + xi_k ds/dtheta)] + (ds/dtheta)/s, with du/dtheta = s^2
f'_theta(u) (implicit function theorem at the mode) and ds/dtheta = s^3/2 dH/dtheta, H = f''(u),
which takes the third derivative of the row densities. The implicit-function step is exact only at
the exact mode; Newton is iterated until its step is below 1e-13 (1 + |u|), so the residual f'(u)
is at rounding level and the gradient agrees with central finite differences of the value to ~1e-8
(tested).

``tau = 0`` is the limit: the cluster's rows are independent, A_l = sum_j log p(y_lj | eta_lj), and
the derivative in tau is 0 there (A is even in tau).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite import hermgauss
from scipy.special import logsumexp

from .glm_density import density_for

__all__ = [
    "DEFAULT_K",
    "AgqResult",
    "ClusterStats",
    "cluster_logp",
    "cluster_logp_draws",
    "cluster_stats",
    "conditional_draws",
    "conditional_modes",
    "sufficient_logp",
]

DEFAULT_K = None  # the trapezoid rule; an integer k selects Gauss-Hermite with k nodes
STEP_U = (
    0.2  # the trapezoid's largest step in u (the row densities' scale; measured, DEVELOPERS.md)
)
TAIL_DROP = 40.0  # the grid ends where f is this far below its mode (e^-40 = 4e-18)
_LOG_2PI = np.log(2.0 * np.pi)
_MAX_NEWTON = 100


@dataclass(frozen=True)
class AgqResult:
    """Per-cluster log marginal densities and, when asked, their gradients."""

    logp: np.ndarray  # (L,)
    d_tau: np.ndarray | None  # (L,) dA_l / dtau
    d_eta: np.ndarray | None  # (N,) dA_{g(i)} / deta_i  (so d sum_l A_l / dbeta = X' d_eta)
    mode: np.ndarray  # (L,) conditional modes u_l
    scale: np.ndarray  # (L,) s_l = (-f''(u_l))^(-1/2)


def _sum(codes, values, n_clusters):
    return np.bincount(codes, weights=values, minlength=n_clusters)


def _f(dens, y, n, eta, codes, L, u, tau, order):
    """f(u) per cluster and its first ``order`` derivatives in u; also the row derivatives."""
    rows = dens.kernel(y, n, eta + u[codes], order)
    inv = 1.0 / (tau * tau)
    out = [_sum(codes, rows[0], L) - 0.5 * u * u * inv - np.log(tau) - 0.5 * _LOG_2PI]
    if order >= 1:
        out.append(_sum(codes, rows[1], L) - u * inv)
    if order >= 2:
        out.append(_sum(codes, rows[2], L) - inv)
    if order >= 3:
        out.append(_sum(codes, rows[3], L))
    return out, rows


def conditional_modes(dens, y, n, eta, codes, L, tau):
    """The mode of f_l per cluster by damped Newton (f is concave). Returns u (L,)."""
    u = np.zeros(L)
    (f0, g, h), _ = _f(dens, y, n, eta, codes, L, u, tau, 2)
    for _ in range(_MAX_NEWTON):
        step = -g / h
        t = np.ones(L)
        for _ in range(60):  # backtrack clusters whose f did not increase
            cand = u + t * step
            (f1,), _ = _f(dens, y, n, eta, codes, L, cand, tau, 0)
            bad = ~(f1 >= f0 - 1e-12 * np.abs(f0))
            if not bad.any():
                break
            t = np.where(bad, 0.5 * t, t)
        u = cand
        (f0, g, h), _ = _f(dens, y, n, eta, codes, L, u, tau, 2)
        if np.all(np.abs(t * step) <= 1e-13 * (1.0 + np.abs(u))):
            break
    # one last full Newton step so f'(u) is at rounding level
    return u - g / h


def _tau_per_cluster(tau, L):
    tau = np.broadcast_to(np.asarray(tau, dtype=float), (L,)).copy()
    if np.any(tau < 0) or not np.all(np.isfinite(tau)):
        raise ValueError("tau must be finite and non-negative")
    return tau


def _gauss_hermite(K, L):
    """K Gauss-Hermite nodes in units of s and their log weights (lme4's nAGQ = K), per cluster."""
    x, w = hermgauss(int(K))
    xi = np.broadcast_to(np.sqrt(2.0) * x, (L, x.size))
    return xi, np.broadcast_to(np.log(w) + x * x + 0.5 * np.log(2.0), (L, x.size))


def _trapezoid(dens, y, n, eta, codes, L, u, s, tau):
    """Each cluster's trapezoid grid in units of s: xi (L, M), log weights (L, M); -inf pads.

    Step h = 0.5 (in s), divided by 2^(1/4) until h s <= STEP_U (the row densities' own scale in
    u); range [-T_lo, T_hi] with T multiplied by 2^(1/2) from 4 until f has fallen by TAIL_DROP at
    the end. Both are chosen from discrete ladders per cluster, so the grid is locally constant in
    the parameters and the gradient of the sum is exact.
    """
    h = np.full(L, 0.5)
    while np.any(h * s > STEP_U):
        h = np.where(h * s > STEP_U, h * 2.0**-0.25, h)
    (f0,), _ = _f(dens, y, n, eta, codes, L, u, tau, 0)
    with np.errstate(over="ignore"):  # far Poisson tails: e^eta overflows to f = -inf, past the end
        ends = _ends(dens, y, n, eta, codes, L, u, s, tau, f0)
    lo, hi = np.ceil(ends[0] / h), np.ceil(ends[1] / h)
    M = int(np.max(lo + hi)) + 1
    j = np.arange(M)[None, :] - lo[:, None]
    xi = j * h[:, None]
    lam = np.where(j <= hi[:, None], np.log(h)[:, None], -np.inf)
    return xi, lam


def _ends(dens, y, n, eta, codes, L, u, s, tau, f0):
    ends = []
    for side in (-1.0, 1.0):
        T = np.full(L, 4.0)
        for _ in range(40):
            (fT,), _ = _f(dens, y, n, eta, codes, L, u + side * s * T, tau, 0)
            short = fT > f0 - TAIL_DROP
            if not short.any():
                break
            T = np.where(short, T * 2.0**0.5, T)
        ends.append(T)
    return ends


def cluster_logp(
    y,
    trials,
    eta_fixed,
    codes,
    tau,
    family: str,
    link: str,
    K: int | None = None,
    n_clusters: int | None = None,
    grad: bool = False,
    const: bool = True,
) -> AgqResult:
    """Log marginal density of each cluster (codes 0..L-1, any order); ``tau`` scalar or (L,).

    ``K=None`` (the default): the mode-centred trapezoid rule (error <= 1e-8 for tau <= 5, see the
    module docstring); ``K`` = k: Gauss-Hermite with k nodes, lme4's nAGQ = k (1 = Laplace).
    ``const=False`` leaves out the rows' normalising constants (log C(n, y), -log y!).
    """
    dens = density_for(family, link)
    y = np.asarray(y, dtype=float)
    n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    eta = np.asarray(eta_fixed, dtype=float)
    codes = np.asarray(codes, dtype=np.intp)
    L = int(codes.max()) + 1 if n_clusters is None else int(n_clusters)
    tau = _tau_per_cluster(tau, L)
    zero = tau == 0
    tz = np.where(zero, 1.0, tau)  # evaluate the zero-tau clusters harmlessly, then replace them

    u = conditional_modes(dens, y, n, eta, codes, L, tz)
    (_, _, H, H3), rows_m = _f(dens, y, n, eta, codes, L, u, tz, 3)
    s = 1.0 / np.sqrt(-H)
    if K is None:
        xi, lam = _trapezoid(dens, y, n, eta, codes, L, u, s, tz)
    else:
        xi, lam = _gauss_hermite(K, L)
    M = xi.shape[1]
    terms = np.empty((L, M))
    fus, row_d1 = [], []
    for k in range(M):
        fk, rk = _f(dens, y, n, eta, codes, L, u + s * xi[:, k], tz, 1 if grad else 0)
        terms[:, k] = lam[:, k] + fk[0]
        if grad:
            fus.append(fk[1])
            row_d1.append(rk[1])
    A = logsumexp(terms, axis=1) + np.log(s)

    rows0 = dens.kernel(y, n, eta, 0)[0]
    A = np.where(zero, _sum(codes, rows0, L), A)
    if const:
        A = A + _sum(codes, dens.const(y, n), L)
    if not grad:
        return AgqResult(A, None, None, u, s)

    omega = np.exp(terms - logsumexp(terms, axis=1, keepdims=True))  # (L, M)
    fu = np.stack(fus, axis=1)  # (L, M)
    zs = u[:, None] + s[:, None] * xi
    s2, s3 = s * s, s**3
    # tau: partial f_tau(z) = z^2/tau^3 - 1/tau; f_u,tau(u) = 2u/tau^3; H_tau = 2/tau^3
    du_t = s2 * 2.0 * u / tz**3
    dH_t = 2.0 / tz**3 + H3 * du_t
    ds_t = 0.5 * s3 * dH_t
    ftau = zs * zs / tz[:, None] ** 3 - 1.0 / tz[:, None]
    d_tau = np.sum(omega * (ftau + fu * (du_t[:, None] + xi * ds_t[:, None])), axis=1)
    d_tau = np.where(zero, 0.0, d_tau + ds_t / s)
    # eta_i (row i in cluster l): partial f_eta_i(z) = d1_i(eta_i + z); f_u,eta_i = d2_i; H_eta_i =
    # d3_i
    du_e = s2[codes] * rows_m[2]
    dH_e = rows_m[3] + H3[codes] * du_e
    ds_e = 0.5 * s3[codes] * dH_e
    a = np.sum(omega * fu, axis=1)  # sum_k omega_k f'(z_k)
    b = np.sum(omega * fu * xi, axis=1)  # sum_k omega_k f'(z_k) xi_k
    direct = np.zeros_like(y)
    for k in range(M):
        direct += omega[codes, k] * row_d1[k]
    d_eta = direct + a[codes] * du_e + b[codes] * ds_e + ds_e / s[codes]
    zero_rows = zero[codes]
    if zero_rows.any():
        d_eta = np.where(zero_rows, dens.kernel(y, n, eta, 1)[1], d_eta)
    return AgqResult(A, d_tau, d_eta, u, s)


def cluster_logp_draws(
    y,
    trials,
    eta_fixed_draws,
    codes,
    tau_draws,
    family: str,
    link: str,
    K: int | None = DEFAULT_K,
    n_clusters: int | None = None,
    block: int = 64,
) -> np.ndarray:
    """(S, L) AGQ log marginal densities for S posterior draws (leave-one-cluster-out weights).

    ``eta_fixed_draws`` is (S, N) or (N,) (the same for every draw); ``tau_draws`` is (S,). The
    draws are stacked as S x L clusters of one call, ``block`` draws at a time to bound memory.
    """
    codes = np.asarray(codes, dtype=np.intp)
    L = int(codes.max()) + 1 if n_clusters is None else int(n_clusters)
    tau_draws = np.atleast_1d(np.asarray(tau_draws, dtype=float))
    S, N = tau_draws.size, codes.size
    eta = np.broadcast_to(np.asarray(eta_fixed_draws, dtype=float), (S, N))
    y = np.asarray(y, dtype=float)
    n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    out = np.empty((S, L))
    for start in range(0, S, block):
        b = min(block, S - start)
        stacked = (codes[None, :] + L * np.arange(b)[:, None]).ravel()
        res = cluster_logp(
            np.tile(y, b),
            np.tile(n, b),
            eta[start : start + b].ravel(),
            stacked,
            np.repeat(tau_draws[start : start + b], L),
            family,
            link,
            K,
            n_clusters=b * L,
        )
        out[start : start + b] = res.logp.reshape(b, L)
    return out


@dataclass(frozen=True)
class ClusterStats:
    """A cluster's sufficient statistics when its fixed linear predictor is constant within it.

    Binomial: ``trials`` = total trials, ``y`` = total successes, ``log_exposure`` = 0. Poisson:
    ``trials`` = rows, ``y`` = total count, ``log_exposure`` = log sum_j exp(offset_j) (log rows
    without an offset). ``const`` = the rows' normalising constants and offset terms minus those of
    the one pooled "row" (y, trials, eta + log_exposure), so  sum_rows log p = pooled row's log p +
    const  exactly. const  exactly.
    """

    trials: np.ndarray
    y: np.ndarray
    log_exposure: np.ndarray
    const: np.ndarray


def cluster_stats(
    y, trials, codes, family: str, link: str, offset=None, n_clusters: int | None = None
) -> ClusterStats:
    """Per-cluster sufficient statistics (see ``ClusterStats``); a binomial offset goes into eta."""
    dens = density_for(family, link)
    codes = np.asarray(codes, dtype=np.intp)
    L = int(codes.max()) + 1 if n_clusters is None else int(n_clusters)
    y = np.asarray(y, dtype=float)
    n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    Y = _sum(codes, y, L)
    if dens.uses_trials:
        if offset is not None:
            raise ValueError(
                "a binomial offset is part of eta_fixed, which must be constant within clusters"
            )
        Ntot = _sum(codes, n, L)
        return ClusterStats(
            Ntot, Y, np.zeros(L), _sum(codes, dens.const(y, n), L) - dens.const(Y, Ntot)
        )
    off = np.zeros_like(y) if offset is None else np.asarray(offset, dtype=float)
    rows = _sum(codes, np.ones_like(y), L)
    # log sum_j exp(o_j) per cluster, stably
    top = np.full(L, -np.inf)
    np.maximum.at(top, codes, off)
    logE = top + np.log(_sum(codes, np.exp(off - top[codes]), L))
    const = _sum(codes, y * off + dens.const(y, n), L) - Y * logE - dens.const(Y, rows)
    return ClusterStats(rows, Y, logE, const)


def sufficient_logp(
    stats: ClusterStats,
    eta_cluster,
    tau,
    family: str,
    link: str,
    K: int | None = DEFAULT_K,
    grad: bool = False,
):
    """Total log marginal density from sufficient statistics, clusters grouped by statistics.

    ``eta_cluster`` (L,) is each cluster's fixed linear predictor (without the Poisson offset).
    Returns ``(total, d_tau, d_eta_cluster)`` (the last two None unless ``grad``); ``total`` equals
    the sum of ``cluster_logp`` over the rows, constants included.
    """
    eta_c = np.asarray(eta_cluster, dtype=float) + stats.log_exposure
    key = np.column_stack([stats.trials, stats.y, eta_c])
    uniq, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    G = uniq.shape[0]
    res = cluster_logp(
        uniq[:, 1],
        uniq[:, 0],
        uniq[:, 2],
        np.arange(G),
        tau,
        family,
        link,
        K,
        n_clusters=G,
        grad=grad,
    )
    total = float(counts @ res.logp + stats.const.sum())
    if not grad:
        return total, None, None
    return total, float(counts @ res.d_tau), res.d_eta[inverse]


def conditional_draws(y, trials, eta_fixed, codes, tau, family: str, link: str, rng,
                      n_clusters: int | None = None) -> np.ndarray:
    """One draw per cluster of u_l from its conditional p(u_l | y_l, eta, tau) (L,).

    Exact inverse-CDF sampling of the density interpolated linearly between the default
    trapezoid grid's nodes (the interpolant whose integral the trapezoid rule computes; nodes
    <= 0.2 apart in u, ends where the density has fallen by e^-40): a cell is picked with
    probability its trapezoid mass, then a point within it by the inverse CDF of the linear
    density on it. ``tau`` scalar or (L,); tau = 0 gives u = 0.
    """
    dens = density_for(family, link)
    y = np.asarray(y, dtype=float)
    n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    eta = np.asarray(eta_fixed, dtype=float)
    codes = np.asarray(codes, dtype=np.intp)
    L = int(codes.max()) + 1 if n_clusters is None else int(n_clusters)
    tau = _tau_per_cluster(tau, L)
    zero = tau == 0
    tz = np.where(zero, 1.0, tau)
    u = conditional_modes(dens, y, n, eta, codes, L, tz)
    (_, _, H), _ = _f(dens, y, n, eta, codes, L, u, tz, 2)
    s = 1.0 / np.sqrt(-H)
    xi, lam = _trapezoid(dens, y, n, eta, codes, L, u, s, tz)
    M = xi.shape[1]
    logf = np.full((L, M), -np.inf)
    for k in range(M):
        fk, _ = _f(dens, y, n, eta, codes, L, u + s * xi[:, k], tz, 0)
        logf[:, k] = np.where(np.isfinite(lam[:, k]), fk[0], -np.inf)
    p = np.exp(logf - np.max(logf, axis=1, keepdims=True))  # 0 on the padding
    a, b = p[:, :-1], p[:, 1:]
    mass = np.where(np.isfinite(lam[:, 1:]), a + b, 0.0)  # cells between in-range nodes
    cum = np.cumsum(mass, axis=1)
    target = rng.uniform(size=L) * cum[:, -1]
    cell = np.minimum(np.sum(cum <= target[:, None], axis=1), M - 2)
    rows = np.arange(L)
    lo, hi = a[rows, cell], b[rows, cell]
    v = rng.uniform(size=L)
    # inverse CDF on [0, 1] of the density (1 - t) lo + t hi:
    # lo t + (hi - lo) t^2 / 2 = v (lo + hi) / 2
    t = v * (lo + hi) / (lo + np.sqrt(lo * lo + (hi - lo) * v * (lo + hi)))
    h = xi[:, 1] - xi[:, 0]
    out = u + s * (xi[rows, cell] + t * h)
    return np.where(zero, 0.0, out)
