"""Exact log densities: every form of a family equals an independent oracle to 1e-9.

- :func:`compare_logp`: the log-likelihood of each form (its whole log density without Jacobian
  minus its own prior terms, latent effects integrated out exactly) equals scipy's MvNormal of
  each cluster's stacked vector (:mod:`models.checks.oracles`) at random points; the prior
  terms are compared with the numpy priors separately.
- :func:`compare_compiled`: the compiled form (:mod:`models.compiled`), what ``varcomp fit``
  samples, against the PyMC model it implements: gradients equal, log densities equal up to one
  constant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from varcomp.models import mvstats as mv
from varcomp.models.checks.base import CheckResult, constrained_logp
from varcomp.models.checks.oracles import (
    lkj_corr_draw,
    mv_prior_logpdf,
    pymc_lkj_constant_offset,
    scipy_loglik,
    scipy_loglik_mv,
)
from varcomp.models.data import ClusteredData
from varcomp.models.density import group_effect_conditional
from varcomp.models.forms import family_of
from varcomp.models.priors import MvPriors, Priors

__all__ = ["compare_compiled", "compare_logp", "integrated_loglik"]

MV_PRIOR_VARS = ("mu", "chol_V_std", "chol_Sigma_std")
MIXED_FAMILIES = ("regression", "nested", "crossed")


def integrated_loglik(model, data: ClusteredData, mode: str | None = None,
                      priors=None) -> Callable[[float, float, float], tuple]:
    r"""``f(mu, tau, sigma) -> (log p(X | mu, tau, sigma), prior)`` from ``model``'s own logp.

    The likelihood is the model's whole log density minus its own prior terms of mu, tau and
    sigma (also returned, to compare with :meth:`Priors.logpdf`), with the group effects
    integrated out exactly. For Gaussian latents the identity
    :math:`\log p(X) = \log p(X, \hat M) + \sum_l \tfrac12 \log(2\pi v_l)` holds, with
    :math:`\hat M_l, v_l` the conditional mean and variance of M_l given the data
    (:func:`models.density.group_effect_conditional`): log p(X, M) is quadratic in M with
    curvature 1 / v_l. The non-centred model's latent is the offset o = M / tau, whose density
    is tau times M's (p_o(o) = tau p_M(tau o)), so its joint is corrected by -L log(tau) to
    compare densities in the M space. Models without latents need no correction.
    """
    priors = priors or Priors.default(data)
    fn, names = constrained_logp(model, mode, prior_names=priors.free_names)
    n = data.stats.n[:, 0].astype(np.float64)
    xbar = data.stats.mean[:, 0]
    if (n < 1).any():
        raise ValueError("every group needs at least one observation for the latent identity")
    latent = "group_effect" if "group_effect" in names else (
        "group_effect_offset" if "group_effect_offset" in names else None)

    def f(mu: float, tau: float, sigma: float) -> tuple[float, float]:
        point = dict(priors.free_point(mu, tau, sigma))
        correction = 0.0
        if latent is not None:
            m_hat, v = group_effect_conditional(n, xbar, mu, tau, sigma)
            correction = 0.5 * float(np.sum(np.log(2.0 * np.pi * v)))
            if latent == "group_effect":
                point[latent] = m_hat
            else:  # offset o = M / tau: p_o(o) = tau p_M(tau o), one factor per group
                point[latent] = m_hat / tau
                correction -= n.size * math.log(tau)
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def _logp_points(data: ClusteredData, priors: Priors, n_points: int,
                 rng: np.random.Generator) -> pd.DataFrame:
    """Random (mu, tau, sigma): sigma near the within-group sd, tau/sigma from 1e-4 to 1e2."""
    n, _, ss = data.stats.column(0)
    dof = n.sum() - n.size
    sigma0 = math.sqrt(ss.sum() / dof) if dof > 0 and ss.sum() > 0 else priors.scale
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)  # covers tau -> 0 and tau >> sigma
    rng.shuffle(ratio)
    sigma = sigma0 * np.exp(rng.uniform(-1.0, 1.0, n_points))
    mu = float(np.mean(data.y[:, 0])) + priors.scale * rng.normal(0.0, 1.0, n_points)
    return pd.DataFrame({"mu": mu, "tau": ratio * sigma, "sigma": sigma, "tau_over_sigma": ratio})


def _integrated_loglik_mv(model, data: ClusteredData, priors: MvPriors,
                          mode: str | None) -> Callable:
    r"""``f(mu, V, Sigma) -> (log p(X | mu, V, Sigma), PyMC prior terms)`` from ``model``'s logp.

    The model's whole log density (no Jacobian) minus its own prior terms of mu, chol_V_std,
    chol_Sigma_std. Latent forms are integrated exactly by the Gaussian identity
    log p(X) = log p(X, M_hat) + sum_l 1/2 log|2 pi C_l|, with M_hat_l and C_l the conditional
    mean and covariance of M_l given the cluster's observed data
    (:func:`models.mvstats.cluster_conditional`; log p(X, M) is quadratic in M with
    Hessian -C^-1). The non-centred latent o_l = L_V^-1 M_l has density |L_V| p_M(L_V o_l),
    so its joint is corrected by -L log|L_V|.
    """
    fn, names = constrained_logp(model, mode, prior_names=MV_PRIOR_VARS)
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
    """Random (mu, V, Sigma) points.

    Sigma near the within-cluster covariance's scale, tau/sigma log-spaced 1e-4..1e2,
    correlations from LKJ(2).
    """
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


def _builders(family, names: Sequence[str] | None) -> dict[str, Callable]:
    """``{name: builder(data, *, priors)}`` of the family's forms (all, or ``names``)."""
    names = list(family.forms) if names is None else list(names)
    def builder(build):
        return lambda data, priors: build(data, priors=priors)

    return {nm: builder(family.form(nm).build) for nm in names}


def compare_logp(
    data: ClusteredData,
    names: Sequence[str] | None = None,
    n_points: int = 20,
    seed: int = 0,
    rtol: float = 1e-9,
    *,
    priors: Priors | None = None,
    builders: Mapping[str, Callable] | None = None,
    mode: str | None = None,
) -> CheckResult:
    r"""Check that the registry's log densities agree with each other and with scipy's MvNormal.

    At ``n_points`` random (mu, tau, sigma) (tau / sigma log-spaced over 1e-4..1e2), each
    model's log-likelihood (its whole log density without Jacobian, minus its own prior terms,
    latent effects integrated out by :func:`integrated_loglik`) must equal
    :func:`scipy_loglik` to relative ``rtol``. The prior terms are compared separately with
    :meth:`Priors.logpdf` and reported (``details["prior_max_abs_diff"]``): PyMC's
    HalfStudentT computes log 2 in float32, a constant 2.0e-8 per term that cannot move a
    posterior but would swamp a 1e-9 comparison of whole densities.

    The multivariate family goes to :func:`compare_logp_mv` (the same check on each cluster's
    stacked observed vector, missing outcomes integrated out).

    Parameters
    ----------
    data : ClusteredData
        Univariate data (multivariate: see above).
    names : sequence of str, optional
        Forms to check (default: every form of the data's family, :func:`models.forms.family_of`).
    n_points, seed, rtol
        Number of random points, their seed, the relative tolerance.
    priors : Priors, optional
        Default ``Priors.default(data)``.
    builders : mapping, optional
        Extra ``name -> builder(data, *, priors)`` to check (e.g. :data:`BROKEN`).
    mode : str, optional
        PyTensor compilation mode of the log densities. Default: ``FAST_COMPILE`` (no C
        compilation, which 20 evaluations do not repay) unless a cluster has more than 50 rows,
        where the literal MvNormal's k x k algebra needs ``FAST_RUN``. The graph is the same.

    Returns
    -------
    CheckResult
        ``table``: one row per point with the truth, each form's value and its relative error;
        ``details["max_rel_err"]`` per form.
    """
    family = family_of(data)
    if family.name == "multivariate":
        return compare_logp_mv(data, names, n_points, seed, rtol, priors=priors,
                               builders=builders, mode=mode or "FAST_COMPILE")
    if family.name in MIXED_FAMILIES:
        from varcomp.models.checks.lmm import compare_logp_lmm

        return compare_logp_lmm(data, names, n_points, seed, rtol, priors=priors,
                                builders=builders, mode=mode or "FAST_COMPILE")
    priors = priors or Priors.default(data)
    mode = mode or ("FAST_COMPILE" if int(data.sizes.max()) <= 50 else "FAST_RUN")
    chosen = _builders(family, names)
    chosen.update(builders or {})
    funcs = {nm: integrated_loglik(b(data, priors=priors), data, mode, priors)
             for nm, b in chosen.items()}
    table = _logp_points(data, priors, n_points, np.random.default_rng(seed))
    truth = np.array([scipy_loglik(data, r.mu, r.tau, r.sigma) for r in table.itertuples()])
    table["truth"] = truth
    prior_np = np.array([priors.logpdf_free(r.mu, r.tau, r.sigma) for r in table.itertuples()])
    max_rel, prior_diff = {}, {}
    for nm, f in funcs.items():
        out = np.array([f(r.mu, r.tau, r.sigma) for r in table.itertuples()])
        vals, prior_pm = out[:, 0], out[:, 1]
        rel = np.abs(vals - truth) / np.abs(truth)
        rel[~np.isfinite(vals)] = np.inf
        table[nm] = vals
        table[f"rel_err_{nm}"] = rel
        max_rel[nm] = float(rel.max())
        prior_diff[nm] = float(np.max(np.abs(prior_pm - prior_np)))
    failed = [nm for nm, r in max_rel.items() if not r <= rtol]
    lines = [f"{nm}: max relative error {r:.1e} {'ok' if r <= rtol else 'FAILS'} (rtol {rtol:g})"
             for nm, r in max_rel.items()]
    lines.insert(0, f"log-likelihood vs scipy MvNormal at {n_points} points, tau/sigma "
                    f"1e-4..1e2 ({data.n_groups} clusters, sizes {int(data.sizes.min())}-"
                    f"{int(data.sizes.max())})")
    lines.append(f"PyMC prior terms vs Priors.logpdf: max |diff| "
                 f"{max(prior_diff.values()):.1e} (PyMC's HalfStudentT adds a float32 log 2: "
                 f"2.0e-8 per term, a constant)")
    return CheckResult("compare_logp", not failed, table, "\n".join(lines),
                       {"max_rel_err": max_rel, "failed": failed, "rtol": rtol,
                        "prior_max_abs_diff": prior_diff})


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
    (:func:`models.mvstats.marginal_loglik`, reported as ``numpy``) must equal
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
    family = family_of(data)
    if family.name != "multivariate":
        raise ValueError("compare_logp_mv is for multivariate data; use compare_logp")
    priors = priors or MvPriors.default(data)
    chosen = _builders(family, names)
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


def compare_compiled(data: ClusteredData, priors=None, n_points: int = 20, seed: int = 0,
                     rtol: float = 1e-8) -> CheckResult:
    """The compiled ``sufficient`` density against the PyMC ``sufficient`` builder it implements.

    The compiled density (:mod:`models.compiled`) is what ``varcomp fit`` samples.

    At ``n_points`` random points of the sampler's coordinates (standard normal x 1.5): the
    gradients agree to relative ``rtol`` (of the largest component) and the log densities differ
    by one constant, the same at every point to ``rtol`` relative (PyMC rounds a few constants to
    float32 and has the LKJ normaliser's sign flipped: DEVELOPERS.md), so the posteriors are the
    same. Exact, no false alarms.
    """
    from varcomp.models.compiled import multivariate, oneway

    family = family_of(data)
    if family.name in MIXED_FAMILIES:
        from varcomp.models.checks.lmm import compare_compiled_lmm

        return compare_compiled_lmm(data, priors, n_points, seed, rtol)
    priors = priors or family.default_priors(data)
    if family.name == "oneway":
        block, evaluate = oneway.parameter_block(data.stats, priors), oneway.logp_and_grad
    else:
        block = multivariate.parameter_block(data, priors)
        evaluate = multivariate.logp_and_grad
    model = family.form("sufficient").build(data, priors=priors)
    names = [v.name for v in model.value_vars]
    start = model.initial_point()
    sizes = [int(np.size(start[n])) for n in names]
    shapes = [np.shape(start[n]) for n in names]
    logp = model.compile_logp(mode="FAST_COMPILE")
    dlogp = model.compile_dlogp(mode="FAST_COMPILE")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_points):
        x = 1.5 * rng.standard_normal(sum(sizes))
        point = {n: v.reshape(sh) for n, v, sh in
                 zip(names, np.split(x, np.cumsum(sizes)[:-1]), shapes, strict=True)}
        value, grad = evaluate(x, block)
        want = np.asarray(dlogp(point))
        ref = float(logp(point))
        rows.append({"logp_pymc": ref, "logp_compiled": value,
                     "grad_rel_err": float(np.max(np.abs(grad - want)) / np.max(np.abs(want)))})
    table = pd.DataFrame(rows)
    offset = table["logp_compiled"] - table["logp_pymc"]
    spread = float(offset.max() - offset.min()) / float(table["logp_pymc"].abs().max())
    worst = float(table["grad_rel_err"].max())
    passed = bool(worst <= rtol and spread <= rtol)
    text = (f"compiled sufficient vs PyMC build_sufficient at {n_points} points: gradient max "
            f"relative error {worst:.1e}, log-density offset {float(offset.mean()):+.3g} constant "
            f"to {spread:.1e} (rtol {rtol:g}): {'ok' if passed else 'FAILS'}")
    return CheckResult("compiled sufficient", passed, table, text,
                       {"max_grad_rel_err": worst, "logp_offset": float(offset.mean()),
                        "logp_offset_spread": spread, "rtol": rtol})
