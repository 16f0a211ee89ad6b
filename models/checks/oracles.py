"""Independent oracles: log densities written from the definitions with scipy.

None is written from the package's own code: the stacked-vector MvNormal of each cluster; the
LKJ-Cholesky prior by change of variables with a complex-step Jacobian; an LKJ sampler by the
C-vine method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import special, stats

from varcomp.models.data import ClusteredData
from varcomp.models.priors import MvPriors

__all__ = ["lkj_corr_draw", "lkj_logpdf", "mv_prior_draw", "mv_prior_logpdf",
           "pymc_lkj_constant_offset", "pymc_lkj_offset", "scale_prior_logpdf", "scipy_loglik",
           "scipy_loglik_mv"]


def _cluster_blocks(y: np.ndarray, codes: np.ndarray) -> dict[int, np.ndarray]:
    """``{k: (clusters of size k, k) responses}``, clusters in code order."""
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ys = y[order]
    out = {}
    for k in np.unique(sizes[sizes > 0]):
        g = np.flatnonzero(sizes == k)
        out[int(k)] = ys[starts[g][:, None] + np.arange(k)[None, :]]
    return out


def scipy_loglik(data: ClusteredData, mu: float, tau: float, sigma: float, k: int = 0) -> float:
    r"""Ground truth: :math:`\sum_l \log \mathrm{MVN}(x_l; \mu 1, \sigma^2 I + \tau^2 11^\top)`.

    Evaluated with ``scipy.stats.multivariate_normal`` on each cluster's stacked vector (one
    covariance per distinct cluster size), independent of :mod:`models.density`.
    """
    total = 0.0
    for size, block in _cluster_blocks(data.y[:, k], data.codes).items():
        cov = sigma**2 * np.eye(size) + tau**2 * np.ones((size, size))
        total += float(np.sum(stats.multivariate_normal(np.full(size, mu), cov).logpdf(block)))
    return total


def scipy_loglik_mv(data: ClusteredData, mu, V, Sigma) -> float:
    r"""Ground truth: the multivariate model's log-likelihood of ``data`` at (mu, V, Sigma).

    :math:`\sum_l \log\mathrm{MVN}(x_l[O_l];\ (1\otimes\mu)[O_l],\
    (I\otimes\Sigma + 11^\top\otimes V)[O_l, O_l])`.

    Each cluster's observed components stacked (missing ones left out, which integrates them
    out), evaluated with ``scipy.stats.multivariate_normal``; independent of
    :mod:`models.mvstats` or :mod:`models.forms.multivariate`.
    """
    mu, V, Sigma = (np.asarray(a, dtype=np.float64) for a in (mu, V, Sigma))
    total = 0.0
    for g in range(data.n_groups):
        y = data.y[data.codes == g]
        r, k = np.nonzero(np.isfinite(y))
        cov = V[np.ix_(k, k)] + (r[:, None] == r[None, :]) * Sigma[np.ix_(k, k)]
        total += float(stats.multivariate_normal(mu[k], cov).logpdf(y[r, k]))
    return total


def lkj_corr_draw(p: int, eta: float, rng: np.random.Generator) -> np.ndarray:
    """One correlation matrix from LKJ(eta) by the C-vine method (Lewandowski et al. 2009).

    Partial correlations P[k, i] (k < i) are independent 2 Beta(b_k, b_k) - 1 with
    b_k = eta + (p - 2 - k) / 2 and are turned into correlations by the vine recursion. For
    p = 2 this is (r + 1) / 2 ~ Beta(eta, eta); in general every r_ij has
    (r + 1) / 2 ~ Beta(eta - 1 + p / 2, eta - 1 + p / 2) (the tests check both).
    """
    P = np.zeros((p, p))
    R = np.eye(p)
    beta = eta + (p - 1) / 2.0
    for k in range(p - 1):
        beta -= 0.5
        for i in range(k + 1, p):
            P[k, i] = 2.0 * rng.beta(beta, beta) - 1.0
            r = P[k, i]
            for m in range(k - 1, -1, -1):
                r = r * math.sqrt((1.0 - P[m, i] ** 2) * (1.0 - P[m, k] ** 2)) + P[m, i] * P[m, k]
            R[k, i] = R[i, k] = r
    return R


def _lkj_log_norm(p: int, eta: float) -> float:
    """Log of the LKJ(eta) normalising constant c_p: density det(R)^(eta - 1) / c_p."""
    out = 0.0
    for k in range(1, p):
        b = eta + (p - k - 1) / 2.0
        out += (2.0 * eta - 2.0 + p - k) * (p - k) * math.log(2.0) + (p - k) * special.betaln(b, b)
    return out


def _packed_to_sd_corr(packed: np.ndarray, p: int) -> np.ndarray:
    """(packed lower Cholesky factor) -> (sds, correlations above the diagonal).

    Analytic, so complex arguments give its Jacobian by complex-step differentiation.
    """
    L = np.zeros((p, p), dtype=packed.dtype)
    L[np.tril_indices(p)] = packed
    sd = np.sqrt(np.sum(L * L, axis=1))
    W = L / sd[:, None]
    R = W @ W.T
    return np.concatenate([sd, R[np.triu_indices(p, 1)]])


def _lkj_cholesky_logpdf(packed: np.ndarray, p: int, eta: float, sd_scale) -> float:
    r"""Log density of a packed Cholesky factor L = chol(diag(s) R diag(s)).

    With s_k ~ HalfNormal(sd_scale_k) and R ~ LKJ(eta), by change of variables:
    log p(L) = log p(s) + log p_LKJ(R) + log |d(s, r) / dL|, the Jacobian computed by
    complex-step differentiation (exact to rounding). Independent of PyMC's closed form.
    """
    packed = np.asarray(packed, dtype=np.float64)
    h = 1e-30
    J = np.empty((packed.size, packed.size))
    for j in range(packed.size):
        x = packed.astype(np.complex128)
        x[j] += 1j * h
        J[:, j] = _packed_to_sd_corr(x, p).imag / h
    sc = _packed_to_sd_corr(packed, p)
    sd, r = sc[:p], sc[p:]
    R = np.eye(p)
    R[np.triu_indices(p, 1)] = r
    R = R + np.triu(R, 1).T
    lkj = (eta - 1.0) * np.linalg.slogdet(R)[1] - _lkj_log_norm(p, eta)
    log_sd = float(np.sum(stats.halfnorm(scale=np.asarray(sd_scale)).logpdf(sd)))
    return log_sd + float(lkj) + float(np.linalg.slogdet(J)[1])


def pymc_lkj_constant_offset(priors: MvPriors) -> float:
    """PyMC's prior terms minus the true prior density: a constant, from the LKJ normaliser.

    PyMC 5.28's ``_lkj_normalizing_constant`` returns +log c_p(eta) where the density needs
    -log c_p(eta) (``pm.LKJCorr.dist(n=2, eta=1)`` has logp +log 2 at every r, but the
    density of r is 1/2; the same bug as pymc-devs/pymc#1042 and the one Stan fixed in
    stan-dev/math#628), partly in float32. Per LKJ term the offset is PyMC's constant plus
    log c_p(eta): independent of the parameters, so no posterior moves, but whole log
    densities differ. Returns the sum over the V and Sigma terms.
    """
    return sum(pymc_lkj_offset(priors.p, eta) for eta in (priors.eta_between, priors.eta_within))


def mv_prior_logpdf(priors: MvPriors, values: Mapping[str, np.ndarray]) -> float:
    """The prior log density of the sampler's variables (numpy, independent of PyMC).

    ``values``: ``mu`` and the packed standardised factors ``chol_V_std``, ``chol_Sigma_std``
    (as :meth:`MvPriors.point` gives them). Equals the PyMC model's prior terms without
    Jacobians.
    """
    scale = np.asarray(priors.scale)
    out = float(np.sum(stats.norm(priors.mu_loc, priors.mu_scale).logpdf(values["mu"])))
    for name, sds, eta in (("V", priors.tau_scale, priors.eta_between),
                           ("Sigma", priors.sigma_scale, priors.eta_within)):
        out += _lkj_cholesky_logpdf(values[f"chol_{name}_std"], priors.p, eta,
                                    np.asarray(sds) / scale)
    return out


def mv_prior_draw(priors: MvPriors, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One draw of (mu, V, Sigma) from ``priors`` (numpy, independent of PyMC).

    mu_k ~ Normal(mu_loc_k, mu_scale_k); V = diag(tau) Omega diag(tau) with
    tau_k ~ HalfNormal(tau_scale_k), Omega ~ LKJ(eta_between) (:func:`lkj_corr_draw`); Sigma
    likewise. This is the prior of :meth:`MvPriors.create` (its LKJCholeskyCov on the
    standardised scale is HalfNormal(s / scale) sds times ``scale``).
    """
    p = priors.p
    mu = rng.normal(np.asarray(priors.mu_loc), np.asarray(priors.mu_scale))
    out = {"mu": mu}
    for name, sds, eta in (("V", priors.tau_scale, priors.eta_between),
                           ("Sigma", priors.sigma_scale, priors.eta_within)):
        s = np.abs(rng.normal(0.0, 1.0, p)) * np.asarray(sds)
        out[name] = s[:, None] * lkj_corr_draw(p, eta, rng) * s[None, :]
    return out


def scale_prior_logpdf(prior, x) -> float:
    """Log density of a scale prior at ``x`` from scipy's distributions, summed.

    ``prior``: a :class:`models.priors.ScalePrior` (family, scale, nu); the half-t as twice the
    t density.
    """
    x = np.asarray(x, dtype=np.float64)
    s = prior.scale
    dist = {"halfnormal": lambda: stats.halfnorm(scale=s).logpdf(x),
            "halfstudentt": lambda: math.log(2.0) + stats.t(prior.nu, scale=s).logpdf(x),
            "halfcauchy": lambda: stats.halfcauchy(scale=s).logpdf(x),
            "exponential": lambda: stats.expon(scale=s).logpdf(x)}[prior.family]
    return float(np.sum(dist()))


def lkj_logpdf(R: np.ndarray, eta: float) -> float:
    """The LKJ(eta) log density of the correlation matrix ``R``, with its correct constant."""
    return float((eta - 1.0) * np.linalg.slogdet(R)[1] - _lkj_log_norm(R.shape[0], eta))


def pymc_lkj_offset(n: int, eta: float) -> float:
    """PyMC 5.28's ``LKJCorr(n, eta)`` log density minus the correct one: 2 log c_n.

    A constant (see :func:`pymc_lkj_constant_offset`), read from PyMC's own constant.
    """
    from pymc.distributions.multivariate import _lkj_normalizing_constant

    return float(_lkj_normalizing_constant(float(eta), n).eval(mode="FAST_COMPILE")) \
        + _lkj_log_norm(n, float(eta))
