r"""The checks of :mod:`models.checks` for the multivariate (p-outcome) forms.

- :func:`compare_logp_mv`: the four forms' log-likelihoods (latent effects integrated out
  exactly) and the numpy information form equal ``scipy.stats.multivariate_normal`` on each
  cluster's stacked observed vector, covariance :math:`(I \otimes \Sigma + 11^\top \otimes
  V)[O, O]` restricted to the observed components O, to relative 1e-9, including rows with
  missing outcomes; the prior terms equal an independent numpy prior density
  (:func:`mv_prior_logpdf`).
- Posterior agreement: :func:`models.checks.compare_posteriors` itself, which compares
  ``mu``, ``V``, ``Sigma`` (upper triangles), ``icc``, ``corr_between`` and ``corr_within``
  (off-diagonal) when the fits are multivariate (:data:`MV_SUMMARY_VARS`).
- :func:`sbc_mv`: simulation-based calibration of ``sufficient`` (compiled once, data swapped),
  with prior draws from a numpy sampler of :class:`~models.priors.MvPriors`
  (:func:`mv_prior_draw`, LKJ by the C-vine method).
- Power: :func:`build_broken_V_not_scaled_by_n`, a deliberately wrong model, fails both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special, stats

from models import multivariate as mv
from models.checks import (CheckResult, SBCResult, _constrained_logp, _DataSwapper, _sbc_fit,
                           rank_table)
from models.data import ClusteredData, DataError
from models.priors import MvPriors
from models.simulate import Simulated, cluster_sizes
from models.simulate_mv import simulate_multivariate

__all__ = [
    "BROKEN_MV",
    "MV_DATA_FORMS",
    "MV_SUMMARY_VARS",
    "SBC_MV_PRIORS",
    "build_broken_V_not_scaled_by_n",
    "build_data_model_mv",
    "compare_logp_mv",
    "data_updates_mv",
    "lkj_corr_draw",
    "mv_loglik_draws",
    "mv_prior_draw",
    "mv_prior_logpdf",
    "pymc_lkj_constant_offset",
    "sbc_mv",
    "scipy_loglik_mv",
]

MV_SUMMARY_VARS = ("mu", "V", "Sigma", "icc", "corr_between", "corr_within")
"""What :func:`models.checks.compare_posteriors` compares for multivariate fits (matrices by
their upper triangle, correlations off the diagonal only)."""
MV_PRIOR_VARS = ("mu", "chol_V_std", "chol_Sigma_std")


# ============================================================================ exact log densities
def scipy_loglik_mv(data: ClusteredData, mu, V, Sigma) -> float:
    r"""Ground truth: :math:`\sum_l \log\mathrm{MVN}(x_l[O_l];\ (1\otimes\mu)[O_l],\
    (I\otimes\Sigma + 11^\top\otimes V)[O_l, O_l])`.

    Each cluster's observed components stacked (missing ones left out, which integrates them
    out), evaluated with ``scipy.stats.multivariate_normal``; independent of
    :mod:`models.multivariate`.
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
    """log of the LKJ(eta) normalising constant c_p: density det(R)^(eta - 1) / c_p."""
    out = 0.0
    for k in range(1, p):
        b = eta + (p - k - 1) / 2.0
        out += (2.0 * eta - 2.0 + p - k) * (p - k) * math.log(2.0) + (p - k) * special.betaln(b, b)
    return out


def _packed_to_sd_corr(packed: np.ndarray, p: int) -> np.ndarray:
    """(packed lower Cholesky factor) -> (sds, correlations above the diagonal); analytic,
    so complex arguments give its Jacobian by complex-step differentiation."""
    L = np.zeros((p, p), dtype=packed.dtype)
    L[np.tril_indices(p)] = packed
    sd = np.sqrt(np.sum(L * L, axis=1))
    W = L / sd[:, None]
    R = W @ W.T
    return np.concatenate([sd, R[np.triu_indices(p, 1)]])


def _lkj_cholesky_logpdf(packed: np.ndarray, p: int, eta: float, sd_scale) -> float:
    r"""Log density of a packed Cholesky factor L = chol(diag(s) R diag(s)) with
    s_k ~ HalfNormal(sd_scale_k) and R ~ LKJ(eta), by change of variables:
    log p(L) = log p(s) + log p_LKJ(R) + log |d(s, r) / dL|, the Jacobian computed by
    complex-step differentiation (exact to rounding). Independent of PyMC's closed form."""
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
    from pymc.distributions.multivariate import _lkj_normalizing_constant

    return float(sum(float(_lkj_normalizing_constant(float(eta), priors.p).eval(
        mode="FAST_COMPILE")) + _lkj_log_norm(priors.p, float(eta))
        for eta in (priors.eta_between, priors.eta_within)))


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


def _integrated_loglik_mv(model, data: ClusteredData, priors: MvPriors,
                          mode: str | None) -> Callable:
    r"""``f(mu, V, Sigma) -> (log p(X | mu, V, Sigma), PyMC prior terms)`` from ``model``'s logp.

    The model's whole log density (no Jacobian) minus its own prior terms of mu, chol_V_std,
    chol_Sigma_std. Latent forms are integrated exactly by the Gaussian identity
    log p(X) = log p(X, M_hat) + sum_l 1/2 log|2 pi C_l|, with M_hat_l and C_l the conditional
    mean and covariance of M_l given the cluster's observed data
    (:func:`models.multivariate.cluster_conditional`; log p(X, M) is quadratic in M with
    Hessian -C^-1). The non-centred latent o_l = L_V^-1 M_l has density |L_V| p_M(L_V o_l),
    so its joint is corrected by -L log|L_V|.
    """
    fn, names = _constrained_logp(model, mode, prior_names=MV_PRIOR_VARS)
    stats_ = mv.pattern_stats(data)
    latent = next((v for v in ("group_mean", "group_effect_offset") if v in names), None)

    def f(mu, V, Sigma):
        point = priors.point(mu, V, Sigma)
        correction = 0.0
        if latent is not None:
            mean, root = mv.cluster_conditional(stats_, mu, V, Sigma)
            correction = float(np.linalg.slogdet(root)[1].sum()
                               + 0.5 * data.n_groups * data.p * math.log(2.0 * math.pi))
            Lv = np.linalg.cholesky(V)
            if latent == "group_mean":
                point[latent] = np.asarray(mu) + mean
            else:
                point[latent] = np.linalg.solve(Lv, mean.T).T
                correction -= data.n_groups * float(np.log(np.diag(Lv)).sum())
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def _mv_points(data: ClusteredData, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (mu, V, Sigma): Sigma near the within-cluster covariance's scale, tau/sigma
    log-spaced 1e-4..1e2, correlations from LKJ(2)."""
    p = data.p
    st = mv.pattern_stats(data)
    q = st.complete_index
    sd_w = np.nanstd(data.y, axis=0, ddof=1)
    if q is not None:
        dof = st.n[:, q].sum() - (st.n[:, q] > 0).sum()
        if dof > p:
            sd_w = np.sqrt(np.diag(st.scatter[q]) / dof)
    sd_w = np.where(np.isfinite(sd_w) & (sd_w > 0), sd_w, 1.0)
    center = np.nanmean(data.y, axis=0)
    spread = np.nanstd(data.y, axis=0)
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)
    rng.shuffle(ratio)
    out = []
    for r in ratio:
        s = sd_w * np.exp(rng.uniform(-1.0, 1.0, p))
        t = r * s * np.exp(rng.uniform(-0.5, 0.5, p))
        Sigma = s[:, None] * lkj_corr_draw(p, 2.0, rng) * s[None, :]
        V = t[:, None] * lkj_corr_draw(p, 2.0, rng) * t[None, :]
        out.append({"mu": center + spread * rng.normal(size=p), "V": V, "Sigma": Sigma,
                    "tau_over_sigma": float(r)})
    return out


def compare_logp_mv(
    data: ClusteredData,
    names: Sequence[str] | None = None,
    n_points: int = 10,
    seed: int = 0,
    rtol: float = 1e-9,
    *,
    priors: MvPriors | None = None,
    builders: Mapping[str, Callable] | None = None,
    mode: str | None = "FAST_COMPILE",
) -> CheckResult:
    r"""The multivariate log-likelihoods agree with scipy's MvNormal on the stacked vectors.

    At ``n_points`` random (mu, V, Sigma) (:func:`_mv_points`: tau/sigma log-spaced over
    1e-4..1e2, LKJ(2) correlations) each form's log-likelihood (its whole log density without
    Jacobian minus its own prior terms; latent effects integrated out exactly, see
    :func:`_integrated_loglik_mv`) and the numpy information form
    (:func:`models.multivariate.marginal_loglik`, reported as ``numpy``) must equal
    :func:`scipy_loglik_mv` to relative ``rtol``. Rows with missing outcomes are part of it:
    scipy's truth stacks only the observed components. The PyMC prior terms are checked
    separately against the independent :func:`mv_prior_logpdf` (complex-step Jacobian, LKJ
    normaliser of Lewandowski et al.): after removing PyMC's wrong-signed LKJ constant
    (:func:`pymc_lkj_constant_offset`, reported in ``details["prior_constant_offset"]``) they
    must agree to relative ``rtol`` (``details["prior_max_rel_err"]``).

    Parameters mirror :func:`models.checks.compare_logp`; ``builders`` adds
    ``name -> builder(data, *, priors)`` (e.g. :data:`BROKEN_MV`); ``mode`` is the PyTensor
    mode of the compiled densities (FAST_COMPILE: no C compilation for ~10 evaluations).

    Returns
    -------
    CheckResult
        ``table``: one row per point (tau/sigma, truth, each form's value and relative
        error); ``details``: ``max_rel_err`` per form, ``failed``, ``prior_max_rel_err``.
    """
    from models import PARAMETERISATIONS

    if data.p < 2:
        raise ValueError("compare_logp_mv is for multivariate data; use compare_logp")
    priors = priors or MvPriors.default(data)
    chosen = {nm: PARAMETERISATIONS[nm] for nm in (PARAMETERISATIONS if names is None else names)}
    chosen.update(builders or {})
    funcs = {nm: _integrated_loglik_mv(b(data, priors=priors), data, priors, mode)
             for nm, b in chosen.items()}
    points = _mv_points(data, n_points, np.random.default_rng(seed))
    st = mv.pattern_stats(data)
    truth = np.array([scipy_loglik_mv(data, x["mu"], x["V"], x["Sigma"]) for x in points])
    offset = pymc_lkj_constant_offset(priors)
    prior_np = np.array([mv_prior_logpdf(priors, priors.point(x["mu"], x["V"], x["Sigma"]))
                         for x in points]) + offset
    table = pd.DataFrame({"tau_over_sigma": [x["tau_over_sigma"] for x in points],
                          "truth": truth})
    values = {"numpy": np.array([mv.marginal_loglik(st, x["mu"], x["V"], x["Sigma"])
                                 for x in points])}
    prior_rel = {}
    for nm, f in funcs.items():
        out = np.array([f(x["mu"], x["V"], x["Sigma"]) for x in points])
        values[nm] = out[:, 0]
        prior_rel[nm] = float(np.max(np.abs(out[:, 1] - prior_np) / np.abs(prior_np)))
    max_rel = {}
    for nm, vals in values.items():
        rel = np.abs(vals - truth) / np.abs(truth)
        rel[~np.isfinite(vals)] = np.inf
        table[nm] = vals
        table[f"rel_err_{nm}"] = rel
        max_rel[nm] = float(rel.max())
    failed = [nm for nm, r in max_rel.items() if not r <= rtol]
    prior_failed = [nm for nm, r in prior_rel.items() if not r <= rtol]
    n_missing = int((~np.isfinite(data.y)).any(axis=1).sum())
    lines = [f"multivariate log-likelihood vs scipy MvNormal of the stacked observed vectors at "
             f"{n_points} points, tau/sigma 1e-4..1e2 ({data.n_groups} clusters, p = {data.p}, "
             f"{n_missing} of {data.n_obs} rows partly missing)"]
    lines += [f"{nm}: max relative error {r:.1e} {'ok' if r <= rtol else 'FAILS'} (rtol {rtol:g})"
              for nm, r in max_rel.items()]
    lines.append(f"PyMC prior terms vs numpy LKJ-Cholesky density: max relative error "
                 f"{max(prior_rel.values()):.1e} "
                 f"{'ok' if not prior_failed else 'FAILS for ' + ', '.join(prior_failed)}"
                 f" after PyMC's constant {offset:+.6f} (its LKJ normaliser has the wrong sign)")
    return CheckResult("compare_logp_mv", not failed and not prior_failed, table,
                       "\n".join(lines),
                       {"max_rel_err": max_rel, "failed": failed + [
                           f"{nm} (prior)" for nm in prior_failed if nm not in failed],
                        "rtol": rtol, "prior_max_rel_err": prior_rel,
                        "prior_constant_offset": offset,
                        "rows_partly_missing": n_missing})


# ============================================================================ data-container models
MV_DATA_FORMS = ("sufficient", "broken_V_not_scaled_by_n")


def _design(data: ClusteredData) -> mv.PatternStats:
    return mv.pattern_stats(data)


def build_data_model_mv(name: str, data: ClusteredData, *, priors: MvPriors | None = None):
    """The multivariate ``sufficient`` form with its statistics in ``pm.Data`` (compile once).

    The same density, priors and sampler coordinates as
    :func:`models.multivariate.build_sufficient` (it calls the same
    :func:`~models.multivariate.sufficient_loglik`), with the per-pattern cluster means
    (``pattern_mean``) and pooled scatters (``pattern_scatter``) as data containers, so one
    compilation serves every data set of the same design: the same clusters, sizes and rows
    missing the same outcomes (:func:`data_updates_mv` refuses any other).
    ``"broken_V_not_scaled_by_n"`` is :func:`build_broken_V_not_scaled_by_n`.
    """
    import pymc as pm

    if name not in MV_DATA_FORMS:
        raise ValueError(f"unknown form '{name}'; choose one of {', '.join(MV_DATA_FORMS)}")
    model, priors = mv._start(data, priors)
    st = _design(data)
    with model:
        stats_ = mv.PatternStats(st.patterns, st.row_pattern, st.n,
                                 pm.Data("pattern_mean", st.mean),
                                 pm.Data("pattern_scatter", st.scatter))
        mu, chol_V, chol_Sigma = priors.create()
        if name == "broken_V_not_scaled_by_n":  # the deliberate bug
            n_bar = float(data.sizes.mean())
            chol_V = chol_V / math.sqrt(n_bar)
        pm.Potential("loglik", mv.sufficient_loglik(stats_, mu, chol_V, chol_Sigma))
    packed = np.zeros(data.p * (data.p + 1) // 2)  # as build_sufficient: distinct eigenvalues
    rows, cols = np.tril_indices(data.p)
    packed[rows == cols] = 0.5 * (1.0 + np.arange(data.p) / data.p)
    model.set_initval(model["chol_V_std"], packed)
    return model


def data_updates_mv(name: str, data: ClusteredData,
                    design: mv.PatternStats | None = None) -> dict[str, np.ndarray]:
    """Values of :func:`build_data_model_mv`'s containers for ``data``.

    With ``design`` (the template's :class:`~models.multivariate.PatternStats`), refuses data
    whose row patterns or per-(cluster, pattern) counts differ: the compiled graph holds them.
    """
    st = _design(data)
    if design is not None and (st.patterns.shape != design.patterns.shape
                               or not np.array_equal(st.patterns, design.patterns)
                               or not np.array_equal(st.n, design.n)):
        raise DataError("the data's design (clusters, sizes, missing outcomes) differs from the "
                        "compiled model's; rebuild the model for it")
    return {"pattern_mean": st.mean, "pattern_scatter": st.scatter}


def build_broken_V_not_scaled_by_n(data: ClusteredData, *, priors: MvPriors | None = None):
    r"""Build a DELIBERATELY WRONG model, to prove the checks have power: V not scaled by n.

    The likelihood uses V / n_bar (n_bar the mean cluster size) in place of V, so for a
    balanced design with complete rows it is

    .. math::
        \log|\Sigma + V| \text{ and } (\Sigma + V)^{-1} \text{ where }
        \log|\Sigma + n V|,\ (\Sigma + n V)^{-1} \text{ belong} \quad (\text{wrong}).

    Otherwise identical to ``sufficient`` (:func:`build_data_model_mv`).
    :func:`compare_logp_mv` and :func:`sbc_mv` must fail it; never use it for inference.
    """
    return build_data_model_mv("broken_V_not_scaled_by_n", data, priors=priors)


BROKEN_MV = {"broken_V_not_scaled_by_n": build_broken_V_not_scaled_by_n}


# ============================================================================ SBC
SBC_MV_PRIORS = MvPriors(mu_loc=(0.0, 0.0), mu_scale=(1.0, 1.0), tau_scale=(1.0, 1.0),
                         sigma_scale=(1.0, 1.0), eta_between=2.0, eta_within=2.0,
                         center=(0.0, 0.0), scale=(1.0, 1.0))
"""Fixed (not data-scaled) bivariate priors for SBC: the defaults' families on unit scales."""


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


def mv_loglik_draws(stats_: mv.PatternStats, mu, V, Sigma) -> np.ndarray:
    """log p(X | mu, V, Sigma) for stacks of draws: ``mu`` (..., p), ``V``, ``Sigma`` (..., p, p).

    The information form of :func:`models.multivariate.marginal_loglik`, vectorised over the
    leading axes (SBC's data-dependent test quantity).
    """
    mu, V, Sigma = (np.asarray(a, dtype=np.float64) for a in (mu, V, Sigma))
    A, logdet, _, quad, K, c = mv._information_np(stats_, mu, V, Sigma)
    N = stats_.n.sum(axis=0)
    dims = stats_.patterns.sum(axis=1)
    const = (-0.5 * N * dims * mv.LOG_2PI - 0.5 * N * logdet
             - 0.5 * np.einsum("...qij,qij->...q", A, stats_.scatter))
    R = np.linalg.cholesky(K)
    w = np.linalg.solve(R, c[..., None])[..., 0]
    logdet_K = 2.0 * np.log(np.diagonal(R, axis1=-2, axis2=-1)).sum(axis=-1)
    return const.sum(-1) + np.sum(-0.5 * quad - 0.5 * logdet_K + 0.5 * (w * w).sum(-1), axis=-1)


def _sbc_quantities(theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{label: (...) array}: mu[k], V[k,k], Sigma[k,k], icc[k], corr_between/within[i,j]."""
    mu, V, S = (np.asarray(theta[k]) for k in ("mu", "V", "Sigma"))
    p = mu.shape[-1]
    out = {}
    for k in range(p):
        out[f"mu[{k}]"] = mu[..., k]
    for k in range(p):
        out[f"V[{k},{k}]"] = V[..., k, k]
    for k in range(p):
        out[f"Sigma[{k},{k}]"] = S[..., k, k]
    for k in range(p):
        out[f"icc[{k}]"] = V[..., k, k] / (V[..., k, k] + S[..., k, k])
    for name, M in (("corr_between", V), ("corr_within", S)):
        for i in range(p):
            for j in range(i + 1, p):
                out[f"{name}[{i},{j}]"] = M[..., i, j] / np.sqrt(M[..., i, i] * M[..., j, j])
    return out


def _fixed_mask(frame: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the template's missing cells set missing (the same design)."""
    out = frame.copy()
    cols = [c for c in frame.columns if c != "group"]
    values = out[cols].to_numpy(dtype=np.float64, copy=True)
    values[~np.isfinite(template[cols].to_numpy(dtype=np.float64))] = np.nan
    out[cols] = values
    return out


def sbc_mv(
    n_sims: int,
    *,
    form: str = "sufficient",
    L: int = 8,
    n: int | Sequence[int] = 5,
    missing: float = 0.0,
    priors: MvPriors = SBC_MV_PRIORS,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
    alpha: float = 0.05,
    cores: int | None = None,
    backend: str = "numba",
) -> SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018) of the multivariate ``sufficient`` form.

    Each simulation draws (mu, V, Sigma) from ``priors`` (:func:`mv_prior_draw`, fixed, not
    data-scaled), simulates data of one design (``L`` clusters of sizes ``n``; with
    ``missing`` > 0 a fixed set of cells, drawn once by
    :func:`models.simulate_mv.drop_components`, is missing in every data set), fits it with
    nutpie (the model compiled once, :func:`build_data_model_mv`, data swapped by
    :class:`models.checks._DataSwapper`), keeps every ``thin``-th draw (M = chains * draws /
    thin) and ranks the truth among them for mu[k], the diagonal variances V[k,k] and
    Sigma[k,k], icc[k], corr_between, corr_within and the log-likelihood
    log p(X | mu, V, Sigma) (:func:`mv_loglik_draws`; Modrak et al. 2023). Each rank is
    uniform on {0..M} if the fit is exact; :func:`models.checks.rank_uniformity` tests each
    quantity at ``alpha / Q`` (Bonferroni over the Q = 11 quantities for p = 2), so the
    family-wise false-alarm rate of ``passed`` is at most ``alpha`` (5% by default).

    Returns
    -------
    SBCResult
        ``passed`` iff every quantity's ECDF p-value >= alpha / Q.
    """
    from threadpoolctl import threadpool_limits

    from models.sampling import _quiet
    from models.simulate_mv import drop_components

    if form not in MV_DATA_FORMS:
        raise ValueError(f"unknown form '{form}'; choose one of {', '.join(MV_DATA_FORMS)}")
    if draws % thin:
        raise ValueError(f"draws ({draws}) must be a multiple of thin ({thin})")
    if n_sims < 1:
        raise ValueError("n_sims must be a positive integer")
    p = priors.p
    sizes = cluster_sizes(L, n)
    rng = np.random.default_rng(seed)
    template = simulate_multivariate(L, sizes, np.zeros(p), np.eye(p), np.eye(p), rng)
    frame0 = drop_components(template.frame, missing, rng) if missing > 0 else template.frame
    tdata = Simulated(frame0, template.effects, template.params).data()
    design = _design(tdata)
    swap = _DataSwapper(build_data_model_mv(form, tdata, priors=priors), form, backend,
                        updates=lambda name, d: data_updates_mv(name, d, design))
    n_ranks = chains * draws // thin
    quantities = None
    ranks, sims = [], []
    with _quiet(), threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_sims):
            theta = mv_prior_draw(priors, rng)
            sim = simulate_multivariate(L, sizes, theta["mu"], theta["V"], theta["Sigma"], rng)
            data = Simulated(_fixed_mask(sim.frame, frame0), sim.effects, sim.params).data()
            st = _design(data)
            post, fit_stats = _sbc_fit(swap(data), rng, ("mu", "V", "Sigma"), draws=draws,
                                       tune=tune, chains=chains, cores=cores,
                                       target_accept=target_accept)
            kept = {v: post[v].values[:, ::thin].reshape(-1, *post[v].shape[2:])
                    for v in ("mu", "V", "Sigma")}
            draws_q = _sbc_quantities(kept)
            truth_q = _sbc_quantities(theta)
            draws_q["loglik"] = mv_loglik_draws(st, kept["mu"], kept["V"], kept["Sigma"])
            truth_q["loglik"] = float(mv_loglik_draws(st, theta["mu"], theta["V"],
                                                      theta["Sigma"]))
            quantities = list(draws_q)
            ranks.append({q: int(np.sum(draws_q[q] < truth_q[q])) for q in quantities})
            sims.append({**{f"true_{k}": float(v) for k, v in truth_q.items()}, **fit_stats})
    ranks_df = pd.DataFrame(ranks, columns=quantities)
    sims_df = pd.DataFrame(sims)
    alpha_q = alpha / len(quantities)
    table, pvals, band = rank_table(ranks_df, n_ranks, alpha_q, seed)
    passed = bool(table.passed.all())
    failing = list(table.quantity[~table.passed])
    div = int(sims_df.divergences.sum())
    med_ess = float(sims_df.min_ess_bulk.median())
    text = (f"SBC multivariate {form}: {n_sims} simulations, L={L}, p={p}"
            + (f", {missing:.0%} cells missing (fixed)" if missing > 0 else "")
            + f", ranks 0..{n_ranks} ({chains}x{draws} draws thinned by {thin}); ECDF p-values "
            + ", ".join(f"{q} {pvals[q]:.3f}" for q in quantities)
            + (f"; FAILS uniformity for {', '.join(failing)}" if failing else "; uniform")
            + f" at alpha {alpha:g} family-wise ({alpha_q:.2g} per quantity)"
            + f"; {div} divergences in total, median min ESS_bulk {med_ess:.0f}")
    if med_ess < n_ranks:
        text += f" (below the {n_ranks} kept draws: increase thin)"
    return SBCResult(f"sbc_mv_{form}", passed, table, text,
                     {"n_sims": n_sims, "L": L, "p": p, "sizes": sizes.tolist(),
                      "missing": missing, "alpha": alpha, "alpha_per_quantity": alpha_q,
                      "draws": draws, "tune": tune, "chains": chains, "thin": thin,
                      "target_accept": target_accept, "divergences": div},
                     ranks=ranks_df, n_ranks=n_ranks, pvalues=pvals, sims=sims_df, band=band)
