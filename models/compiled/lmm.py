r"""The mixed models' ``sufficient`` posterior as cached machine code.

For covariates and nested or balanced crossed factors: priors and sampler coordinates of
:class:`models.lmm.LmmPriors` around the
closed-form likelihood kernels of :mod:`models.compiled.lmm_nested` (nested, one factor included,
by cluster size when there is one factor) and :mod:`models.compiled.lmm_strata` (balanced crossed).

Unconstrained coordinates z (n_dim = k + F + 1): for the intercept (if any)
(alpha - mean y) / sd(y), alpha the intercept at the covariates' means; for each other column
beta_j sd(x_j) / sd(y); log(tau_f / sd(y)) per factor; log(sigma / sd(y)). The log density is
the kernel's log-likelihood plus the priors plus the log Jacobians (z_tau, z_sigma and constants),
as PyMC's is for :func:`models.forms.mixed.build_sufficient_nested`; ``tests`` hold the two to one
constant and equal gradients. Posterior variables: ``beta`` (dim ``term``), ``tau`` (scalar for
one factor, dim ``factor`` otherwise), ``sigma``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from varcomp.models.compiled.layout import Layout
from varcomp.models.compiled.lmm_nested import (
    nested_loglik_grad,
    nested_loglik_grad_fast,
    pack_nested,
)
from varcomp.models.compiled.lmm_strata import pack_strata, strata_loglik_grad
from varcomp.models.compiled.nutpie import EXPAND_SIGNATURE, LOGP_SIGNATURE, logp_status
from varcomp.models.compiled.oneway import FAMILY_CODE, prior_const
from varcomp.models.density import LOG_2PI

__all__ = ["LAYOUT", "compile_nested", "compile_strata", "logp_and_grad", "parameter_block",
           "supported"]

KERNEL_NESTED, KERNEL_FAST, KERNEL_STRATA = 0.0, 1.0, 2.0
LAYOUT = Layout(
    scalars=("k", "F", "kernel", "center", "scale", "log_scale", "intercept", "tau_family",
             "tau_nu", "sigma_family", "sigma_scale", "sigma_nu", "const", "n_expanded"),
    arrays=("x_mean", "x_scale", "loc", "prior_scale", "tau_scale", "likelihood"))
(_K, _F, _KERNEL, _CENTER, _SCALE, _LOGSCALE, _I0, _FT, _NUT, _FS, _SS, _NUS, _CONST, _NEXP,
 _O_XMEAN, _O_XSCALE, _O_LOC, _O_PSCALE, _O_TSCALE, _O_LIK) = LAYOUT.constants()
HEADER = LAYOUT.header
_SIZE = LAYOUT.size_slot


def supported(priors) -> bool:
    """Whether the compiled density covers ``priors`` (every family of the CLI does)."""
    return all(p.family in FAMILY_CODE for p in (*priors.tau, priors.sigma))


def parameter_block(priors, likelihood: np.ndarray, kernel: float) -> np.ndarray:
    """The float64 block: the priors and coordinates (:data:`LAYOUT`), then the kernel's block.

    ``loc`` and ``prior_scale`` hold, per column of X, the prior of what the sampler moves: the
    centred intercept alpha at the intercept's position, beta_j elsewhere; ``x_scale`` the
    column's sd (1 at the intercept), ``x_mean`` its mean (0 at the intercept).
    """
    k, F = len(priors.terms), len(priors.tau)
    i0 = priors.intercept_index
    x_mean, x_scale, loc, pscale = np.zeros(k), np.ones(k), np.zeros(k), np.ones(k)
    for j, p, m, s in zip(priors.slope_index, priors.slopes, priors.x_mean, priors.x_scale,
                          strict=True):
        x_mean[j], x_scale[j], loc[j], pscale[j] = m, s, p.loc, p.scale
    if i0 is not None:
        loc[i0], pscale[i0] = priors.intercept.loc, priors.intercept.scale
    log_scale = math.log(priors.scale)
    # constants: the normal priors, the scale priors, and the Jacobians of z -> (beta, tau, sigma)
    jac_beta = sum(log_scale - math.log(x_scale[j]) for j in priors.slope_index)
    if i0 is not None:
        jac_beta += log_scale
    const = (-0.5 * k * LOG_2PI - float(np.sum(np.log(pscale))) + jac_beta
             + sum(prior_const(p) for p in priors.tau) + prior_const(priors.sigma)
             + (F + 1) * log_scale)
    one = priors.tau[0] if F else priors.sigma  # F = 0: the pooled model (no tau)
    scalars = {"k": k, "F": F, "kernel": kernel, "center": priors.center, "scale": priors.scale,
               "log_scale": log_scale, "intercept": -1 if i0 is None else i0,
               "tau_family": FAMILY_CODE[one.family], "tau_nu": one.nu,
               "sigma_family": FAMILY_CODE[priors.sigma.family],
               "sigma_scale": priors.sigma.scale, "sigma_nu": priors.sigma.nu, "const": const,
               "n_expanded": k + F + 1}
    arrays = {"x_mean": x_mean, "x_scale": x_scale, "loc": loc, "prior_scale": pscale,
              "tau_scale": np.array([p.scale for p in priors.tau]), "likelihood": likelihood}
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
    """Fill beta (in X's column order) from the sampler's coordinates; returns alpha (or 0)."""
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
def _logp_grad(z, b, grad):
    k, F, i0 = int(b[_K]), int(b[_F]), int(b[_I0])
    scale, log_scale = b[_SCALE], b[_LOGSCALE]
    o_m, o_s, o_l, o_p, o_t = (int(b[_O_XMEAN]), int(b[_O_XSCALE]), int(b[_O_LOC]),
                               int(b[_O_PSCALE]), int(b[_O_TSCALE]))
    o_lik = int(b[_O_LIK])
    lik = b[o_lik:int(b[_SIZE])]
    beta = np.empty(k)
    alpha = _beta(z, b, beta)
    # F = 0 is the pooled model: the kernel's one factor with tau^2 = 0 (no between-cluster term)
    tau = np.zeros(max(F, 1))
    tau2 = np.zeros(max(F, 1))
    for f in range(F):
        tau[f] = math.exp(z[k + f] + log_scale)
        tau2[f] = tau[f] * tau[f]
    sigma = math.exp(z[k + F] + log_scale)
    g_beta = np.empty(k)
    g_tau2 = np.empty(max(F, 1))
    kind = b[_KERNEL]
    if kind == 0.0:
        value, g_s2 = nested_loglik_grad(beta, tau2, sigma * sigma, lik, g_beta, g_tau2)
    elif kind == 1.0:
        value, g_s2 = nested_loglik_grad_fast(beta, tau2, sigma * sigma, lik, g_beta, g_tau2)
    else:
        value, g_s2 = strata_loglik_grad(beta, tau2, sigma * sigma, lik, g_beta, g_tau2)
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
    for f in range(F):
        lp, d = _scale_prior(b[_FT], b[o_t + f], b[_NUT], tau[f])
        value += lp + z[k + f]
        grad[k + f] = 2.0 * tau2[f] * g_tau2[f] + tau[f] * d + 1.0
    lp, d = _scale_prior(b[_FS], b[_SS], b[_NUS], sigma)
    value += lp + z[k + F]
    grad[k + F] = 2.0 * sigma * sigma * g_s2 + sigma * d + 1.0
    return value + b[_CONST]


@numba.njit(cache=True, error_model="numpy")
def _expand(z, b, out):
    k, F = int(b[_K]), int(b[_F])
    beta = np.empty(k)
    _beta(z, b, beta)
    for j in range(k):
        out[j] = beta[j]
    for f in range(F):
        out[k + f] = math.exp(z[k + f] + b[_LOGSCALE])
    out[k + F] = math.exp(z[k + F] + b[_LOGSCALE])


@numba.njit(cache=True, error_model="numpy")
def _block(user_data):
    head = numba.carray(user_data, (HEADER,), dtype=np.float64)
    return numba.carray(user_data, (int(head[_SIZE]),), dtype=np.float64)


@numba.cfunc(LOGP_SIGNATURE, cache=True)
def _c_logp(dim, x_, out_, logp_, user_data):
    """The nutpie logp callback: 0 on success, 3/4 for a non-finite gradient/value."""
    b = _block(user_data)
    n = int(b[_K]) + int(b[_F]) + 1
    if dim != n:
        return -1
    out = numba.carray(out_, (n,))
    value = _logp_grad(numba.carray(x_, (n,)), b, out)
    return logp_status(value, out, logp_)


@numba.cfunc(EXPAND_SIGNATURE, cache=True)
def _c_expand(dim, expanded, x_, out_, user_data):
    """The nutpie expand callback: unconstrained point -> beta, tau, sigma."""
    b = _block(user_data)
    n = int(b[_K]) + int(b[_F]) + 1
    if dim != n or expanded != int(b[_NEXP]):
        return -1
    _expand(numba.carray(x_, (n,)), b, numba.carray(out_, (int(b[_NEXP]),)))
    return 0


# ------------------------------------------------------------------------ Python side
def logp_and_grad(z: np.ndarray, block: np.ndarray) -> tuple[float, np.ndarray]:
    """The compiled log density and gradient at unconstrained ``z`` (for tests and checks)."""
    z = np.asarray(z, dtype=np.float64)
    grad = np.empty(z.size)
    return float(_logp_grad(z, block, grad)), grad


def to_unconstrained(priors, beta, tau, sigma) -> np.ndarray:
    """(beta, tau, sigma) -> the sampler's coordinates."""
    beta = np.asarray(beta, dtype=np.float64)
    z = np.zeros(len(priors.terms) + len(priors.tau) + 1)
    shift = 0.0
    for j, m, s in zip(priors.slope_index, priors.x_mean, priors.x_scale, strict=True):
        z[j] = beta[j] * s / priors.scale
        shift += beta[j] * m
    if priors.intercept_index is not None:
        z[priors.intercept_index] = (beta[priors.intercept_index] + shift
                                     - priors.center) / priors.scale
    k = len(priors.terms)
    z[k:k + len(priors.tau)] = np.log(np.atleast_1d(tau) / priors.scale)
    z[-1] = math.log(sigma / priors.scale)
    return z


def _model(priors, likelihood: np.ndarray, kernel: float, n_factors: int):
    import pandas as pd

    from varcomp.models.compiled.nutpie import nutpie_model

    k = len(priors.terms)
    vector = bool(n_factors) and not priors.scalar_tau  # tau over the ``factor`` dim
    layout = [("beta", (k,))] + ([("tau", (n_factors,) if vector else ())] if n_factors else []) \
        + [("sigma", ())]
    dims = {"beta": ("term",)} | ({"tau": ("factor",)} if vector else {})
    coords = {"term": pd.Index([str(t) for t in priors.terms])}
    if vector:
        coords["factor"] = pd.Index([str(f) for f in priors.factors])
    start = np.zeros(k + n_factors + 1)
    start[k:] = np.log(np.array([*(p.scale for p in priors.tau), priors.sigma.scale])
                       / priors.scale)
    return nutpie_model(layout, parameter_block(priors, likelihood, kernel), _c_logp, _c_expand,
                        start, dims=dims, coords=coords)


def compile_nested(data, priors):
    """A nutpie model of the nested (or one-factor) sufficient posterior.

    With ``priors.tau`` empty, of the pooled model (one factor, tau = 0: no between-cluster
    variance).
    """
    from varcomp.models.cells import nested_of

    stats = nested_of(data)
    kernel = KERNEL_FAST if stats.depth == 1 else KERNEL_NESTED
    return _model(priors, pack_nested(stats), kernel, len(priors.tau))


def compile_strata(data, priors):
    """A nutpie model of the balanced crossed sufficient posterior."""
    from varcomp.models.cells import strata_of

    return _model(priors, pack_strata(strata_of(data)), KERNEL_STRATA,
                  len(data.design.factors))
