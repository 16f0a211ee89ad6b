r"""Exact log-likelihood and gradient of balanced crossed random-intercept models, by ANOVA strata.

Factors F (levels m_f), every combination of levels present exactly n >= 1 times; random terms
T, subsets of F (``(1|a) + (1|b) + (1|a:b)`` is T in {{a}, {b}, {a, b}}):

.. math::
    y = X\beta + \sum_T Z_T u_T + e, \quad u_T \sim N(0, \tau_T^2 I), \quad e \sim N(0, \sigma^2 I).

With C_m = I - J/m, P_m = J/m, rows ordered by level combination then replicate,
Z_T Z_T' = n prod_{f not in T} m_f sum_{S subset T} P_S, where for every subset S of F

.. math::
    P_S = \bigotimes_{f \in S} C_{m_f} \otimes \bigotimes_{f \notin S} P_{m_f} \otimes P_n

are orthogonal projections (dimension prod_{f in S} (m_f - 1)), which with the within-cell
projection (dimension N - prod m_f) sum to I. So Cov(y) has these fixed eigenspaces, with
eigenvalues lambda_S = sigma^2 + sum_{T contains S} n prod_{f not in T} m_f tau_T^2 (sigma^2
within cells), and

.. math::
    \log L = -\tfrac N2 \log 2\pi
    - \tfrac12 \sum_S \Bigl[\dim_S \log\lambda_S + \frac{\lVert P_S (y - X\beta)\rVert^2}{\lambda_S}
    \Bigr],

where ||P_S r||^2 = y'P_S y - 2 beta'X'P_S y + beta'X'P_S X beta: per-stratum cross-products are
sufficient, and an evaluation with its gradient costs O(2^|F| k^2). As in
:mod:`models.compiled.lmm_nested`, y and X are centred first; the grand-mean stratum (S empty,
P_S 1 = 1) is written N (delta + mean(y_c) - mean(X_c)'beta)^2 with delta = ybar - xbar'beta, and
every other stratum annihilates constants, so no sum of squares of large numbers is formed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numba
import numpy as np

from varcomp.models.cells import StrataStats
from varcomp.models.compiled.layout import Layout
from varcomp.models.compiled.lmm_nested import centred, check_codes, check_response

__all__ = ["STRATA_LAYOUT", "StrataStats", "pack_strata", "strata_loglik", "strata_loglik_grad",
           "strata_stats"]

LOG_2PI = math.log(2.0 * math.pi)

# The one layout of a strata block. Stratum 0 is the grand mean (S empty; its cross-products are
# unused, the kernel writes it from the means), then the other subsets S of F by bit mask, then the
# within-cell stratum. ``broken`` = 1 is a test hook: tau instead of tau^2 in lambda_S.
STRATA_LAYOUT = Layout(
    scalars=("fingerprint", "broken", "n_obs", "k", "n_terms", "n_strata", "y_mean", "ybar_c"),
    arrays=("x_mean",        # (k) column means of X (the centring)
            "xbar_c",        # (k) mean of X_c (zero up to rounding)
            "dim",           # (n_strata) dimension of each stratum
            "coef",          # (n_strata, n_terms) d lambda_S / d tau_T^2
            "yy",            # (n_strata) y_c' P_S y_c
            "xy",            # (n_strata, k) X_c' P_S y_c
            "xx"))           # (n_strata, k, k) X_c' P_S X_c
(_FP, _BROKEN, _N_OBS, _K, _N_TERMS, _N_STRATA, _Y_MEAN, _YBAR_C,
 _X_MEAN, _XBAR_C, _DIM, _COEF, _YY, _XY, _XX) = STRATA_LAYOUT.constants()
_SIZE_SLOT = STRATA_LAYOUT.size_slot
# Refuses blocks of another layout, and kernels cached under another ``Layout`` convention.
STRATA_FINGERPRINT = float(zlib.crc32(repr(
    ("strata", STRATA_LAYOUT.scalars, STRATA_LAYOUT.arrays, STRATA_LAYOUT.constants(),
     _SIZE_SLOT)).encode()))


def _term_indices(terms, names: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """Terms as sorted tuples of factor indices (given as indices or names)."""
    out = []
    for term in terms:
        term = (term,) if isinstance(term, str | int | np.integer) else tuple(term)
        idx = tuple(sorted({names.index(f) if isinstance(f, str) else int(f) for f in term}))
        if not idx or idx[0] < 0 or idx[-1] >= len(names):
            raise ValueError(f"term {term!r} must be a non-empty set of the factors {names}")
        out.append(idx)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"terms {list(terms)!r} must be distinct and at least one")
    return tuple(out)


def strata_stats(y, X, codes_by_factor: Sequence[np.ndarray], terms, *,
                 names: Sequence[str] | None = None) -> StrataStats:
    """Per-stratum cross-products of [y_c, X_c], from one vectorised pass.

    Parameters
    ----------
    y : (N,) array
    X : (N, k) array, k >= 1
    codes_by_factor : list of (N,) arrays, one per crossed factor
    terms : random terms, each a factor index or name, or a tuple of them (an interaction)
    names : factor names (default ``a``, ``b``, ...)

    Raises
    ------
    ValueError
        If the design is unbalanced (a combination of levels missing or present more often than
        another), or on bad data or terms.
    """
    y, X = check_response(y, X)
    codes, labels = check_codes(codes_by_factor, y.size, "factor")
    p = len(codes)
    names = tuple(names) if names is not None else tuple("abcdefghijklmnopqrstuvwxyz"[:p])
    if len(names) != p:
        raise ValueError(f"{len(names)} names for {p} factors")
    term_idx = _term_indices(terms, names)
    levels = tuple(int(c.max()) + 1 for c in codes)
    cell = np.ravel_multi_index(codes, levels)
    count = np.bincount(cell, minlength=math.prod(levels))
    n = int(count[0])
    if count.min() != count.max():
        worst = np.unravel_index(int(np.argmin(count)), levels)
        where = ", ".join(f"{names[f]}={labels[f][worst[f]].item()!r}" for f in range(p))
        raise ValueError(
            f"the design is unbalanced: every combination of {', '.join(names)} must appear "
            f"equally often, but counts range from {count.min()} to {count.max()} ({where} has "
            f"{count.min()}); use the nested or a general kernel for unbalanced data")
    y_mean, yc = centred(y)
    x_mean, Xc = centred(X)
    z = np.column_stack([yc, Xc])
    c = z.shape[1]
    Z = z[np.argsort(cell, kind="stable")].reshape(*levels, n, c)
    M = Z.mean(axis=p)                                    # cell means, (*levels, c)
    within = (Z - M[..., None, :]).reshape(-1, c)
    grams, strata, dims = [], [], []
    for mask in range(2 ** p):
        S = tuple(f for f in range(p) if mask >> f & 1)
        R = M
        for f in range(p):                                # P_S: average off S, centre along S
            R = R - R.mean(axis=f, keepdims=True) if f in S else R.mean(axis=f, keepdims=True)
        weight = n * math.prod(levels[f] for f in range(p) if f not in S)
        R = R.reshape(-1, c)
        grams.append(weight * (R.T @ R))
        strata.append(S)
        dims.append(math.prod(levels[f] - 1 for f in S))
    grams.append(within.T @ within)
    strata.append(None)
    dims.append(y.size - math.prod(levels))
    coef = np.zeros((len(strata), len(term_idx)))
    for s, S in enumerate(strata[:-1]):
        for t, T in enumerate(term_idx):
            if set(S) <= set(T):
                coef[s, t] = n * math.prod(levels[f] for f in range(p) if f not in T)
    G = np.asarray(grams)
    return StrataStats(
        names=names, levels=levels, n_rep=n, terms=term_idx, n_obs=int(y.size),
        y_mean=float(y_mean), x_mean=x_mean, ybar_c=float(yc.mean()), xbar_c=Xc.mean(axis=0),
        strata=tuple(strata), dim=np.asarray(dims, dtype=np.float64), coef=coef,
        yy=G[:, 0, 0].copy(), xy=G[:, 1:, 0].copy(), xx=G[:, 1:, 1:].copy())


def pack_strata(stats: StrataStats, *, broken: bool = False) -> np.ndarray:
    """Pack the contiguous float64 block :func:`strata_loglik_grad` reads (:data:`STRATA_LAYOUT`).

    ``broken=True`` packs the deliberately wrong model (tau instead of tau^2), for tests only.
    """
    k, ns, nt = stats.k, stats.dim.size, len(stats.terms)
    scalars = {"fingerprint": STRATA_FINGERPRINT, "broken": float(broken), "n_obs": stats.n_obs,
               "k": k, "n_terms": nt, "n_strata": ns, "y_mean": stats.y_mean,
               "ybar_c": stats.ybar_c}
    arrays = {"x_mean": stats.x_mean, "xbar_c": stats.xbar_c, "dim": stats.dim,
              "coef": stats.coef, "yy": stats.yy, "xy": stats.xy, "xx": stats.xx}
    expected = {"x_mean": k, "xbar_c": k, "dim": ns, "coef": ns * nt, "yy": ns, "xy": ns * k,
                "xx": ns * k * k}
    for name, size in expected.items():
        if np.size(arrays[name]) != size:
            raise ValueError(f"array '{name}' has {np.size(arrays[name])} values, expected {size}")
    return STRATA_LAYOUT.pack(scalars, arrays)


# ------------------------------------------------------------------------ compiled code
@numba.njit(cache=True, error_model="numpy")
def strata_loglik_grad(beta, tau2, s2, block, g_beta, g_tau2):
    """Log-likelihood at (beta, tau2 in the order of the terms, s2); gradient into g_beta, g_tau2.

    Allocates nothing. Returns (value, d/ds2); (nan, nan) for a block of another layout.
    """
    if block[_FP] != STRATA_FINGERPRINT or block[_SIZE_SLOT] != block.size:
        return math.nan, math.nan
    k, nt, ns = int(block[_K]), int(block[_N_TERMS]), int(block[_N_STRATA])
    N = block[_N_OBS]
    broken = block[_BROKEN] != 0.0
    o_xm, o_xc, o_dim, o_coef = (int(block[_X_MEAN]), int(block[_XBAR_C]), int(block[_DIM]),
                                 int(block[_COEF]))
    o_yy, o_xy, o_xx = int(block[_YY]), int(block[_XY]), int(block[_XX])
    for j in range(k):
        g_beta[j] = 0.0
    for t in range(nt):
        g_tau2[t] = 0.0
    # grand mean of the residual: delta + mean(y_c) - mean(X_c)'beta, delta = ybar - xbar'beta
    e = block[_Y_MEAN] + block[_YBAR_C]
    for j in range(k):
        e -= (block[o_xm + j] + block[o_xc + j]) * beta[j]
    value = -0.5 * N * LOG_2PI
    g_s2 = 0.0
    for s in range(ns):
        dim = block[o_dim + s]
        if dim == 0.0:
            continue
        lam = s2
        for t in range(nt):
            c = block[o_coef + s * nt + t]
            lam += c * (math.sqrt(tau2[t]) if broken else tau2[t])
        if s == 0:
            Q = N * e * e
            for j in range(k):                            # -1/2 dQ/dbeta_j / lam
                g_beta[j] += N * e * (block[o_xm + j] + block[o_xc + j]) / lam
        else:
            Q = block[o_yy + s]
            for j in range(k):
                xxb = 0.0
                for i in range(k):
                    xxb += block[o_xx + (s * k + j) * k + i] * beta[i]
                xy = block[o_xy + s * k + j]
                Q += beta[j] * (xxb - 2.0 * xy)
                g_beta[j] += (xy - xxb) / lam
        value -= 0.5 * (dim * math.log(lam) + Q / lam)
        dlam = -0.5 * (dim / lam - Q / (lam * lam))
        g_s2 += dlam
        for t in range(nt):
            g_tau2[t] += block[o_coef + s * nt + t] * dlam
    return value, g_s2


def strata_loglik(beta, tau2, sigma2: float, block: np.ndarray
                  ) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Log-likelihood and gradient (value, d/dbeta, d/dtau2, d/dsigma2) from a packed block."""
    block = np.ascontiguousarray(block, dtype=np.float64)
    if block.size < STRATA_LAYOUT.header or block[_FP] != STRATA_FINGERPRINT:
        raise ValueError("not a strata block: pack it with pack_strata")
    k, nt = int(block[_K]), int(block[_N_TERMS])
    beta = np.ascontiguousarray(beta, dtype=np.float64).ravel()
    tau2 = np.ascontiguousarray(tau2, dtype=np.float64).ravel()
    if beta.size != k or tau2.size != nt:
        raise ValueError(f"need beta of size {k} and tau2 of size {nt} (one per term), got "
                         f"{beta.size}, {tau2.size}")
    g_beta, g_tau2 = np.empty(k), np.empty(nt)
    value, g_s2 = strata_loglik_grad(beta, tau2, float(sigma2), block, g_beta, g_tau2)
    return float(value), g_beta, g_tau2, float(g_s2)
