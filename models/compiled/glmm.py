r"""The one-factor GLMM ``marginal`` and ``sufficient`` posteriors as cached machine code.

The PyMC forms (:mod:`models.forms.glmm_integrated`) are a ``pm.Potential`` of a Python Op, so
nutpie samples them through PyTensor's Python-calling function (a Python call per gradient and a
~7 s PyTensor compile per process). Here the same log density is a numba ``cfunc`` for nutpie:
the priors of :class:`models.glmm.GlmmPriors`, their Jacobians and the quadrature kernels of
:mod:`models.compiled.glmm_quadrature` (``rows_logp`` for ``marginal``, ``grouped_logp`` for
``sufficient``), with no PyTensor or Python per call.

Unconstrained coordinates z (n_dim = k + 1), PyMC's own: in X's column order, at the intercept
alpha - loc (alpha the intercept at the covariates' means, ``Affine(loc, 1)``), elsewhere
beta_j sd(x_j) (``OutcomeAffine(0, 1 / sd)``); last log tau (PyMC's log transform). The value
includes every constant (the rows', the priors', the Jacobians'), so it equals
``model.compile_logp()`` of the PyMC form (``tests/test_compiled_glmm.py``). Posterior
variables: ``beta`` (dim ``term``) and ``tau`` (scalar).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from varcomp.models.compiled.glmm_quadrature import LINK_CODE, grouped_logp, rows_logp
from varcomp.models.compiled.layout import Layout
from varcomp.models.compiled.nutpie import EXPAND_SIGNATURE, LOGP_SIGNATURE, logp_status
from varcomp.models.compiled.oneway import FAMILY_CODE, prior_const

__all__ = ["LAYOUT", "compile_block", "logp_and_grad",
           "marginal_block", "sufficient_block", "supported", "to_unconstrained"]

KIND_ROWS, KIND_GROUPED = 0.0, 1.0
# tau outside (TAU_MIN, TAU_MAX), or a non-finite eta, is a rejected point (log density -inf):
# the trapezoid's nodes grow as ~100 tau per cluster and 1/tau^2 overflows below 1e-154; the
# integrated likelihood falls as tau^-L and the priors' tails make the mass beyond 1e4 nil.
TAU_MIN, TAU_MAX = 1e-100, 1e4
LAYOUT = Layout(
    scalars=("k", "n", "kind", "code", "intercept", "tau_family", "tau_scale", "tau_nu",
             "const"),
    arrays=("x_mean", "x_scale", "loc", "prior_scale", "X", "offset", "trials", "y", "order",
            "starts", "group"))
(_K, _N, _KIND, _CODE, _I0, _FT, _ST, _NUT, _CONST,
 _O_XMEAN, _O_XSCALE, _O_LOC, _O_PSCALE, _O_X, _O_OFF, _O_TRIALS, _O_Y, _O_ORDER, _O_STARTS,
 _O_GROUP) = LAYOUT.constants()
HEADER = LAYOUT.header
_SIZE = LAYOUT.size_slot
_LOG_2PI = math.log(2.0 * math.pi)


def supported(family: str, link: str, priors) -> bool:
    """Whether the compiled density covers the model (one factor, logit or log link)."""
    return (len(priors.tau) == 1 and (family, link) in LINK_CODE
            and priors.tau[0].family in FAMILY_CODE)


def _priors_part(priors) -> tuple[dict, dict, float]:
    """Scalars, arrays and the constant of the priors and Jacobians (as PyMC's)."""
    k = len(priors.terms)
    i0 = priors.intercept_index
    x_mean, x_scale, loc, pscale = np.zeros(k), np.ones(k), np.zeros(k), np.ones(k)
    for j, p, m, s in zip(priors.slope_index, priors.slopes, priors.x_mean, priors.x_scale,
                          strict=True):
        x_mean[j], x_scale[j], loc[j], pscale[j] = m, s, p.loc, p.scale
    if i0 is not None:
        loc[i0], pscale[i0] = priors.intercept.loc, priors.intercept.scale
    tau = priors.tau[0]
    # normal priors' constants, the slopes' Jacobians (-log sd), the scale prior's constant
    const = (-0.5 * k * _LOG_2PI - float(np.sum(np.log(pscale)))
             - sum(math.log(x_scale[j]) for j in priors.slope_index) + prior_const(tau))
    scalars = {"k": k, "intercept": -1 if i0 is None else i0,
               "tau_family": FAMILY_CODE[tau.family], "tau_scale": tau.scale, "tau_nu": tau.nu}
    arrays = {"x_mean": x_mean, "x_scale": x_scale, "loc": loc, "prior_scale": pscale}
    return scalars, arrays, const


def marginal_block(priors, family: str, link: str, values: dict, X: np.ndarray,
                   codes: np.ndarray) -> np.ndarray:
    """The float64 block of the ``marginal`` posterior.

    ``values``: the form's containers (``marginal_values``: ``y_obs``, ``offset``, ``trials``
    if binomial), ``X`` the rows' design, ``codes`` each row's cluster.
    """
    from varcomp.models.glm_density import density_for

    scalars, arrays, const = _priors_part(priors)
    y = np.asarray(values["y_obs"], dtype=np.float64).ravel()
    trials = (np.asarray(values["trials"], dtype=np.float64).ravel() if "trials" in values
              else np.ones(y.size))
    codes = np.asarray(codes, dtype=np.intp)
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=int(codes.max()) + 1))])
    const += float(np.sum(density_for(family, link).const(y, trials)))
    scalars |= {"n": y.size, "kind": KIND_ROWS, "code": LINK_CODE[(family, link)],
                "const": const}
    arrays |= {"X": X, "offset": np.asarray(values["offset"], dtype=np.float64),
               "trials": trials, "y": y, "order": np.argsort(codes, kind="stable"),
               "starts": starts, "group": np.zeros(0)}
    return LAYOUT.pack(scalars, arrays)


def sufficient_block(priors, family: str, link: str, values: dict,
                     X: np.ndarray) -> np.ndarray:
    """The float64 block of the ``sufficient`` posterior.

    ``values``: the form's containers (``sufficient_values``: cluster statistics and groups),
    ``X`` each cluster's design row.
    """
    from varcomp.models.glm_density import density_for

    scalars, arrays, const = _priors_part(priors)
    trials = np.asarray(values["trials_c"], dtype=np.float64)
    y = np.asarray(values["y_c"], dtype=np.float64)
    const += float(np.sum(values["const_c"]) + np.sum(density_for(family, link).const(y, trials)))
    scalars |= {"n": y.size, "kind": KIND_GROUPED, "code": LINK_CODE[(family, link)],
                "const": const}
    arrays |= {"X": X, "offset": values["log_exposure"], "trials": trials, "y": y,
               "order": np.zeros(0), "starts": np.zeros(0), "group": values["group_c"]}
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
def _beta(z, b, beta):
    """Fill beta (X's column order) from z; returns alpha (or 0)."""
    k, i0 = int(b[_K]), int(b[_I0])
    o_m, o_s, o_l = int(b[_O_XMEAN]), int(b[_O_XSCALE]), int(b[_O_LOC])
    shift = 0.0
    for j in range(k):
        if j != i0:
            beta[j] = z[j] / b[o_s + j]
            shift += beta[j] * b[o_m + j]
    alpha = 0.0
    if i0 >= 0:
        alpha = b[o_l + i0] + z[i0]
        beta[i0] = alpha - shift
    return alpha


@numba.njit(cache=True, error_model="numpy")
def _logp_grad(z, b, grad):
    k, n, i0 = int(b[_K]), int(b[_N]), int(b[_I0])
    o_m, o_s, o_l, o_p = int(b[_O_XMEAN]), int(b[_O_XSCALE]), int(b[_O_LOC]), int(b[_O_PSCALE])
    o_x, o_off = int(b[_O_X]), int(b[_O_OFF])
    beta = np.empty(k)
    alpha = _beta(z, b, beta)
    tau = math.exp(z[k])
    eta = np.empty(n)
    finite = TAU_MIN < tau < TAU_MAX
    for i in range(n):
        e = b[o_off + i]
        for j in range(k):
            e += b[o_x + i * k + j] * beta[j]
        eta[i] = e
        finite = finite and math.isfinite(e)
    if not finite:  # outside the quadrature's range: nutpie rejects the point (status 4)
        for j in range(k + 1):
            grad[j] = 0.0
        return -np.inf
    code = int(b[_CODE])
    trials = b[int(b[_O_TRIALS]):int(b[_O_TRIALS]) + n]
    y = b[int(b[_O_Y]):int(b[_O_Y]) + n]
    if b[_KIND] == 0.0:
        o_o, o_st = int(b[_O_ORDER]), int(b[_O_STARTS])
        order = b[o_o:o_st].astype(np.int64)
        starts = b[o_st:int(b[_O_GROUP])].astype(np.int64)
        value, d_eta, d_tau = rows_logp(code, trials, y, eta, order, starts, tau, True)
    else:
        group = b[int(b[_O_GROUP]):int(b[_SIZE])].astype(np.int64)
        value, d_eta, d_tau = grouped_logp(code, trials, y, eta, group, tau, True)
    g_beta = np.zeros(k)
    for i in range(n):
        for j in range(k):
            g_beta[j] += b[o_x + i * k + j] * d_eta[i]
    g_int = g_beta[i0] if i0 >= 0 else 0.0
    for j in range(k):
        if j == i0:
            e = (alpha - b[o_l + j]) / b[o_p + j]
            value -= 0.5 * e * e
            grad[j] = g_beta[j] - e / b[o_p + j]
        else:
            e = (beta[j] - b[o_l + j]) / b[o_p + j]
            value -= 0.5 * e * e
            grad[j] = (g_beta[j] - b[o_m + j] * g_int - e / b[o_p + j]) / b[o_s + j]
    lp, d = _scale_prior(b[_FT], b[_ST], b[_NUT], tau)
    value += lp + z[k]
    grad[k] = tau * d_tau + tau * d + 1.0
    return value + b[_CONST]


@numba.njit(cache=True, error_model="numpy")
def _expand(z, b, out):
    k = int(b[_K])
    beta = np.empty(k)
    _beta(z, b, beta)
    for j in range(k):
        out[j] = beta[j]
    out[k] = math.exp(z[k])


@numba.njit(cache=True, error_model="numpy")
def _block(user_data):
    head = numba.carray(user_data, (HEADER,), dtype=np.float64)
    return numba.carray(user_data, (int(head[_SIZE]),), dtype=np.float64)


@numba.cfunc(LOGP_SIGNATURE, cache=True)
def _c_logp(dim, x_, out_, logp_, user_data):
    """The nutpie logp callback: 0 on success, 3/4 for a non-finite gradient/value."""
    b = _block(user_data)
    n = int(b[_K]) + 1
    if dim != n:
        return -1
    out = numba.carray(out_, (n,))
    value = _logp_grad(numba.carray(x_, (n,)), b, out)
    return logp_status(value, out, logp_)


@numba.cfunc(EXPAND_SIGNATURE, cache=True)
def _c_expand(dim, expanded, x_, out_, user_data):
    """The nutpie expand callback: unconstrained point -> beta, tau."""
    b = _block(user_data)
    n = int(b[_K]) + 1
    if dim != n or expanded != n:
        return -1
    _expand(numba.carray(x_, (n,)), b, numba.carray(out_, (n,)))
    return 0


# ------------------------------------------------------------------------ Python side
def logp_and_grad(z: np.ndarray, block: np.ndarray) -> tuple[float, np.ndarray]:
    """The compiled log density and gradient at unconstrained ``z`` (for tests and checks)."""
    z = np.asarray(z, dtype=np.float64)
    grad = np.empty(z.size)
    return float(_logp_grad(z, block, grad)), grad


def to_unconstrained(priors, beta, tau) -> np.ndarray:
    """(beta, tau) -> the sampler's coordinates."""
    beta = np.asarray(beta, dtype=np.float64)
    z = np.zeros(len(priors.terms) + 1)
    shift = 0.0
    for j, m, s in zip(priors.slope_index, priors.x_mean, priors.x_scale, strict=True):
        z[j] = beta[j] * s
        shift += beta[j] * m
    if priors.intercept_index is not None:
        z[priors.intercept_index] = beta[priors.intercept_index] + shift - priors.intercept.loc
    z[-1] = math.log(float(tau))
    return z


def compile_block(priors, block: np.ndarray):
    """A nutpie model of the posterior of ``block``: variables ``beta`` (``term``), ``tau``.

    ``block``: :func:`marginal_block` or :func:`sufficient_block`.
    """
    import pandas as pd

    from varcomp.models.compiled.nutpie import nutpie_model

    k = len(priors.terms)
    start = np.zeros(k + 1)
    start[k] = math.log(priors.tau[0].scale)  # PyMC's support point of the scale prior
    return nutpie_model([("beta", (k,)), ("tau", ())], block, _c_logp, _c_expand, start,
                        dims={"beta": ("term",)},
                        coords={"term": pd.Index([str(t) for t in priors.terms])})
