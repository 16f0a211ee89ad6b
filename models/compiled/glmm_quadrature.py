"""The ``sufficient`` GLMM form's quadrature in numba: the default trapezoid rule per cluster group.

The same algorithm as :func:`models.quadrature.cluster_logp` with ``K=None`` (mode by damped
Newton, scale s from the curvature there, step 0.5 s cut by 2^(1/4) until <= ``STEP_U`` in u, ends
grown by 2^(1/2) from 4 s until f has fallen by ``TAIL_DROP``; exact gradient through the moving
nodes), written per cluster as scalar loops and compiled once per installation
(``cache=True``). Clusters are grouped by ``group`` codes computed from the data (equal
statistics and cluster-level covariates, so equal eta at every parameter value): one quadrature
per group. Links: ``logit`` (code 0) and ``log`` (Poisson, code 1); the probit stays with numpy
(its log Phi needs scipy's ``log_ndtr``). Measured equal to the numpy rule to 1e-12
(``tests/test_glmm_integrated.py``); one gradient of 2,000 binomial clusters (368 groups) costs
tens of microseconds against 12 ms in numpy.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["LINK_CODE", "STEP_U", "TAIL_DROP", "grouped_logp", "rows_cluster_logp",
           "rows_conditional_draws", "rows_logp"]

# models.quadrature's constants, repeated here: numba's cache does not see a change in another
# module (tests/test_glmm_integrated.py checks they are equal)
STEP_U = 0.2
TAIL_DROP = 40.0

LINK_CODE = {("binomial", "logit"): 0, ("poisson", "log"): 1}
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@numba.njit(cache=True, error_model="numpy")
def _kernel(code, y, n, x):
    """Row kernel (no constants) at eta = x and its first three derivatives."""
    if code == 0:
        if x >= 0.0:
            soft = x + math.log1p(math.exp(-x))
            q = math.exp(-x) / (1.0 + math.exp(-x))
            p = 1.0 - q
        else:
            soft = math.log1p(math.exp(x))
            p = math.exp(x) / (1.0 + math.exp(x))
            q = 1.0 - p
        return y * x - n * soft, y - n * p, -n * p * q, -n * p * q * (q - p)
    mu = math.exp(x)
    return y * x - mu, y - mu, -mu, -mu


@numba.njit(cache=True, error_model="numpy")
def _f(code, y, n, e, rows, u, tau):
    """f(u) of the cluster of ``rows`` and its first three u-derivatives."""
    f0 = f1 = f2 = f3 = 0.0
    for i in rows:
        k0, k1, k2, k3 = _kernel(code, y[i], n[i], e[i] + u)
        f0 += k0
        f1 += k1
        f2 += k2
        f3 += k3
    inv = 1.0 / (tau * tau)
    return f0 - 0.5 * u * u * inv - math.log(tau) - _HALF_LOG_2PI, f1 - u * inv, f2 - inv, f3


@numba.njit(cache=True, error_model="numpy")
def _mode(code, y, n, e, rows, tau):
    u = 0.0
    f0, g, h, _ = _f(code, y, n, e, rows, u, tau)
    for _ in range(100):
        step = -g / h
        t = 1.0
        cand = u + step
        for _ in range(60):
            cand = u + t * step
            f1 = _f(code, y, n, e, rows, cand, tau)[0]
            if f1 >= f0 - 1e-12 * abs(f0):
                break
            t *= 0.5
        u = cand
        f0, g, h, _ = _f(code, y, n, e, rows, u, tau)
        if abs(t * step) <= 1e-13 * (1.0 + abs(u)):
            break
    return u - g / h


@numba.njit(cache=True, error_model="numpy")
def _grid(code, y, n, e, rows, tau):
    """The default rule's grid of the cluster of ``rows``: (u, s, h, lo, M, H, H3).

    Nodes u + s (k - lo) h, k = 0..M-1: mode u, scale s = (-H)^(-1/2) from the curvature H there
    (H3 its derivative), step h = 0.5 cut by 2^(1/4) until h s <= ``STEP_U``, ends grown by
    2^(1/2) from 4 s until f has fallen by ``TAIL_DROP``. The value and the conditional draws
    share it, so they integrate over the same nodes.
    """
    u = _mode(code, y, n, e, rows, tau)
    f0, _, H, H3 = _f(code, y, n, e, rows, u, tau)
    s = 1.0 / math.sqrt(-H)
    h = 0.5
    while h * s > STEP_U:
        h = h * 2.0 ** -0.25
    ends = np.empty(2)
    for i in range(2):
        side = -1.0 if i == 0 else 1.0
        T = 4.0
        for _ in range(40):
            fT = _f(code, y, n, e, rows, u + side * s * T, tau)[0]
            if not fT > f0 - TAIL_DROP:
                break
            T = T * 2.0 ** 0.5
        ends[i] = T
    lo = int(math.ceil(ends[0] / h))
    return u, s, h, lo, lo + int(math.ceil(ends[1] / h)) + 1, H, H3


@numba.njit(cache=True, error_model="numpy")
def _cluster(code, y, n, e, rows, tau, grad, d_eta):
    """(A, dA/dtau) of the cluster of ``rows`` (tau > 0) by the default trapezoid rule.

    With ``grad``, dA/de_i is written to ``d_eta[i]`` for its rows.
    """
    u, s, h, lo, M, H, H3 = _grid(code, y, n, e, rows, tau)
    terms = np.empty(M)
    fu = np.empty(M)
    top = -np.inf
    for k in range(M):
        fk, gk, _, _ = _f(code, y, n, e, rows, u + s * (k - lo) * h, tau)
        terms[k] = math.log(h) + fk
        fu[k] = gk
        top = max(top, terms[k])
    total = 0.0
    for k in range(M):
        total += math.exp(terms[k] - top)
    A = top + math.log(total) + math.log(s)
    if not grad:
        return A, 0.0
    s2, s3 = s * s, s * s * s
    du_t = s2 * 2.0 * u / tau ** 3
    ds_t = 0.5 * s3 * (2.0 / tau ** 3 + H3 * du_t)
    d_tau = 0.0
    wa = 0.0  # sum_k w_k f'(z_k)
    wb = 0.0  # sum_k w_k f'(z_k) xi_k
    for i in rows:
        d_eta[i] = 0.0
    for k in range(M):
        xi = (k - lo) * h
        w = math.exp(terms[k] - top) / total
        z = u + s * xi
        d_tau += w * (z * z / tau ** 3 - 1.0 / tau + fu[k] * (du_t + xi * ds_t))
        wa += w * fu[k]
        wb += w * fu[k] * xi
        for i in rows:
            d_eta[i] += w * _kernel(code, y[i], n[i], e[i] + z)[1]
    for i in rows:
        _, _, r2, r3 = _kernel(code, y[i], n[i], e[i] + u)
        du_e = s2 * r2
        ds_e = 0.5 * s3 * (r3 + H3 * du_e)
        d_eta[i] += wa * du_e + wb * ds_e + ds_e / s
    return A, d_tau + ds_t / s


@numba.njit(cache=True, error_model="numpy")
def grouped_logp(code, trials, y, eta, group, tau, grad):
    """Sum over clusters of the trapezoid log density (without the rows' constants).

    ``trials``, ``y``, ``eta`` (L,) per cluster (its pooled row), ``group`` (L,) codes 0..G-1 of
    clusters with equal (trials, y, eta) for every parameter value. Returns (total, d_eta (L,),
    d_tau).
    """
    L = eta.size
    G = 0
    for i in range(L):
        G = max(G, group[i] + 1)
    first = np.full(G, -1)
    count = np.zeros(G)
    for i in range(L):
        if first[group[i]] < 0:
            first[group[i]] = i
        count[group[i]] += 1.0
    d_row = np.zeros(L)
    total = 0.0
    d_tau = 0.0
    for g in range(G):
        i = first[g]
        rows = first[g:g + 1]
        if tau == 0.0:
            k0, k1, _, _ = _kernel(code, y[i], trials[i], eta[i])
            a, dt = k0, 0.0
            d_row[i] = k1
        else:
            a, dt = _cluster(code, y, trials, eta, rows, tau, grad, d_row)
        total += count[g] * a
        d_tau += count[g] * dt
    d_eta = np.empty(L)
    for i in range(L):
        d_eta[i] = d_row[first[group[i]]]
    return total, d_eta, d_tau


@numba.njit(cache=True, error_model="numpy")
def rows_logp(code, trials, y, eta, order, starts, tau, grad):
    """Sum over clusters of the trapezoid log density of their rows (without constants).

    ``order`` lists the rows cluster by cluster, cluster l's from ``starts[l]`` to
    ``starts[l + 1]``. Returns (total, d_eta (N,), d_tau).
    """
    d_eta = np.zeros(eta.size)
    total = 0.0
    d_tau = 0.0
    for c in range(starts.size - 1):
        rows = order[starts[c]:starts[c + 1]]
        if rows.size == 0:
            continue
        if tau == 0.0:
            for i in rows:
                k0, k1, _, _ = _kernel(code, y[i], trials[i], eta[i])
                total += k0
                d_eta[i] = k1
            continue
        a, dt = _cluster(code, y, trials, eta, rows, tau, grad, d_eta)
        total += a
        d_tau += dt
    return total, d_eta, d_tau


@numba.njit(cache=True, error_model="numpy")
def rows_cluster_logp(code, trials, y, eta, order, starts, tau):
    """(S, L) each cluster's trapezoid log density per draw (without the rows' constants).

    ``eta`` (S, N) per draw and row, ``tau`` (S,); ``order`` and ``starts`` as
    :func:`rows_logp`'s. The value of :func:`rows_logp` cluster by cluster, no gradient.
    """
    S, L = tau.size, starts.size - 1
    out = np.zeros((S, L))
    scratch = np.empty(0)
    for s in range(S):
        e = eta[s]
        for c in range(L):
            rows = order[starts[c]:starts[c + 1]]
            if rows.size == 0:
                continue
            if tau[s] == 0.0:
                for i in rows:
                    out[s, c] += _kernel(code, y[i], trials[i], e[i])[0]
                continue
            out[s, c] = _cluster(code, y, trials, e, rows, tau[s], False, scratch)[0]
    return out


@numba.njit(cache=True, error_model="numpy")
def _draw_one(code, y, n, e, rows, tau, w_cell, w_point):
    """One draw of the cluster's u by :func:`models.quadrature.conditional_draws`' rule.

    ``w_cell``, ``w_point``: its two U(0, 1) numbers (the cell, the point within it).
    """
    u, s, h, lo, M, _, _ = _grid(code, y, n, e, rows, tau)
    logf = np.empty(M)
    top = -np.inf
    for k in range(M):
        logf[k] = _f(code, y, n, e, rows, u + s * (k - lo) * h, tau)[0]
        top = max(top, logf[k])
    p = np.empty(M)
    for k in range(M):
        p[k] = math.exp(logf[k] - top)
    cum = np.empty(M - 1)
    acc = 0.0
    for k in range(M - 1):
        acc += p[k] + p[k + 1]
        cum[k] = acc
    target = w_cell * acc
    cell = 0
    for k in range(M - 1):
        if cum[k] <= target:
            cell += 1
    cell = min(cell, M - 2)
    a, b = p[cell], p[cell + 1]
    t = w_point * (a + b) / (a + math.sqrt(a * a + (b - a) * w_point * (a + b)))
    return u + s * ((cell - lo) * h + t * h)


@numba.njit(cache=True, error_model="numpy")
def rows_conditional_draws(code, trials, y, eta, order, starts, tau, w_cell, w_point):
    """(S, L) one draw of each cluster's u per posterior draw (tau = 0: u = 0).

    ``eta`` (S, N), ``tau`` (S,), ``w_cell`` and ``w_point`` (S, L) U(0, 1) numbers; ``order``
    and ``starts`` as :func:`rows_logp`'s.
    """
    S, L = tau.size, starts.size - 1
    out = np.zeros((S, L))
    for s in range(S):
        if tau[s] == 0.0:
            continue
        for c in range(L):
            rows = order[starts[c]:starts[c + 1]]
            if rows.size > 0:
                out[s, c] = _draw_one(code, y, trials, eta[s], rows, tau[s], w_cell[s, c],
                                      w_point[s, c])
    return out
