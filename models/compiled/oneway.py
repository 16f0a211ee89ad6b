r"""The univariate ``sufficient`` posterior as cached machine code: no pytensor graph at all.

:func:`models.forms.oneway.build_sufficient` defines the model (PyMC priors, the standardising
transforms of :mod:`models.transforms`, the closed-form likelihood of :mod:`models.density`).
This module evaluates exactly that log density and its gradient in hand-written numba code,
compiled once per installation (``cache=True``) and handed to nutpie as C callbacks, as nutpie's
own numba backend does. What it buys: no ``import pymc`` (~3 s), no pytensor compile or C-cache
lookup (1-5 s), and a gradient that costs O(distinct cluster sizes) rather than O(L).

The likelihood is grouped by cluster size. For the m_k clusters of size n_k, with A_k the mean
of their means and Q_k = sum (xbar_l - A_k)^2,

.. math::
    \sum_{l:\,n_l = n_k} \frac{n_k (\bar x_l - \mu)^2}{\sigma^2 + n_k\tau^2}
    = \frac{n_k \left(Q_k + m_k (A_k - \mu)^2\right)}{\sigma^2 + n_k\tau^2},

an identity, so the sum over clusters becomes a sum over sizes: 10^5 clusters of 1..200 rows
cost 200 terms per gradient. ``tests/test_compiled_oneway.py`` shows the log density and gradient
equal PyMC's (``build_sufficient``'s compiled ``logp``/``dlogp``) to 1e-9 at random points, for
every prior family.

Unconstrained coordinates (those of :class:`models.priors.Priors`): z_mu = (mu - center)/scale,
z_tau = log(tau/scale), z_sigma = log(sigma/scale); the log density includes the log Jacobians
log(scale), z_tau + log(scale), z_sigma + log(scale), as PyMC's does.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.special import gammaln

from varcomp.models.compiled.layout import Layout
from varcomp.models.compiled.nutpie import EXPAND_SIGNATURE, LOGP_SIGNATURE, logp_status
from varcomp.models.data import GroupStats
from varcomp.models.density import LOG_2PI
from varcomp.models.priors import Priors, ScalePrior

__all__ = ["EXPANDED", "LAYOUT", "compile_sufficient", "logp_and_grad", "parameter_block",
           "size_groups", "supported"]

FAMILY_CODE = {"halfnormal": 0.0, "halfstudentt": 1.0, "halfcauchy": 2.0, "exponential": 3.0}
# The sampler's (unconstrained) coordinates, then the constrained values and the ICC: the
# variables and order nutpie's PyMC backends give ``build_sufficient``'s posterior.
EXPANDED = ("mu_std__", "tau_log_std__", "sigma_log_std__", "mu", "tau", "sigma", "icc")
N_DIM = 3

# The float64 parameter block the compiled functions read (``user_data``): the data's totals,
# the priors, every constant of the log density, then the per-size statistics.
LAYOUT = Layout(
    scalars=("K", "N", "L", "SS", "mu_loc", "mu_scale", "center", "scale", "log_scale",
             "tau_family", "tau_scale", "tau_nu", "sigma_family", "sigma_scale", "sigma_nu",
             "const"),
    arrays=("sizes", "count", "mean", "scatter"))
(_K, _N, _L, _SS, _LOC, _SMU, _CENTER, _SCALE, _LOGSCALE, _FT, _ST, _NUT, _FS, _SS2, _NUS, _CONST,
 _O_SIZES, _O_COUNT, _O_MEAN, _O_SCATTER) = LAYOUT.constants()
HEADER = LAYOUT.header
_SIZE = LAYOUT.size_slot


def supported(priors: Priors) -> bool:
    """Whether the compiled density covers ``priors`` (every family of the CLI does)."""
    return priors.tau.family in FAMILY_CODE and priors.sigma.family in FAMILY_CODE


def size_groups(n: np.ndarray, xbar: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per distinct cluster size: (n_k, m_k clusters, A_k mean of their means, Q_k scatter)."""
    sizes, inverse, count = np.unique(n, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, weights=xbar) / count
    dev = xbar - mean[inverse]
    scatter = np.bincount(inverse, weights=dev * dev, minlength=sizes.size)
    return sizes.astype(np.float64), count.astype(np.float64), mean, scatter


def prior_const(prior: ScalePrior) -> float:
    """The normalising constant of a scale prior's log density (exact, in float64)."""
    s = prior.scale
    if prior.family == "halfnormal":
        return 0.5 * math.log(2.0 / math.pi) - math.log(s)
    if prior.family == "halfstudentt":
        nu = prior.nu
        return (math.log(2.0) + gammaln(0.5 * (nu + 1.0)) - gammaln(0.5 * nu)
                - 0.5 * math.log(nu * math.pi) - math.log(s))
    if prior.family == "halfcauchy":
        return math.log(2.0) - math.log(math.pi * s)
    return -math.log(s)  # exponential with mean s


def parameter_block(stats: GroupStats, priors: Priors, k: int = 0) -> np.ndarray:
    """The float64 array the compiled functions read: constants, then the per-size arrays."""
    if not supported(priors):
        raise ValueError(f"no compiled density for priors {priors.describe()}")
    n, xbar, ss = stats.column(k)
    n = np.asarray(n, dtype=np.float64)
    sizes, count, mean, scatter = size_groups(n, np.asarray(xbar, dtype=np.float64))
    N, L = float(n.sum()), float(n.size)
    log_scale = math.log(priors.scale)
    scalars = {
        "K": sizes.size, "N": N, "L": L, "SS": float(np.sum(ss)),
        "mu_loc": priors.mu.loc, "mu_scale": priors.mu.scale, "center": priors.center,
        "scale": priors.scale, "log_scale": log_scale,
        # every constant of the log density: likelihood, three priors, the three log Jacobians
        "const": (-0.5 * N * LOG_2PI - 0.5 * LOG_2PI - math.log(priors.mu.scale)
                  + prior_const(priors.tau) + prior_const(priors.sigma)
                  + math.log(priors.scale) + 2.0 * log_scale)}
    for name, prior in (("tau", priors.tau), ("sigma", priors.sigma)):
        scalars |= {f"{name}_family": FAMILY_CODE[prior.family], f"{name}_scale": prior.scale,
                    f"{name}_nu": prior.nu}
    return LAYOUT.pack(scalars, {"sizes": sizes, "count": count, "mean": mean,
                                 "scatter": scatter})


# ------------------------------------------------------------------------ compiled code
# Module-level functions so numba's on-disk cache (``cache=True``) applies: the first import
# compiles (~1-2 s), every later process loads the machine code.
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
def _logp_grad(z, p, grad):
    """Log density at unconstrained z; writes the gradient into ``grad``."""
    K = int(p[_K])
    N, L, SS = p[_N], p[_L], p[_SS]
    scale, log_scale = p[_SCALE], p[_LOGSCALE]
    mu = p[_CENTER] + scale * z[0]
    tau = math.exp(z[1] + log_scale)
    sigma = math.exp(z[2] + log_scale)
    t2, s2 = tau * tau, sigma * sigma
    # likelihood, a sum over distinct cluster sizes
    ll = -0.5 * (N - L) * math.log(s2) - 0.5 * SS / s2
    g_mu = 0.0
    g_s2 = -0.5 * (N - L) / s2 + 0.5 * SS / (s2 * s2)
    g_t2 = 0.0
    o_n, o_m, o_a, o_q = int(p[_O_SIZES]), int(p[_O_COUNT]), int(p[_O_MEAN]), int(p[_O_SCATTER])
    for k in range(K):
        n = p[o_n + k]
        m = p[o_m + k]
        d = p[o_a + k] - mu
        r = p[o_q + k] + m * d * d
        v = s2 + n * t2
        ll += -0.5 * m * math.log(v) - 0.5 * n * r / v
        g_mu += n * m * d / v
        dv = -0.5 * m / v + 0.5 * n * r / (v * v)
        g_s2 += dv
        g_t2 += n * dv
    # priors (constants are in p[_CONST]) and log Jacobians
    e = (mu - p[_LOC]) / p[_SMU]
    lp_tau, d_tau = _scale_prior(p[_FT], p[_ST], p[_NUT], tau)
    lp_sig, d_sig = _scale_prior(p[_FS], p[_SS2], p[_NUS], sigma)
    grad[0] = scale * (g_mu - e / p[_SMU])
    grad[1] = 2.0 * t2 * g_t2 + tau * d_tau + 1.0
    grad[2] = 2.0 * s2 * g_s2 + sigma * d_sig + 1.0
    return ll - 0.5 * e * e + lp_tau + lp_sig + z[1] + z[2] + p[_CONST]


@numba.njit(cache=True, error_model="numpy")
def _expand(z, p, out):
    tau = math.exp(z[1] + p[_LOGSCALE])
    sigma = math.exp(z[2] + p[_LOGSCALE])
    out[0], out[1], out[2] = z[0], z[1], z[2]
    out[3] = p[_CENTER] + p[_SCALE] * z[0]
    out[4], out[5] = tau, sigma
    out[6] = tau * tau / (tau * tau + sigma * sigma)  # models.shares.icc in numba (tested equal)


@numba.njit(cache=True, error_model="numpy")
def _block(user_data):
    head = numba.carray(user_data, (HEADER,), dtype=np.float64)
    return numba.carray(user_data, (int(head[_SIZE]),), dtype=np.float64)


_N_EXPANDED = len(EXPANDED)


@numba.cfunc(LOGP_SIGNATURE, cache=True)
def _c_logp(dim, x_, out_, logp_, user_data):
    """Nutpie's logp callback: 0 on success, 3/4 for a non-finite gradient/value."""
    if dim != N_DIM:
        return -1
    out = numba.carray(out_, (N_DIM,))
    value = _logp_grad(numba.carray(x_, (N_DIM,)), _block(user_data), out)
    return logp_status(value, out, logp_)


@numba.cfunc(EXPAND_SIGNATURE, cache=True)
def _c_expand(dim, expanded, x_, out_, user_data):
    """Nutpie's expand callback: unconstrained point -> the :data:`EXPANDED` values."""
    if dim != N_DIM or expanded != _N_EXPANDED:
        return -1
    _expand(numba.carray(x_, (N_DIM,)), _block(user_data), numba.carray(out_, (_N_EXPANDED,)))
    return 0


def logp_and_grad(z: np.ndarray, block: np.ndarray) -> tuple[float, np.ndarray]:
    """The compiled log density and gradient at unconstrained ``z`` (for tests and checks)."""
    grad = np.empty(N_DIM)
    value = _logp_grad(np.asarray(z, dtype=np.float64), block, grad)
    return float(value), grad


def to_unconstrained(priors: Priors, mu: float, tau: float, sigma: float) -> np.ndarray:
    """(mu, tau, sigma) -> the sampler's coordinates z."""
    return np.array([(mu - priors.center) / priors.scale, math.log(tau / priors.scale),
                     math.log(sigma / priors.scale)])


def _support_z(priors: Priors) -> np.ndarray:
    """PyMC's initial point before jitter: each prior's support point, in the z coordinates."""
    return to_unconstrained(priors, priors.mu.loc, priors.tau.scale, priors.sigma.scale)


def compile_sufficient(stats: GroupStats, priors: Priors, *, k: int = 0):
    """A nutpie model of the univariate ``sufficient`` posterior for response ``k``.

    Returns a ``nutpie.compile_pymc.CompiledPyMCModel`` (sample it with ``nutpie.sample``)
    whose posterior has the variables of :data:`EXPANDED`, as ``build_sufficient`` compiled by
    nutpie has. Initial points are PyMC's: the priors' support points jittered by U(-1, 1) in
    the unconstrained coordinates.
    """
    from varcomp.models.compiled.nutpie import nutpie_model

    return nutpie_model([(name, ()) for name in EXPANDED], parameter_block(stats, priors, k),
                        _c_logp, _c_expand, _support_z(priors))
