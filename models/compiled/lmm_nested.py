r"""Exact log-likelihood and gradient of nested random-intercept linear mixed models, in numba.

The model, for D nested factors (level 1 the top, e.g. school; level D the bottom, e.g. class):

.. math::
    y = X\beta + \sum_{d=1}^{D} Z_d u_d + e, \qquad u_d \sim N(0, \tau_d^2 I),
    \qquad e \sim N(0, \sigma^2 I).

Its covariance is block diagonal by top unit, and inside a unit each level adds a rank-one term
per child. Applying the matrix determinant lemma and Sherman-Morrison once per unit, bottom-up:
a unit whose children carry (a_i, b_i) (a bottom cell's children are its rows, with
a = 1/sigma^2 and b = r_i/sigma^2) has A = sum a_i, B = sum b_i, g = 1 + tau_d^2 A and passes
(A/g, B/g) to its parent, so that

.. math::
    \log L = -\tfrac N2 \log 2\pi\sigma^2 - \frac{\mathrm{RSS}(\beta)}{2\sigma^2}
    + \sum_{\text{units}} \Bigl[-\tfrac12 \log g_u + \frac{\tau_{d(u)}^2 B_u^2}{2 g_u}\Bigr].

(D = 1: r'V^{-1}r = (r'r - w (1'r)^2)/sigma^2 with w = tau^2/(sigma^2 + n tau^2).) One pass costs
O(cells x k); the gradient in (beta, tau^2, sigma^2) is reverse mode through the same recursion,
written by hand. For D = 1 a second kernel groups clusters by size (equal sizes share g, and the
sum of their B^2 is a quadratic form in beta from per-size sums): O(distinct sizes x k^2).

Numerics: y and every column of X are centred at their global means (corrected two-pass) before
any sum is formed, and the residual is written r = delta(beta) 1 + (y_c - X_c beta) with
delta = ybar - xbar'beta, so data with mean 1e6 and sd 1 lose nothing to cancellation; an
intercept column centres to exactly zero and enters through delta alone.

``tests/test_lmm_kernels.py`` checks the value against scipy's multivariate normal of the stacked
vector and the gradient against complex-step derivatives of that dense density.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numba
import numpy as np

from varcomp.models.cells import NestedStats
from varcomp.models.compiled.layout import Layout

__all__ = ["NESTED_LAYOUT", "NestedStats", "nested_loglik", "nested_loglik_grad",
           "nested_loglik_grad_fast", "nested_loglik_grad_work", "nested_stats", "nested_work_size",
           "pack_nested"]

LOG_2PI = math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)

# The one layout of a nested block. Units are stored bottom-up: the C cells (level D) first, then
# level D-1, ..., level 1 last, so every parent's index exceeds its children's. The size-group
# arrays (fast D = 1 kernel) are empty when D > 1. ``broken`` = 1 is a test hook: tau instead of
# tau^2 in g (a deliberately wrong model the exactness tests must reject).
NESTED_LAYOUT = Layout(
    scalars=("fingerprint", "broken", "n_obs", "k", "depth", "n_cells", "n_units", "n_sizes",
             "y_mean", "yy", "sum_y"),
    arrays=("x_mean",        # (k) column means of X (the centring)
            "xy",            # (k) X_c' y_c
            "xx",            # (k, k) X_c' X_c
            "sum_x",         # (k) 1' X_c (zero up to rounding; kept so the identity is exact)
            "level_start",   # (depth) first unit of each stored level, bottom level first
            "parent",        # (n_units) stored index of each unit's parent, -1 at the top
            "cell_n",        # (n_cells) rows per cell
            "cell_s",        # (n_cells) sum of y_c over the cell
            "cell_t",        # (n_cells, k) sum of X_c's rows over the cell
            "size_n",        # (n_sizes) distinct cluster sizes (D = 1)
            "size_m",        # (n_sizes) clusters of that size
            "size_s",        # (n_sizes) mean of their s_l
            "size_t",        # (n_sizes, k) mean of their t_l
            "size_q",        # (n_sizes) sum (s_l - mean)^2
            "size_r",        # (n_sizes, k) sum (s_l - mean)(t_l - mean)
            "size_tt"))      # (n_sizes, k, k) sum (t_l - mean)(t_l - mean)'
(_FP, _BROKEN, _N_OBS, _K, _DEPTH, _N_CELLS, _N_UNITS, _N_SIZES, _Y_MEAN, _YY, _SUM_Y,
 _X_MEAN, _XY, _XX, _SUM_X, _LEVEL_START, _PARENT, _CELL_N, _CELL_S, _CELL_T,
 _SIZE_N, _SIZE_M, _SIZE_S, _SIZE_T, _SIZE_Q, _SIZE_R, _SIZE_TT) = NESTED_LAYOUT.constants()
_SIZE_SLOT = NESTED_LAYOUT.size_slot
# A block packed under another layout is refused, and so is any block read by kernels whose
# cached constants came from another header convention of ``Layout`` (the indices are hashed too).
NESTED_FINGERPRINT = float(zlib.crc32(repr(
    ("nested", NESTED_LAYOUT.scalars, NESTED_LAYOUT.arrays, NESTED_LAYOUT.constants(),
     _SIZE_SLOT)).encode()))


def centred(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means by the corrected two-pass formula, and the centred values."""
    mean = values.mean(axis=0)
    mean = mean + (values - mean).mean(axis=0)
    return mean, values - mean


def check_response(y, X) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as a finite (N,) float array and ``X`` as a finite (N, k >= 1) one."""
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D array, got shape {y.shape}")
    if X.ndim != 2 or X.shape[0] != y.size or X.shape[1] < 1:
        raise ValueError(f"X must be ({y.size}, k >= 1), got shape {X.shape}")
    if not (np.isfinite(y).all() and np.isfinite(X).all()):
        raise ValueError("y and X must be finite: drop or impute rows with NaN/inf first")
    return y, X


def check_codes(codes, n: int, what: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each factor's codes compacted to 0..m-1, and its labels (any np.unique sorts)."""
    out, labels = [], []
    for i, c in enumerate(codes):
        c = np.asarray(c)
        if c.shape != (n,):
            raise ValueError(f"{what} {i} has shape {c.shape}; every factor needs one code per "
                             f"row ({n},)")
        uniq, inv = np.unique(c, return_inverse=True)
        out.append(inv.ravel().astype(np.int64))
        labels.append(uniq)
    if not out:
        raise ValueError(f"give at least one {what}")
    return out, labels


def nested_stats(y, X, codes_by_level: Sequence[np.ndarray], *,
                 names: Sequence[str] | None = None) -> NestedStats:
    """One vectorised pass over the rows: global cross-products, per-cell sums, parent pointers.

    Parameters
    ----------
    y : (N,) array
    X : (N, k) array, k >= 1 (usually with an intercept column)
    codes_by_level : list of (N,) arrays, top level first
        The bottom level's code identifies a cell; every unit must lie in one parent unit.
    names : factor names for messages (default ``level1``, ``level2``, ...)

    Raises
    ------
    ValueError
        On non-finite data, bad shapes, or a unit appearing under two parents (naming the factor).
    """
    y, X = check_response(y, X)
    codes, labels = check_codes(codes_by_level, y.size, "level")
    names = tuple(names) if names is not None else tuple(f"level{d + 1}" for d in range(len(codes)))
    if len(names) != len(codes):
        raise ValueError(f"{len(names)} names for {len(codes)} levels")
    sizes = tuple(int(c.max()) + 1 for c in codes)
    parents = [np.zeros(0, dtype=np.int64)]
    for d in range(1, len(codes)):
        child, par = codes[d], codes[d - 1]
        parent = np.full(sizes[d], -1, dtype=np.int64)
        parent[child] = par
        bad = np.flatnonzero(parent[child] != par)
        if bad.size:
            i = bad[0]
            rows = np.flatnonzero(child == child[i])
            j = rows[par[rows] != par[i]][0]
            unit, one, two = (labels[d][child[i]].item(), labels[d - 1][par[j]].item(),
                              labels[d - 1][par[i]].item())
            raise ValueError(
                f"factor '{names[d]}' is not nested in '{names[d - 1]}': its unit {unit!r} lies "
                f"in '{names[d - 1]}' units {one!r} and {two!r} (rows {min(i, j)} and "
                f"{max(i, j)}); give each '{names[d]}' unit a code unique across '{names[d - 1]}'")
        parents.append(parent)
    y_mean, yc = centred(y)
    x_mean, Xc = centred(X)
    cell = codes[-1]
    C = sizes[-1]
    cell_t = np.column_stack([np.bincount(cell, weights=Xc[:, j], minlength=C)
                              for j in range(X.shape[1])])
    return NestedStats(
        names=names, n_obs=int(y.size), y_mean=float(y_mean), x_mean=x_mean,
        yy=float(yc @ yc), xy=Xc.T @ yc, xx=Xc.T @ Xc, sum_y=float(yc.sum()), sum_x=Xc.sum(axis=0),
        level_sizes=sizes, parents=tuple(parents),
        cell_n=np.bincount(cell, minlength=C).astype(np.float64),
        cell_s=np.bincount(cell, weights=yc, minlength=C), cell_t=cell_t)


def size_groups(stats: NestedStats) -> dict[str, np.ndarray]:
    """D = 1: per distinct cluster size, the count and centred first and second moments."""
    k = stats.k
    if stats.depth != 1:
        z = np.zeros(0)
        return {"size_n": z, "size_m": z, "size_s": z, "size_t": z, "size_q": z, "size_r": z,
                "size_tt": z}
    sizes, inv, m = np.unique(stats.cell_n, return_inverse=True, return_counts=True)
    G = sizes.size
    m = m.astype(np.float64)
    st = np.column_stack([stats.cell_s, stats.cell_t])          # (C, 1 + k)
    mean = np.column_stack([np.bincount(inv, weights=st[:, j], minlength=G) for j in
                            range(k + 1)]) / m[:, None]
    dev = st - mean[inv]
    mean = mean + np.column_stack([np.bincount(inv, weights=dev[:, j], minlength=G) for j in
                                   range(k + 1)]) / m[:, None]  # corrected two-pass
    dev = st - mean[inv]
    cross = np.empty((G, k + 1, k + 1))
    for i in range(k + 1):
        for j in range(i, k + 1):
            cross[:, i, j] = cross[:, j, i] = np.bincount(inv, weights=dev[:, i] * dev[:, j],
                                                          minlength=G)
    return {"size_n": sizes, "size_m": m, "size_s": mean[:, 0], "size_t": mean[:, 1:],
            "size_q": cross[:, 0, 0], "size_r": cross[:, 0, 1:], "size_tt": cross[:, 1:, 1:]}


def pack_nested(stats: NestedStats, *, broken: bool = False) -> np.ndarray:
    """Pack the contiguous float64 block the nested kernels read (:data:`NESTED_LAYOUT`).

    ``broken=True`` packs the deliberately wrong model (tau instead of tau^2), for tests only.
    """
    k, D = stats.k, stats.depth
    stored = stats.level_sizes[::-1]                         # bottom level first
    start = np.concatenate([[0], np.cumsum(stored)[:-1]]).astype(np.int64)
    n_units = int(np.sum(stored))
    parent = np.full(n_units, -1.0)
    for d in range(1, D):                                    # level d lies at stored D-1-d
        parent[start[D - 1 - d]:start[D - 1 - d] + stored[D - 1 - d]] = (
            start[D - d] + stats.parents[d])
    groups = size_groups(stats)
    scalars = {"fingerprint": NESTED_FINGERPRINT, "broken": float(broken),
               "n_obs": stats.n_obs, "k": k, "depth": D, "n_cells": stats.cell_n.size,
               "n_units": n_units, "n_sizes": groups["size_n"].size, "y_mean": stats.y_mean,
               "yy": stats.yy, "sum_y": stats.sum_y}
    arrays = {"x_mean": stats.x_mean, "xy": stats.xy, "xx": stats.xx, "sum_x": stats.sum_x,
              "level_start": start, "parent": parent, "cell_n": stats.cell_n,
              "cell_s": stats.cell_s, "cell_t": stats.cell_t, **groups}
    C, G = stats.cell_n.size, groups["size_n"].size
    expected = {"x_mean": k, "xy": k, "xx": k * k, "sum_x": k, "level_start": D,
                "parent": n_units, "cell_n": C, "cell_s": C, "cell_t": C * k, "size_n": G,
                "size_m": G, "size_s": G, "size_t": G * k, "size_q": G, "size_r": G * k,
                "size_tt": G * k * k}
    for name, size in expected.items():
        if np.size(arrays[name]) != size:
            raise ValueError(f"array '{name}' has {np.size(arrays[name])} values, expected {size}")
    return NESTED_LAYOUT.pack(scalars, arrays)


def nested_work_size(block: np.ndarray) -> int:
    """Length of the scratch array :func:`nested_loglik_grad_work` needs (2 per unit)."""
    return 2 * int(block[_N_UNITS])


# ------------------------------------------------------------------------ compiled code
# Module-level functions only (numba caches those); error_model="numpy": a zero or negative
# variance gives inf/nan, never a Python exception inside a C callback.
@numba.njit(cache=True, error_model="numpy")
def _global_part(beta, s2, block, g_beta):
    """-N/2 log(2 pi s2) - RSS/(2 s2); writes its beta-gradient into g_beta.

    RSS = sum (delta + y_c - X_c beta)^2 with delta = ybar - xbar'beta, from centred sums.
    Returns (value, d/ds2, delta).
    """
    k = int(block[_K])
    N = block[_N_OBS]
    xm, xy, xx, sx = int(block[_X_MEAN]), int(block[_XY]), int(block[_XX]), int(block[_SUM_X])
    delta = block[_Y_MEAN]
    e1 = block[_SUM_Y]                                    # 1'(y_c - X_c beta)
    quad = block[_YY]                                     # |y_c - X_c beta|^2
    for j in range(k):
        delta -= block[xm + j] * beta[j]
        e1 -= block[sx + j] * beta[j]
        xxb = 0.0
        for i in range(k):
            xxb += block[xx + j * k + i] * beta[i]
        quad += beta[j] * (xxb - 2.0 * block[xy + j])
        g_beta[j] = xxb - block[xy + j]                   # d quad / d beta_j / 2
    rss = N * delta * delta + 2.0 * delta * e1 + quad
    for j in range(k):
        # d RSS/d beta_j / 2 = -xbar_j (N delta + e1) - delta sum_x_j + (X_c'X_c beta - X_c'y_c)_j
        d = -block[xm + j] * (N * delta + e1) - delta * block[sx + j] + g_beta[j]
        g_beta[j] = -d / s2
    value = -0.5 * N * (LOG_2PI + math.log(s2)) - 0.5 * rss / s2
    return value, -0.5 * N / s2 + 0.5 * rss / (s2 * s2), delta


@numba.njit(cache=True, error_model="numpy")
def _variance(tau2, d, broken):
    return math.sqrt(tau2[d]) if broken else tau2[d]


@numba.njit(cache=True, error_model="numpy")
def nested_loglik_grad_work(beta, tau2, s2, block, work, g_beta, g_tau2):
    """Log-likelihood at (beta, tau2 top level first, s2); gradient written into g_beta, g_tau2.

    ``work``: scratch of :func:`nested_work_size` floats (nothing is allocated).
    Returns (value, d/ds2); (nan, nan) for a block of another layout.
    """
    if block[_FP] != NESTED_FINGERPRINT or block[_SIZE_SLOT] != block.size:
        return math.nan, math.nan
    k, D = int(block[_K]), int(block[_DEPTH])
    C, U = int(block[_N_CELLS]), int(block[_N_UNITS])
    broken = block[_BROKEN] != 0.0
    o_n, o_s, o_t = int(block[_CELL_N]), int(block[_CELL_S]), int(block[_CELL_T])
    o_par, o_lev, o_xm = int(block[_PARENT]), int(block[_LEVEL_START]), int(block[_X_MEAN])
    value, g_s2, delta = _global_part(beta, s2, block, g_beta)
    A = work[:U]
    B = work[U:2 * U]
    # forward: cells from their rows (A = n_c/s2, B = S_c/s2), then unit by unit, bottom-up
    for c in range(C):
        n = block[o_n + c]
        S = n * delta + block[o_s + c]
        for j in range(k):
            S -= block[o_t + c * k + j] * beta[j]
        A[c] = n / s2
        B[c] = S / s2
    for u in range(C, U):
        A[u] = 0.0
        B[u] = 0.0
    # sum of log g as the log of a running product (one log per call, not one per unit: 10x
    # cheaper), its binary exponent split off by frexp before it can overflow
    prod, expo = 1.0, 0
    for lev in range(D):                                  # stored level: 0 = bottom
        lo = int(block[o_lev + lev])
        hi = int(block[o_lev + lev + 1]) if lev + 1 < D else U
        t = _variance(tau2, D - 1 - lev, broken)
        for u in range(lo, hi):
            a, b = A[u], B[u]
            g = 1.0 + t * a
            if not g > 0.0:                               # not a covariance: no density
                return math.nan, math.nan
            prod *= g
            if not 1e-150 < prod < 1e150:
                prod, e = math.frexp(prod)
                expo += e
            # matrix determinant lemma and Sherman-Morrison for this unit's rank-one term
            ig = 1.0 / g
            value += 0.5 * t * b * b * ig
            p = int(block[o_par + u])
            if p >= 0:
                A[p] += a * ig
                B[p] += b * ig
    value -= 0.5 * (math.log(prod) + expo * LOG_2)
    # backward, top-down: A[u], B[u] are overwritten by their adjoints once u is done, so a child
    # reads its parent's (abar, bbar) at the parent's slot
    w = 0.0
    for lev in range(D - 1, -1, -1):
        lo = int(block[o_lev + lev])
        hi = int(block[o_lev + lev + 1]) if lev + 1 < D else U
        t = _variance(tau2, D - 1 - lev, broken)
        dt = 0.0
        for u in range(lo, hi):
            p = int(block[o_par + u])
            abar = A[p] if p >= 0 else 0.0
            bbar = B[p] if p >= 0 else 0.0
            a, b = A[u], B[u]
            ig = 1.0 / (1.0 + t * a)
            ig2 = ig * ig
            dA = -0.5 * t * ig - 0.5 * t * t * b * b * ig2 + (abar - bbar * t * b) * ig2
            dB = (t * b + bbar) * ig
            dt += -0.5 * a * ig + (0.5 * b * b - abar * a * a - bbar * a * b) * ig2
            if lev == 0:                                  # a cell: A = n/s2, B = S(beta)/s2
                g_s2 -= (dA * a + dB * b) / s2
                w += dB * block[o_n + u]
                for j in range(k):
                    g_beta[j] -= dB * block[o_t + u * k + j] / s2
            else:
                A[u] = dA
                B[u] = dB
        g_tau2[D - 1 - lev] = dt
    for j in range(k):                                    # dS_c/dbeta = -n_c xbar - t_c
        g_beta[j] -= w * block[o_xm + j] / s2
    return value, g_s2


@numba.njit(cache=True, error_model="numpy")
def nested_loglik_grad(beta, tau2, s2, block, g_beta, g_tau2):
    """:func:`nested_loglik_grad_work` with its scratch allocated here."""
    work = np.empty(2 * int(block[_N_UNITS]))
    return nested_loglik_grad_work(beta, tau2, s2, block, work, g_beta, g_tau2)


@numba.njit(cache=True, error_model="numpy")
def nested_loglik_grad_fast(beta, tau2, s2, block, g_beta, g_tau2):
    """D = 1 only: the same log-likelihood and gradient, grouped by cluster size.

    For the m clusters of size n, with v = s2 + n tau^2 and W = sum_l S_l(beta)^2
    = m c^2 + Q - 2 beta'R + beta'T beta (c the mean S_l; Q, R, T centred within the size),
    the clusters contribute -m/2 log(v/s2) + tau^2 W / (2 s2 v). O(sizes x k^2).
    Returns (value, d/ds2); (nan, nan) for another layout or D != 1.
    """
    if (block[_FP] != NESTED_FINGERPRINT or block[_SIZE_SLOT] != block.size
            or int(block[_DEPTH]) != 1):
        return math.nan, math.nan
    k, G = int(block[_K]), int(block[_N_SIZES])
    o_n, o_m, o_s, o_t = (int(block[_SIZE_N]), int(block[_SIZE_M]), int(block[_SIZE_S]),
                          int(block[_SIZE_T]))
    o_q, o_r, o_tt, o_xm = (int(block[_SIZE_Q]), int(block[_SIZE_R]), int(block[_SIZE_TT]),
                            int(block[_X_MEAN]))
    value, g_s2, delta = _global_part(beta, s2, block, g_beta)
    t = _variance(tau2, 0, block[_BROKEN] != 0.0)
    dt = 0.0
    for q in range(G):
        n, m = block[o_n + q], block[o_m + q]
        c = n * delta + block[o_s + q]
        W = block[o_q + q]
        for j in range(k):
            c -= block[o_t + q * k + j] * beta[j]
            tb = 0.0
            for i in range(k):
                tb += block[o_tt + (q * k + j) * k + i] * beta[i]
            W += beta[j] * (tb - 2.0 * block[o_r + q * k + j])
        W += m * c * c
        v = s2 + n * t
        value += -0.5 * m * math.log1p(n * t / s2) + 0.5 * t * W / (s2 * v)
        dt += -0.5 * m * n / v + 0.5 * W / (v * v)
        g_s2 += (0.5 * m * (1.0 / s2 - 1.0 / v)
                 - 0.5 * t * W * (2.0 * s2 + n * t) / (s2 * s2 * v * v))
        h = t / (s2 * v)                                  # d value / d W, times 2
        for j in range(k):
            tb = 0.0
            for i in range(k):
                tb += block[o_tt + (q * k + j) * k + i] * beta[i]
            # dW/dbeta_j / 2 = -m c (n xbar_j + tbar_j) - R_j + (T beta)_j
            g_beta[j] += h * (-m * c * (n * block[o_xm + j] + block[o_t + q * k + j])
                              - block[o_r + q * k + j] + tb)
    g_tau2[0] = dt
    return value, g_s2


def nested_loglik(beta, tau2, sigma2: float, block: np.ndarray, *, fast: bool | None = None
                  ) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Log-likelihood and gradient (value, d/dbeta, d/dtau2, d/dsigma2) from a packed block.

    ``tau2``: the D variances, top level first. ``fast``: the size-grouped kernel (D = 1 only);
    default: fast iff D = 1.
    """
    block = np.ascontiguousarray(block, dtype=np.float64)
    if block.size < NESTED_LAYOUT.header or block[_FP] != NESTED_FINGERPRINT:
        raise ValueError("not a nested block: pack it with pack_nested")
    k, D = int(block[_K]), int(block[_DEPTH])
    beta = np.ascontiguousarray(beta, dtype=np.float64).ravel()
    tau2 = np.ascontiguousarray(tau2, dtype=np.float64).ravel()
    if beta.size != k or tau2.size != D:
        raise ValueError(f"need beta of size {k} and tau2 of size {D}, got {beta.size}, "
                         f"{tau2.size}")
    fast = D == 1 if fast is None else fast
    if fast and D != 1:
        raise ValueError("the size-grouped kernel needs a single factor (D = 1)")
    g_beta, g_tau2 = np.empty(k), np.empty(D)
    kernel = nested_loglik_grad_fast if fast else nested_loglik_grad
    value, g_s2 = kernel(beta, tau2, float(sigma2), block, g_beta, g_tau2)
    return float(value), g_beta, g_tau2, float(g_s2)
