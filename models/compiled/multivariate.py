r"""The multivariate ``sufficient`` posterior as cached machine code (complex-step gradient).

:func:`models.forms.multivariate.build_sufficient` defines the model: mu ~ Normal per outcome,
LKJ-Cholesky priors on the standardised factors of V and Sigma (:class:`models.priors.MvPriors`),
and the exact per-pattern likelihood of :func:`models.forms.multivariate.sufficient_loglik`.
nutpie's numba backend compiles that PyMC graph in 12-17 s in every process (its callbacks cannot
be cached); this module evaluates the same log density in hand-written numba (``cache=True``,
compiled once per installation) and hands it to nutpie as C callbacks, as
:mod:`models.compiled.oneway` does for the univariate form.

The gradient is by complex step: for the n_dim = p + p(p+1) unconstrained coordinates,
d logp / dx_k = Im logp(x + i h e_k) / h with h = 1e-30, exact to rounding because no
difference is taken (Squire & Trapp 1998). It needs every operation to be complex-analytic,
so the code uses plain transposes (never conjugates) and no ``abs``; log, sqrt and exp are
written for complex-step arguments (see ``_clog``).
Cost: n_dim evaluations of an O(L P p^2 + L p^3) density per gradient.

``tests/test_compiled_multivariate.py`` shows the log density equals scipy's MvNormal of each
cluster's stacked observed vector plus the independent prior density of
:mod:`models.checks.oracles` (to 1e-9), and the gradient equals PyMC's ``dlogp`` of
``build_sufficient`` (to 1e-8), with missing cells.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from varcomp.models.compiled.layout import Layout
from varcomp.models.compiled.nutpie import EXPAND_SIGNATURE, LOGP_SIGNATURE, logp_status
from varcomp.models.density import LOG_2PI
from varcomp.models.priors import MvPriors, lkj_log_norm

__all__ = ["compile_sufficient_mv", "expanded_names", "logp_and_grad", "parameter_block"]

STEP = 1e-30
# The float64 parameter block (``user_data``): sizes and constants, the priors, then the
# per-pattern statistics, the partly observed clusters one by one (information form, complex
# step) and the complete-only clusters grouped by size (analytic gradient).
LAYOUT = Layout(
    scalars=("p", "n_patterns", "L", "n_dim", "eta_between", "eta_within", "const",
             "n_expanded", "n_size_groups", "n_complete"),
    arrays=("center", "scale", "mu_loc", "mu_scale", "sd_between", "sd_within", "patterns",
            "pattern_rows", "pattern_scatter", "n", "mean", "size_groups"))
(_P, _NPAT, _L, _NDIM, _ETAV, _ETAS, _CONST, _NEXP, _KC, _LC, _O_CENTER, _O_SCALE, _O_MULOC,
 _O_MUSCALE, _O_SDV, _O_SDS, _O_PAT, _O_NQ, _O_W, _O_N, _O_MEAN, _O_GROUPS) = LAYOUT.constants()
HEADER = LAYOUT.header
_SIZE = LAYOUT.size_slot


def expanded_names(p: int) -> list[tuple[str, tuple[int, ...]]]:
    """The posterior variables (name, shape) nutpie gives ``build_sufficient``, in its order."""
    T = p * (p + 1) // 2
    return [("mu_std__", (p,)), ("chol_V_std_cholesky-cov-packed__", (T,)),
            ("chol_Sigma_std_cholesky-cov-packed__", (T,)), ("mu", (p,)), ("chol_V_std", (T,)),
            ("chol_Sigma_std", (T,)), ("V", (p, p)), ("Sigma", (p, p)), ("tau", (p,)),
            ("sigma", (p,)), ("icc", (p,)), ("corr_between", (p, p)), ("corr_within", (p, p))]


def parameter_block(data, priors: MvPriors | None = None) -> np.ndarray:
    """The float64 array the compiled functions read: constants, priors, pattern statistics."""
    from varcomp.models.mvstats import pattern_stats

    priors = priors or MvPriors.default(data)
    st = pattern_stats(data)
    p, P = st.p, st.patterns.shape[0]
    T = p * (p + 1) // 2
    # clusters whose rows are all complete: grouped by size (analytic part); the others: the
    # information form, one by one (complex-step part)
    complete = st.complete_only
    info = (st.n.sum(axis=1) > 0) & ~complete
    n, mean = st.n[info].astype(np.float64), st.mean[info]
    L = int(n.shape[0])
    groups = np.zeros((0, 2 + p + p * p))
    if complete.any():
        qc = st.complete_index
        size = st.n[complete, qc].astype(np.float64)
        xbar = st.mean[complete, qc, :]
        sizes, inverse, count = np.unique(size, return_inverse=True, return_counts=True)
        a = np.stack([np.bincount(inverse, weights=xbar[:, k]) / count for k in range(p)], 1)
        dev = xbar - a[inverse]
        Q = np.zeros((sizes.size, p, p))
        np.add.at(Q, inverse, dev[:, :, None] * dev[:, None, :])
        groups = np.column_stack([sizes, count, a, Q.reshape(sizes.size, -1)])
    scale = np.asarray(priors.scale, dtype=np.float64)
    sd_v = np.asarray(priors.tau_scale) / scale
    sd_s = np.asarray(priors.sigma_scale) / scale
    N_q = st.n.sum(axis=0).astype(np.float64)
    obs = st.patterns.sum(axis=1)
    const = (-0.5 * float(np.sum(N_q * obs)) * LOG_2PI
             + float(np.sum(-0.5 * LOG_2PI - np.log(priors.mu_scale)))  # mu priors
             + float(np.sum(np.log(scale)))  # mu's log Jacobian
             - lkj_log_norm(p, priors.eta_between) - lkj_log_norm(p, priors.eta_within)
             + float(np.sum(0.5 * math.log(2.0 / math.pi) - np.log(sd_v)))  # HalfNormal sds
             + float(np.sum(0.5 * math.log(2.0 / math.pi) - np.log(sd_s))))
    scalars = {"p": p, "n_patterns": P, "L": L, "n_dim": p + 2 * T,
               "eta_between": priors.eta_between, "eta_within": priors.eta_within,
               "const": const, "n_expanded": sum(int(np.prod(s)) for _, s in expanded_names(p)),
               "n_size_groups": groups.shape[0], "n_complete": int(complete.sum())}
    arrays = {"center": np.asarray(priors.center), "scale": scale,
              "mu_loc": np.asarray(priors.mu_loc), "mu_scale": np.asarray(priors.mu_scale),
              "sd_between": sd_v, "sd_within": sd_s, "patterns": st.patterns.astype(np.float64),
              "pattern_rows": N_q, "pattern_scatter": st.scatter, "n": n,
              "mean": np.nan_to_num(mean, nan=0.0), "size_groups": groups}
    return LAYOUT.pack(scalars, arrays)


# ------------------------------------------------------------------------ compiled code
# Complex-step versions of log, sqrt and exp: exact to O(Im^2) = 1e-60 relative for arguments
# whose imaginary part is a complex-step perturbation (real part > 0 for log and sqrt, which
# holds for the variances and determinants they are applied to), at the cost of real
# functions, where ``cmath``'s general complex functions are several times slower.
@numba.njit(cache=True, inline="always", error_model="numpy")
def _clog(z):
    return complex(math.log(z.real), z.imag / z.real)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _csqrt(z):
    r = math.sqrt(z.real)
    return complex(r, 0.5 * z.imag / r)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _cexp(z):
    e = math.exp(z.real)
    return complex(e, e * z.imag)


@numba.njit(cache=True, error_model="numpy")
def _chol(A, m, out):
    """Lower Cholesky factor of the leading m x m block of complex A into ``out``."""
    for j in range(m):
        s = A[j, j]
        for k in range(j):
            s -= out[j, k] * out[j, k]
        out[j, j] = _csqrt(s)
        for i in range(j + 1, m):
            s = A[i, j]
            for k in range(j):
                s -= out[i, k] * out[j, k]
            out[i, j] = s / out[j, j]


@numba.njit(cache=True, error_model="numpy")
def _factors(x, b, p, lp_in):
    """(mu, L_V, L_Sigma, log density of priors and Jacobians) at complex x."""
    T = p * (p + 1) // 2
    o_c, o_s, o_l, o_m = int(b[_O_CENTER]), int(b[_O_SCALE]), int(b[_O_MULOC]), int(b[_O_MUSCALE])
    center, scale = b[o_c:o_c + p], b[o_s:o_s + p]
    mu_loc, mu_scale = b[o_l:o_l + p], b[o_m:o_m + p]
    lp = lp_in
    mu = np.empty(p, np.complex128)
    for k in range(p):
        mu[k] = center[k] + scale[k] * x[k]
        e = (mu[k] - mu_loc[k]) / mu_scale[k]
        lp += -0.5 * e * e
    chols = np.zeros((2, p, p), np.complex128)
    for w in range(2):
        eta = b[_ETAV + w]
        o_sd = int(b[_O_SDV]) if w == 0 else int(b[_O_SDS])
        sds = b[o_sd:o_sd + p]
        off = p + w * T
        idx = 0
        for i in range(p):
            var = 0.0 + 0.0j
            for j in range(i + 1):
                v = x[off + idx]
                if j == i:
                    lp += v  # log Jacobian of the exp on the diagonal
                    v = _cexp(v)
                chols[w, i, j] = v
                var += v * v
                idx += 1
            sd = _csqrt(var)
            corr_diag = chols[w, i, i] / sd
            e = sd / sds[i]
            lp += -0.5 * e * e  # HalfNormal sd prior (constant in the block)
            lp += (2.0 * eta - 3.0 + p - i) * _clog(corr_diag)  # LKJ
            lp += _clog(corr_diag) - i * _clog(sd)  # (sd, corr) -> Cholesky Jacobian
        for i in range(p):
            for j in range(i + 1):
                chols[w, i, j] *= scale[i]
    return mu, chols, lp


@numba.njit(cache=True, error_model="numpy")
def _logp_complex(x, b):
    p, P, L = int(b[_P]), int(b[_NPAT]), int(b[_L])
    o_pat, o_N, o_W = int(b[_O_PAT]), int(b[_O_NQ]), int(b[_O_W])
    o_n, o_mean = int(b[_O_N]), int(b[_O_MEAN])
    mu, chols, lp = _factors(x, b, p, b[_CONST] + 0.0j)
    LV, LS = chols[0], chols[1]
    Sigma = np.zeros((p, p), np.complex128)
    for i in range(p):
        for j in range(p):
            s = 0.0j
            for k in range(p):
                s += LS[i, k] * LS[j, k]
            Sigma[i, j] = s
    # per pattern: A_q = S^T Sigma_q^-1 S and its constant terms
    A = np.zeros((P, p, p), np.complex128)
    sub = np.zeros((p, p), np.complex128)
    Lq = np.zeros((p, p), np.complex128)
    Li = np.zeros((p, p), np.complex128)
    idx = np.empty(p, np.int64)
    for q in range(P):
        m = 0
        for k in range(p):
            if b[o_pat + q * p + k] > 0.5:
                idx[m] = k
                m += 1
        for i in range(m):
            for j in range(m):
                sub[i, j] = Sigma[idx[i], idx[j]]
        Lq[:, :] = 0.0
        _chol(sub, m, Lq)
        Li[:, :] = 0.0
        for c in range(m):  # inverse of Lq, column by column
            for i in range(m):
                s = 1.0 + 0.0j if i == c else 0.0j
                for k in range(i):
                    s -= Lq[i, k] * Li[k, c]
                Li[i, c] = s / Lq[i, i]
        logdet = 0.0j
        for i in range(m):
            logdet += 2.0 * _clog(Lq[i, i])
        Nq = b[o_N + q]
        tr = 0.0j
        for i in range(m):
            for j in range(m):
                s = 0.0j
                for k in range(m):
                    s += Li[k, i] * Li[k, j]  # (Li^T Li)_ij = Sigma_q^-1
                A[q, idx[i], idx[j]] = s
                tr += s * b[o_W + q * p * p + idx[j] * p + idx[i]]
        lp += -0.5 * Nq * logdet - 0.5 * tr
    # per cluster: the information form with K = I + L_V^T (sum_q n A_q) L_V
    M = np.zeros((p, p), np.complex128)
    ML = np.zeros((p, p), np.complex128)
    K = np.zeros((p, p), np.complex128)
    g = np.zeros(p, np.complex128)
    d = np.zeros(p, np.complex128)
    c = np.zeros(p, np.complex128)
    for cl in range(L):
        M[:, :] = 0.0
        g[:] = 0.0
        quad = 0.0j
        for q in range(P):
            nlq = b[o_n + cl * P + q]
            if nlq == 0.0:
                continue
            for k in range(p):
                d[k] = b[o_mean + (cl * P + q) * p + k] - mu[k]
            for i in range(p):
                s = 0.0j
                for j in range(p):
                    s += A[q, i, j] * d[j]
                    M[i, j] += nlq * A[q, i, j]
                g[i] += nlq * s
                quad += nlq * d[i] * s
        for i in range(p):  # ML = M L_V
            for j in range(p):
                s = 0.0j
                for k in range(p):
                    s += M[i, k] * LV[k, j]
                ML[i, j] = s
        for i in range(p):  # K = I + L_V^T M L_V, c = L_V^T g
            for j in range(p):
                s = 0.0j
                for k in range(p):
                    s += LV[k, i] * ML[k, j]
                K[i, j] = s + (1.0 if i == j else 0.0)
            s = 0.0j
            for k in range(p):
                s += LV[k, i] * g[k]
            c[i] = s
        # K = L D L^T by elimination without pivoting (K is symmetric positive definite):
        # log|K| = sum log D_jj and c^T K^-1 c = sum (L^-1 c)_j^2 / D_jj; one log, no sqrt
        det = 1.0 + 0.0j
        cq = 0.0j
        for j in range(p):
            piv = K[j, j]
            det *= piv
            cq += c[j] * c[j] / piv
            for i in range(j + 1, p):
                f = K[i, j] / piv
                for k in range(j + 1, p):
                    K[i, k] -= f * K[j, k]
                c[i] -= f * c[j]
        lp += -0.5 * quad - 0.5 * _clog(det) + 0.5 * cq
    return lp


@numba.njit(cache=True, error_model="numpy")
def _spd_inverse(A, p, R, Ai):
    """Inverse of a real symmetric positive-definite A into ``Ai`` (R: scratch); log|A|."""
    logdet = 0.0
    for j in range(p):  # R = chol(A)
        s = A[j, j]
        for k in range(j):
            s -= R[j, k] * R[j, k]
        R[j, j] = math.sqrt(s)
        logdet += 2.0 * math.log(R[j, j])
        for i in range(j + 1, p):
            s = A[i, j]
            for k in range(j):
                s -= R[i, k] * R[j, k]
            R[i, j] = s / R[j, j]
    for c in range(p):  # Ai = R^-T R^-1, column by column: forward then back substitution
        for i in range(p):
            s = 1.0 if i == c else 0.0
            for k in range(i):
                s -= R[i, k] * Ai[k, c]
            Ai[i, c] = s / R[i, i]
        for i in range(p - 1, -1, -1):
            s = Ai[i, c]
            for k in range(i + 1, p):
                s -= R[k, i] * Ai[k, c]
            Ai[i, c] = s / R[i, i]
    return logdet


@numba.njit(cache=True, error_model="numpy")
def _complete_part(x, b, gx):
    r"""Complete-only clusters, grouped by size, with an analytic gradient (added to ``gx``).

    Per size group k (m_k clusters of n_k rows, mean of means a_k, scatter Q_k) with
    M_k = Sigma + n_k V and S_k = Q_k + m_k e_k e_k^T, e_k = a_k - mu:
    sum_k [-m_k/2 log|M_k| - n_k/2 tr(M_k^-1 S_k)] + L_c/2 log|Sigma| (the rest of these
    clusters' density is in the pattern terms). With G_k = -m_k/2 M_k^-1
    + n_k/2 M_k^-1 S_k M_k^-1: d/dmu = sum n_k m_k M_k^-1 e_k, d/dSigma = sum G_k
    + L_c/2 Sigma^-1, d/dV = sum n_k G_k, and d/dL = 2 G L for Sigma = L L^T.
    """
    p, Kc = int(b[_P]), int(b[_KC])
    if Kc == 0:
        return 0.0
    T = p * (p + 1) // 2
    o_c, o_s = int(b[_O_CENTER]), int(b[_O_SCALE])
    center, scale = b[o_c:o_c + p], b[o_s:o_s + p]
    o_g = int(b[_O_GROUPS])
    mu = np.empty(p)
    for k in range(p):
        mu[k] = center[k] + scale[k] * x[k]
    C = np.zeros((2, p, p))  # standardised factors, then scaled
    Lf = np.zeros((2, p, p))
    for w in range(2):
        idx = 0
        for i in range(p):
            for j in range(i + 1):
                v = x[p + w * T + idx]
                C[w, i, j] = math.exp(v) if i == j else v
                Lf[w, i, j] = scale[i] * C[w, i, j]
                idx += 1
    V = np.zeros((p, p))
    Sig = np.zeros((p, p))
    for i in range(p):
        for j in range(p):
            sv, ss = 0.0, 0.0
            for q in range(p):
                sv += Lf[0, i, q] * Lf[0, j, q]
                ss += Lf[1, i, q] * Lf[1, j, q]
            V[i, j], Sig[i, j] = sv, ss
    Lc = b[_LC]
    R = np.zeros((p, p))
    Mi = np.zeros((p, p))
    value = 0.5 * Lc * _spd_inverse(Sig, p, R, Mi)
    GS = 0.5 * Lc * Mi
    GV = np.zeros((p, p))
    gmu = np.zeros(p)
    e = np.empty(p)
    S = np.empty((p, p))
    M = np.empty((p, p))
    MiS = np.empty((p, p))
    for k in range(Kc):
        r = o_g + k * (2 + p + p * p)
        n, m = b[r], b[r + 1]
        for i in range(p):
            e[i] = b[r + 2 + i] - mu[i]
        for i in range(p):
            for j in range(p):
                S[i, j] = b[r + 2 + p + i * p + j] + m * e[i] * e[j]
                M[i, j] = Sig[i, j] + n * V[i, j]
        logdet = _spd_inverse(M, p, R, Mi)
        tr = 0.0
        for i in range(p):
            for j in range(p):
                t = 0.0
                for q in range(p):
                    t += Mi[i, q] * S[q, j]
                MiS[i, j] = t
            tr += MiS[i, i]
        value += -0.5 * m * logdet - 0.5 * n * tr
        for i in range(p):
            t = 0.0
            for j in range(p):
                u = 0.0
                for q in range(p):
                    u += MiS[i, q] * Mi[q, j]
                G = -0.5 * m * Mi[i, j] + 0.5 * n * u
                GS[i, j] += G
                GV[i, j] += n * G
                t += Mi[i, j] * e[j]
            gmu[i] += n * m * t
    for k in range(p):
        gx[k] += scale[k] * gmu[k]
    for w in range(2):
        Gw = GV if w == 0 else GS
        idx = 0
        for i in range(p):
            for j in range(i + 1):
                gL = 0.0  # (2 G L)_ij
                for q in range(p):
                    gL += 2.0 * Gw[i, q] * Lf[w, q, j]
                gx[p + w * T + idx] += scale[i] * gL * (C[w, i, i] if i == j else 1.0)
                idx += 1
    return value


@numba.njit(cache=True, error_model="numpy")
def _logp_grad(x, b, grad):
    n = x.shape[0]
    z = np.empty(n, np.complex128)
    for k in range(n):
        z[k] = x[k]
    value = _logp_complex(z, b).real
    for k in range(n):
        z[k] = x[k] + 1j * STEP
        grad[k] = _logp_complex(z, b).imag / STEP
        z[k] = x[k]
    return value + _complete_part(x, b, grad)


@numba.njit(cache=True, error_model="numpy")
def _expand(x, b, out):
    p = int(b[_P])
    n = x.shape[0]
    z = np.empty(n, np.complex128)
    for k in range(n):
        z[k] = x[k]
    mu, chols, _ = _factors(z, b, p, 0.0j)
    o_s = int(b[_O_SCALE])
    scale = b[o_s:o_s + p]
    o = 0
    for k in range(n):  # the three unconstrained blocks
        out[o] = x[k]
        o += 1
    for k in range(p):
        out[o] = mu[k].real
        o += 1
    for w in range(2):  # packed standardised factors
        for i in range(p):
            for j in range(i + 1):
                out[o] = chols[w, i, j].real / scale[i]
                o += 1
    cov = np.zeros((2, p, p))
    for w in range(2):
        for i in range(p):
            for j in range(p):
                s = 0.0
                for k in range(p):
                    s += chols[w, i, k].real * chols[w, j, k].real
                cov[w, i, j] = s
    for w in range(2):
        for i in range(p):
            for j in range(p):
                out[o] = cov[w, i, j]
                o += 1
    for w in range(2):
        for i in range(p):
            out[o] = math.sqrt(cov[w, i, i])
            o += 1
    for i in range(p):  # icc: models.shares.icc, inside numba (tests/test_shares.py: equal)
        out[o] = cov[0, i, i] / (cov[0, i, i] + cov[1, i, i])
        o += 1
    for w in range(2):
        for i in range(p):
            for j in range(p):
                out[o] = cov[w, i, j] / math.sqrt(cov[w, i, i] * cov[w, j, j])
                o += 1
    return o


@numba.njit(cache=True, error_model="numpy")
def _block(user_data):
    head = numba.carray(user_data, (HEADER,), dtype=np.float64)
    return numba.carray(user_data, (int(head[_SIZE]),), dtype=np.float64)


@numba.cfunc(LOGP_SIGNATURE, cache=True)
def _c_logp(dim, x_, out_, logp_, user_data):
    """Nutpie's logp callback: 0 on success, 3/4 for a non-finite gradient/value."""
    b = _block(user_data)
    n = int(b[_NDIM])
    if dim != n:
        return -1
    out = numba.carray(out_, (n,))
    value = _logp_grad(numba.carray(x_, (n,)), b, out)
    return logp_status(value, out, logp_)


@numba.cfunc(EXPAND_SIGNATURE, cache=True)
def _c_expand(dim, expanded, x_, out_, user_data):
    """Nutpie's expand callback: unconstrained point -> the posterior variables."""
    b = _block(user_data)
    n, n_exp = int(b[_NDIM]), int(b[_NEXP])
    if dim != n or expanded != n_exp:
        return -1
    _expand(numba.carray(x_, (n,)), b, numba.carray(out_, (n_exp,)))
    return 0


# ------------------------------------------------------------------------ Python side
def logp_and_grad(x: np.ndarray, block: np.ndarray) -> tuple[float, np.ndarray]:
    """The compiled log density and gradient at unconstrained ``x`` (for tests and checks)."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.empty(x.size)
    return float(_logp_grad(x, block, grad)), grad


def to_unconstrained(priors: MvPriors, values: dict) -> np.ndarray:
    """Constrained values (``MvPriors.point``) -> the sampler's coordinates."""
    p = priors.p
    rows, cols = np.tril_indices(p)
    diag = rows == cols
    parts = [(np.asarray(values["mu"]) - np.asarray(priors.center)) / np.asarray(priors.scale)]
    for name in ("chol_V_std", "chol_Sigma_std"):
        packed = np.array(values[name], dtype=np.float64)
        packed[diag] = np.log(packed[diag])
        parts.append(packed)
    return np.concatenate(parts)


def compile_sufficient_mv(data, priors: MvPriors | None = None):
    """A nutpie model of the multivariate ``sufficient`` posterior (see the module docstring).

    Initial points: mu at its prior location, the standardised Sigma factor at I and the V
    factor at diag(0.5 (1 + k/p)) (``build_sufficient``'s), jittered by U(-1, 1).
    """
    import pandas as pd

    from varcomp.models.compiled.nutpie import nutpie_model

    priors = priors or MvPriors.default(data)
    p = data.p
    T = p * (p + 1) // 2
    rows, cols = np.tril_indices(p)
    start = np.zeros(p + 2 * T)
    start[:p] = (np.asarray(priors.mu_loc) - np.asarray(priors.center)) / np.asarray(priors.scale)
    start[p:p + T][rows == cols] = np.log(0.5 * (1.0 + np.arange(p) / p))
    outcomes = pd.Index([str(r) for r in data.responses])
    layout = expanded_names(p)
    # as nutpie names them for build_sufficient: labelled dims for the model's named variables,
    # ArviZ's default ``<name>_dim_0`` for the packed ones
    dims: dict[str, tuple[str, ...]] = {}
    for name, s in layout:
        if name in ("mu", "tau", "sigma", "icc"):
            dims[name] = ("outcome",)
        elif len(s) == 2:
            dims[name] = ("outcome", "outcome_bis")
    return nutpie_model(layout, parameter_block(data, priors), _c_logp, _c_expand, start,
                        dims=dims, coords={"outcome": outcomes, "outcome_bis": outcomes})
