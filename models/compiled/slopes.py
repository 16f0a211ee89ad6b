r"""The random-slopes ``sufficient`` posterior as cached machine code (numba, analytic gradient).

The posterior of :func:`models.forms.slopes.build_sufficient` (priors :class:`SlopesPriors`)
from the per-cluster cross-products of :mod:`models.slopes_stats`: per cluster Z_l'Z_l, Z_l'X_l,
Z_l'y_l; globally X'X, X'y, y'y, n. Per gradient O(L q^3), whatever the rows.

Unconstrained coordinates z (n_dim = k + q + 1 + P), in this order:

- beta as :meth:`LmmPriors.create_beta` parameterises it: (alpha - mean y) / sd(y) at the
  intercept's position (alpha the intercept at the covariates' means), beta_j sd(x_j) / sd(y)
  for every other column;
- log(tau_c / s_c) per coefficient (s_c its prior's scale);
- log(sigma / sd(y));
- the correlations' canonical partial correlations (CPCs) through tanh, block by block, within a
  block of n coefficients row by row over the strictly lower triangle (i, m), m < i.

Decision: the CPCs (Stan's ``cholesky_corr`` transform), not PyMC's elementwise interval
transform of LKJCorr's upper triangle: every point of R^P is a positive-definite R (the interval
transform leaves non-positive-definite points for q >= 3), and V's Cholesky factor comes out
directly (no Cholesky of R, no determinant, hence no singular inverse near rho = +-1). The
density in these coordinates is the same posterior: with w = tanh(z) and
l_im = log(1 - w_im^2), the LKJ(eta) density and every Jacobian (z -> w, w -> the Cholesky
factor L of R, L -> R's triangle) sum to sum_{i > m} (eta - 1 + (n - m) / 2) l_im, and
L_im = w_im prod_{m' < m} sqrt(1 - w_im'^2), L_ii = prod_{m < i} sqrt(1 - w_im^2). The LKJ
constant is the correct one (:func:`models.priors.lkj_log_norm`, subtracted).

Likelihood (lme4's Woodbury form, as :func:`models.forms.slopes.woodbury_loglik_pt`): Lambda =
chol(V) / sigma, A_l = Lambda' G_l Lambda + I (G_l = Z_l'Z_l), d_l = Z_l'y_l - Z_l'X_l beta,
c_l = Lambda' d_l, v_l = A_l^-1 c_l, r'r = y'y - 2 beta'X'y + beta'X'X beta;
log L = -1/2 [N log(2 pi sigma^2) + sum log|A_l| + (r'r - sum c_l'v_l) / sigma^2]. Gradient:
d/dLambda = sum_l [d_l v_l' / s2 - G_l Lambda (A_l^-1 + v_l v_l' / s2)],
d/dbeta = (X'y - X'X beta - sum_l Z_l'X_l' Lambda v_l) / s2,
d/ds2 (Lambda fixed) = -N / (2 s2) + (r'r - sum c_l'v_l) / (2 s2^2). A_l >= I: always
positive definite, whatever V.

``tests/test_compiled_slopes.py`` holds the density to PyMC's (one constant apart) and the
gradient to central differences.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from varcomp.models.compiled.layout import Layout as BlockLayout
from varcomp.models.compiled.nutpie import EXPAND_SIGNATURE, LOGP_SIGNATURE, logp_status
from varcomp.models.compiled.oneway import FAMILY_CODE, prior_const
from varcomp.models.density import LOG_2PI
from varcomp.models.priors import lkj_log_norm

__all__ = ["LAYOUT", "compile_sufficient", "expand", "logp_and_grad", "n_dim",
           "parameter_block", "supported", "to_unconstrained"]

LAYOUT = BlockLayout(
    scalars=("k", "q", "L", "N", "P", "n_blocks", "intercept", "center", "scale", "log_scale",
             "eta", "tau_family", "tau_nu", "sigma_family", "sigma_scale", "sigma_nu", "yty",
             "const", "n_expanded"),
    arrays=("x_mean", "x_scale", "loc", "prior_scale", "tau_scale", "block_size", "XtX", "Xty",
            "ZtZ", "ZtX", "Zty"))
(_K, _Q, _L, _N, _P, _NB, _I0, _CENTER, _SCALE, _LOGSCALE, _ETA, _FT, _NUT, _FS, _SS, _NUS,
 _YTY, _CONST, _NEXP, _O_XMEAN, _O_XSCALE, _O_LOC, _O_PSCALE, _O_TSCALE, _O_BSIZE, _O_XTX,
 _O_XTY, _O_ZTZ, _O_ZTX, _O_ZTY) = LAYOUT.constants()
HEADER = LAYOUT.header
_SIZE = LAYOUT.size_slot
_LOG2 = math.log(2.0)


def supported(priors) -> bool:
    """Whether the compiled density covers ``priors`` (every family of the CLI does)."""
    return all(p.family in FAMILY_CODE for p in (*priors.tau, priors.fixed.sigma))


def n_pairs(priors) -> int:
    """Number of correlation coordinates (P)."""
    return len(priors.layout.pairs)


def n_dim(priors) -> int:
    """Number of unconstrained coordinates: k + q + 1 + P."""
    return len(priors.fixed.terms) + priors.layout.q + 1 + n_pairs(priors)


def parameter_block(priors, stats) -> np.ndarray:
    """The float64 block (:data:`LAYOUT`): priors, coordinates, constants and the statistics."""
    f, lay = priors.fixed, priors.layout
    k, q = len(f.terms), lay.q
    if stats.q != q or stats.k != k:
        raise ValueError(f"statistics of (q, k) = {(stats.q, stats.k)} for a model of {(q, k)}")
    sizes = [len(b) for b in lay.blocks]
    if [i for b in lay.blocks for i in b] != list(range(q)):
        raise ValueError("the random-effects blocks must be contiguous, in column order")
    i0 = f.intercept_index
    x_mean, x_scale, loc, pscale = np.zeros(k), np.ones(k), np.zeros(k), np.ones(k)
    for j, p, m, s in zip(f.slope_index, f.slopes, f.x_mean, f.x_scale, strict=True):
        x_mean[j], x_scale[j], loc[j], pscale[j] = m, s, p.loc, p.scale
    if i0 is not None:
        loc[i0], pscale[i0] = f.intercept.loc, f.intercept.scale
    log_scale = math.log(f.scale)
    tau_scale = np.array([p.scale for p in priors.tau])
    # constants: the normal priors, the scale priors, the Jacobians' constants, the LKJ's
    jac_beta = sum(log_scale - math.log(x_scale[j]) for j in f.slope_index)
    if i0 is not None:
        jac_beta += log_scale
    const = (-0.5 * k * LOG_2PI - float(np.sum(np.log(pscale))) + jac_beta
             + sum(prior_const(p) + math.log(p.scale) for p in priors.tau)
             + prior_const(f.sigma) + log_scale
             - sum(lkj_log_norm(n, priors.eta) for n in sizes if n > 1))
    P = n_pairs(priors)
    scalars = {"k": k, "q": q, "L": stats.L, "N": stats.n, "P": P, "n_blocks": len(sizes),
               "intercept": -1 if i0 is None else i0, "center": f.center, "scale": f.scale,
               "log_scale": log_scale, "eta": priors.eta,
               "tau_family": FAMILY_CODE[priors.tau[0].family], "tau_nu": priors.tau[0].nu,
               "sigma_family": FAMILY_CODE[f.sigma.family], "sigma_scale": f.sigma.scale,
               "sigma_nu": f.sigma.nu, "yty": stats.yty, "const": const,
               "n_expanded": k + q + P + 1}
    arrays = {"x_mean": x_mean, "x_scale": x_scale, "loc": loc, "prior_scale": pscale,
              "tau_scale": tau_scale, "block_size": np.array(sizes, dtype=np.float64),
              "XtX": stats.XtX, "Xty": stats.Xty, "ZtZ": stats.ZtZ, "ZtX": stats.ZtX,
              "Zty": stats.Zty}
    return LAYOUT.pack(scalars, arrays)


# ------------------------------------------------------------------------ compiled code
# A copy of models.compiled.oneway._scale_prior on purpose: numba's cache does not invalidate a
# cached function when a helper it calls from another module changes.
@numba.njit(cache=True, error_model="numpy")
def _scale_prior(code, s, nu, x):
    """Log density (without its constant) of a scale prior at x, and its x-derivative."""
    if code == 0.0:
        return -0.5 * (x / s) ** 2, -x / (s * s)
    if code == 1.0:
        return (-0.5 * (nu + 1.0) * math.log1p((x / s) ** 2 / nu),
                -(nu + 1.0) * x / (nu * s * s + x * x))
    if code == 2.0:
        return -math.log1p((x / s) ** 2), -2.0 * x / (s * s + x * x)
    return -x / s, -1.0 / s


@numba.njit(cache=True, error_model="numpy")
def _log_sech2(x):
    """log(1 - tanh(x)^2), without cancellation at large |x|."""
    a = abs(x)
    return 2.0 * (_LOG2 - a - math.log1p(math.exp(-2.0 * a)))


@numba.njit(cache=True, error_model="numpy")
def _beta(z, b, beta):
    """Fill beta (X's column order) from the sampler's coordinates; returns alpha (or 0)."""
    k, i0 = int(b[_K]), int(b[_I0])
    scale = b[_SCALE]
    o_m, o_s = int(b[_O_XMEAN]), int(b[_O_XSCALE])
    shift = 0.0
    for j in range(k):
        if j != i0:
            beta[j] = z[j] * scale / b[o_s + j]
            shift += beta[j] * b[o_m + j]
    alpha = 0.0
    if i0 >= 0:
        alpha = b[_CENTER] + scale * z[i0]
        beta[i0] = alpha - shift
    return alpha


@numba.njit(cache=True, error_model="numpy")
def _corr_chol(zc, b, Lr):
    """Lr (q, q): the lower Cholesky factor of the block-diagonal R from the CPCs ``zc``.

    Returns the LKJ log density (without its constant) plus every log Jacobian (the module).
    """
    o_b, nb = int(b[_O_BSIZE]), int(b[_NB])
    eta = b[_ETA]
    Lr[:, :] = 0.0
    value = 0.0
    at, p = 0, 0
    for blk in range(nb):
        n = int(b[o_b + blk])
        for i in range(n):
            log_rest = 0.0
            for m in range(i):
                x = zc[p + i * (i - 1) // 2 + m]
                ell = _log_sech2(x)
                Lr[at + i, at + m] = math.tanh(x) * math.exp(log_rest)
                log_rest += 0.5 * ell
                value += (eta - 1.0 + 0.5 * (n - m)) * ell
            Lr[at + i, at + i] = math.exp(log_rest)
        at += n
        p += n * (n - 1) // 2
    return value


@numba.njit(cache=True, error_model="numpy")
def _corr_grad(zc, b, Lr, gL, gz):
    """Add to gz the d/dzc of (sum gL * Lr + :func:`_corr_chol`'s value), by reverse mode."""
    o_b, nb = int(b[_O_BSIZE]), int(b[_NB])
    eta = b[_ETA]
    at, p = 0, 0
    for blk in range(nb):
        n = int(b[o_b + blk])
        for i in range(1, n):
            # acc: sum over j in (m, i] of gL[i, j] L[i, j] (entries scaled by sqrt(1 - w_im^2))
            acc = gL[at + i, at + i] * Lr[at + i, at + i]
            for m in range(i - 1, -1, -1):
                idx = p + i * (i - 1) // 2 + m
                w = math.tanh(zc[idx])
                log_rest = 0.0  # log prod_{m' < m} sqrt(1 - w_im'^2) = log(L[i, m] / w)
                for mm in range(m):
                    log_rest += 0.5 * _log_sech2(zc[p + i * (i - 1) // 2 + mm])
                rest = math.exp(log_rest)
                gz[idx] += (gL[at + i, at + m] * (1.0 - w * w) * rest - w * acc
                            - 2.0 * w * (eta - 1.0 + 0.5 * (n - m)))
                acc += gL[at + i, at + m] * Lr[at + i, at + m]
        at += n
        p += n * (n - 1) // 2


@numba.njit(cache=True, error_model="numpy")
def _loglik_grad(beta, lam, s2, b, g_beta, g_lam):
    """Woodbury log-likelihood at (beta, Lambda, sigma^2); fills its beta and Lambda gradients.

    Returns (value, d/ds2 at fixed Lambda).
    """
    q, k, L = int(b[_Q]), int(b[_K]), int(b[_L])
    o_G, o_ZX, o_Zy = int(b[_O_ZTZ]), int(b[_O_ZTX]), int(b[_O_ZTY])
    o_XX, o_Xy = int(b[_O_XTX]), int(b[_O_XTY])
    M = np.empty((q, q))
    A = np.empty((q, q))
    Ai = np.empty((q, q))
    d = np.empty(q)
    c = np.empty(q)
    v = np.empty(q)
    lv = np.empty(q)
    t = np.empty(q)
    g_lam[:, :] = 0.0
    acc_b = np.zeros(k)
    logdet, quad = 0.0, 0.0
    for cl in range(L):
        g0 = o_G + cl * q * q
        x0 = o_ZX + cl * q * k
        for i in range(q):
            s = b[o_Zy + cl * q + i]
            for j in range(k):
                s -= b[x0 + i * k + j] * beta[j]
            d[i] = s
        for i in range(q):  # M = G Lambda (Lambda lower)
            for j in range(q):
                s = 0.0
                for m in range(j, q):
                    s += b[g0 + i * q + m] * lam[m, j]
                M[i, j] = s
        for i in range(q):  # A = Lambda' M + I, c = Lambda' d
            s = 0.0
            for m in range(i, q):
                s += lam[m, i] * d[m]
            c[i] = s
            for j in range(i + 1):
                s = 1.0 if i == j else 0.0
                for m in range(i, q):
                    s += lam[m, i] * M[m, j]
                A[i, j] = s
        for i in range(q):  # A = C C' in place (lower)
            for j in range(i + 1):
                s = A[i, j]
                for m in range(j):
                    s -= A[i, m] * A[j, m]
                if i == j:
                    A[i, i] = math.sqrt(s)
                    logdet += 2.0 * math.log(A[i, i])
                else:
                    A[i, j] = s / A[j, j]
        for col in range(q):  # Ai = A^-1 column by column
            for i in range(q):
                s = 1.0 if i == col else 0.0
                for m in range(i):
                    s -= A[i, m] * t[m]
                t[i] = s / A[i, i]
            for i in range(q - 1, -1, -1):
                s = t[i]
                for m in range(i + 1, q):
                    s -= A[m, i] * Ai[m, col]
                Ai[i, col] = s / A[i, i]
        for i in range(q):
            s = 0.0
            for j in range(q):
                s += Ai[i, j] * c[j]
            v[i] = s
        for i in range(q):
            quad += c[i] * v[i]
            s = 0.0
            for j in range(i + 1):
                s += lam[i, j] * v[j]
            lv[i] = s
        for i in range(q):  # g_lam += d v' / s2 - M (Ai + v v' / s2)
            for j in range(i + 1):
                s = d[i] * v[j] / s2
                for m in range(q):
                    s -= M[i, m] * (Ai[m, j] + v[m] * v[j] / s2)
                g_lam[i, j] += s
        for j in range(k):  # sum_l Z_l'X_l' Lambda v_l
            s = 0.0
            for i in range(q):
                s += b[x0 + i * k + j] * lv[i]
            acc_b[j] += s
    rr = b[_YTY]
    for i in range(k):
        xb = 0.0
        for j in range(k):
            xb += b[o_XX + i * k + j] * beta[j]
        rr += beta[i] * (xb - 2.0 * b[o_Xy + i])
        g_beta[i] = (b[o_Xy + i] - xb - acc_b[i]) / s2
    N = b[_N]
    value = -0.5 * (N * (LOG_2PI + math.log(s2)) + logdet + (rr - quad) / s2)
    return value, -0.5 * N / s2 + 0.5 * (rr - quad) / (s2 * s2)


@numba.njit(cache=True, error_model="numpy")
def _logp_grad(z, b, grad):
    k, q, P, i0 = int(b[_K]), int(b[_Q]), int(b[_P]), int(b[_I0])
    scale, log_scale = b[_SCALE], b[_LOGSCALE]
    o_m, o_s, o_l, o_p, o_t = (int(b[_O_XMEAN]), int(b[_O_XSCALE]), int(b[_O_LOC]),
                               int(b[_O_PSCALE]), int(b[_O_TSCALE]))
    beta = np.empty(k)
    alpha = _beta(z, b, beta)
    tau = np.empty(q)
    for c in range(q):
        tau[c] = math.exp(z[k + c]) * b[o_t + c]
    sigma = math.exp(z[k + q] + log_scale)
    zc = z[k + q + 1:k + q + 1 + P]
    Lr = np.empty((q, q))
    value = _corr_chol(zc, b, Lr)
    lam = np.empty((q, q))
    for i in range(q):
        for j in range(q):
            lam[i, j] = tau[i] * Lr[i, j] / sigma
    g_beta = np.empty(k)
    g_lam = np.empty((q, q))
    lik, g_s2 = _loglik_grad(beta, lam, sigma * sigma, b, g_beta, g_lam)
    value += lik
    # fixed effects: the chain rule through z -> beta, and the normal priors
    g_int = g_beta[i0] if i0 >= 0 else 0.0
    for j in range(k):
        if j == i0:
            e = (alpha - b[o_l + j]) / b[o_p + j]
            value -= 0.5 * e * e
            grad[j] = scale * (g_beta[j] - e / b[o_p + j])
        else:
            e = (beta[j] - b[o_l + j]) / b[o_p + j]
            value -= 0.5 * e * e
            grad[j] = (scale / b[o_s + j]) * (g_beta[j] - b[o_m + j] * g_int - e / b[o_p + j])
    # Lambda = diag(tau) Lr / sigma: to tau, Lr and sigma
    gL = np.empty((q, q))
    g_sig = 2.0 * sigma * sigma * g_s2  # d/dlog(sigma) at fixed Lambda
    for i in range(q):
        g_t = 0.0
        for j in range(i + 1):
            g_t += g_lam[i, j] * lam[i, j]  # d/dlog(tau_i)
            gL[i, j] = g_lam[i, j] * tau[i] / sigma
            g_sig -= g_lam[i, j] * lam[i, j]
        for j in range(i + 1, q):
            gL[i, j] = 0.0
        lp, dp = _scale_prior(b[_FT], b[o_t + i], b[_NUT], tau[i])
        value += lp + z[k + i]
        grad[k + i] = g_t + tau[i] * dp + 1.0
    lp, dp = _scale_prior(b[_FS], b[_SS], b[_NUS], sigma)
    value += lp + z[k + q]
    grad[k + q] = g_sig + sigma * dp + 1.0
    gz = np.zeros(P)
    _corr_grad(zc, b, Lr, gL, gz)
    for p in range(P):
        grad[k + q + 1 + p] = gz[p]
    return value + b[_CONST]


@numba.njit(cache=True, error_model="numpy")
def _expand(z, b, out):
    """Write beta (k), tau (q), rho (P: LKJCorr's order, block by block), sigma."""
    k, q, P = int(b[_K]), int(b[_Q]), int(b[_P])
    beta = np.empty(k)
    _beta(z, b, beta)
    for j in range(k):
        out[j] = beta[j]
    o_t = int(b[_O_TSCALE])
    for c in range(q):
        out[k + c] = math.exp(z[k + c]) * b[o_t + c]
    Lr = np.empty((q, q))
    _corr_chol(z[k + q + 1:k + q + 1 + P], b, Lr)
    o_b, at, p = int(b[_O_BSIZE]), 0, k + q
    for blk in range(int(b[_NB])):
        n = int(b[o_b + blk])
        for i in range(n):
            for j in range(i + 1, n):
                s = 0.0
                for m in range(i + 1):
                    s += Lr[at + i, at + m] * Lr[at + j, at + m]
                out[p] = s
                p += 1
        at += n
    out[k + q + P] = math.exp(z[k + q] + b[_LOGSCALE])


@numba.njit(cache=True, error_model="numpy")
def _block(user_data):
    head = numba.carray(user_data, (HEADER,), dtype=np.float64)
    return numba.carray(user_data, (int(head[_SIZE]),), dtype=np.float64)


@numba.cfunc(LOGP_SIGNATURE, cache=True)
def _c_logp(dim, x_, out_, logp_, user_data):
    """The nutpie logp callback: 0 on success, 3/4 for a non-finite gradient/value."""
    b = _block(user_data)
    n = int(b[_K]) + int(b[_Q]) + 1 + int(b[_P])
    if dim != n:
        return -1
    out = numba.carray(out_, (n,))
    value = _logp_grad(numba.carray(x_, (n,)), b, out)
    return logp_status(value, out, logp_)


@numba.cfunc(EXPAND_SIGNATURE, cache=True)
def _c_expand(dim, expanded, x_, out_, user_data):
    """The nutpie expand callback: unconstrained point -> beta, tau, rho, sigma."""
    b = _block(user_data)
    n = int(b[_K]) + int(b[_Q]) + 1 + int(b[_P])
    if dim != n or expanded != int(b[_NEXP]):
        return -1
    _expand(numba.carray(x_, (n,)), b, numba.carray(out_, (int(b[_NEXP]),)))
    return 0


# ------------------------------------------------------------------------ Python side
def logp_and_grad(z: np.ndarray, block: np.ndarray) -> tuple[float, np.ndarray]:
    """The compiled log density and gradient at unconstrained ``z`` (for tests and checks)."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    grad = np.empty(z.size)
    return float(_logp_grad(z, block, grad)), grad


def expand(z: np.ndarray, block: np.ndarray) -> np.ndarray:
    """The constrained values at ``z``: beta, tau, rho, sigma concatenated."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    out = np.empty(int(block[_NEXP]))
    _expand(z, block, out)
    return out


def to_unconstrained(priors, beta, tau, rho, sigma) -> np.ndarray:
    """(beta, tau, rho, sigma) -> the sampler's coordinates (rho in LKJCorr's order)."""
    f, lay = priors.fixed, priors.layout
    beta = np.asarray(beta, dtype=np.float64)
    k = len(f.terms)
    z = np.zeros(n_dim(priors))
    shift = 0.0
    for j, m, s in zip(f.slope_index, f.x_mean, f.x_scale, strict=True):
        z[j] = beta[j] * s / f.scale
        shift += beta[j] * m
    if f.intercept_index is not None:
        z[f.intercept_index] = (beta[f.intercept_index] + shift - f.center) / f.scale
    z[k:k + lay.q] = np.log(np.asarray(tau, dtype=np.float64)
                            / np.array([p.scale for p in priors.tau]))
    z[k + lay.q] = math.log(float(sigma) / f.scale)
    cpcs, _ = priors.cpc(rho)
    u = np.concatenate([np.zeros(0), *cpcs.values()])
    z[k + lay.q + 1:] = np.arctanh(2.0 * u - 1.0)
    return z


def compile_sufficient(data, priors):
    """A nutpie model of the slopes family's sufficient posterior (``data``'s statistics)."""
    import pandas as pd

    from varcomp.models.compiled.nutpie import nutpie_model
    from varcomp.models.slopes_model import stats_of

    lay, f = priors.layout, priors.fixed
    k, q, P = len(f.terms), lay.q, n_pairs(priors)
    layout = [("beta", (k,)), ("tau", (q,))] + ([("rho", (P,))] if P else []) + [("sigma", ())]
    dims = {"beta": ("term",), "tau": ("factor",)} | ({"rho": ("pair",)} if P else {})
    coords = {"term": pd.Index([str(t) for t in f.terms]), "factor": pd.Index(lay.coords)}
    if P:
        coords["pair"] = pd.Index(lay.pair_coords)
    start = np.zeros(n_dim(priors))
    start[k + q] = math.log(f.sigma.scale / f.scale)
    return nutpie_model(layout, parameter_block(priors, stats_of(data)), _c_logp, _c_expand,
                        start, dims=dims, coords=coords)
