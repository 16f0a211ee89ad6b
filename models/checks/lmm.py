r"""Exact checks of the mixed-model families (covariates, nested, crossed) against scipy.

- :func:`scipy_loglik_lmm`: the oracle, written from the definition: scipy's MvNormal of the
  stacked rows with covariance sigma^2 I + sum_f tau_f^2 Z_f Z_f^T built densely, by top-level
  unit when the factors nest (blocks are independent) and over all rows otherwise.
- :func:`compare_logp_lmm`: every form's log-likelihood (its whole log density without Jacobian
  minus its own prior terms; latent effects integrated out exactly by the Gaussian identity
  log p(y) = log p(y, u_hat) + 1/2 log|2 pi H^-1|, H = Z'Z / sigma^2 + diag(1 / tau^2)) equals the
  oracle to 1e-9 at random points; the prior terms equal :meth:`LmmPriors.logpdf`.
- :func:`compare_compiled_lmm`: the compiled ``sufficient`` form against the PyMC one.
- :func:`simulate_mixed`: y for a design (the simulator of
  :class:`models.checks.sbc_models.MixedSBC`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from varcomp.models.checks.base import CheckResult
from varcomp.models.data import ClusteredData
from varcomp.models.lmm import LmmPriors

__all__ = ["compare_compiled_lmm", "compare_logp_lmm", "scipy_loglik_lmm", "simulate_mixed"]

PRIOR_VARS = ("alpha", "slope", "tau", "sigma")


def _tau_vec(tau, n_factors: int) -> np.ndarray:
    return np.atleast_1d(np.asarray(tau, dtype=np.float64)).reshape(n_factors)


def scipy_loglik_lmm(data: ClusteredData, beta, tau, sigma) -> float:
    """Ground truth: scipy's MvNormal of the stacked rows (per top-level unit when nested)."""
    d = data.design
    tau = _tau_vec(tau, len(d.factors))
    mean = d.X @ np.asarray(beta, dtype=np.float64)
    units = [np.flatnonzero(d.factors[0].codes == u) for u in range(d.factors[0].m)] \
        if d.nested else [np.arange(data.n_obs)]
    total = 0.0
    for rows in units:
        cov = sigma**2 * np.eye(rows.size)
        for t, f in zip(tau, d.factors, strict=True):
            c = f.codes[rows]
            cov = cov + t**2 * (c[:, None] == c[None, :])
        total += float(stats.multivariate_normal(mean[rows], cov).logpdf(data.y[rows, 0]))
    return total


def _effects_conditional(data: ClusteredData, beta, tau, sigma):
    """Mode and log|2 pi H^-1| / 2 of all group effects given (beta, tau, sigma), densely."""
    d = data.design
    tau = _tau_vec(tau, len(d.factors))
    Z = np.concatenate([np.eye(f.m)[f.codes] for f in d.factors], axis=1)
    prec = np.concatenate([np.full(f.m, 1.0 / t**2) for t, f in zip(tau, d.factors, strict=True)])
    H = Z.T @ Z / sigma**2 + np.diag(prec)
    r = data.y[:, 0] - d.X @ np.asarray(beta, dtype=np.float64)
    u = np.linalg.solve(H, Z.T @ r / sigma**2)
    half_logdet = 0.5 * (Z.shape[1] * math.log(2 * math.pi) - np.linalg.slogdet(H)[1])
    splits = np.cumsum([f.m for f in d.factors])[:-1]
    return np.split(u, splits), half_logdet


def integrated_loglik_lmm(model, data: ClusteredData, mode: str | None = None) -> Callable:
    """``f(beta, tau, sigma) -> (log p(y | beta, tau, sigma), prior terms)`` from the model."""
    from varcomp.models.checks.base import constrained_logp
    from varcomp.models.forms.mixed import effect_names

    names_in = [rv.name for rv in model.free_RVs]
    prior_names = [v for v in PRIOR_VARS if v in names_in]
    fn, names = constrained_logp(model, mode, prior_names=prior_names)
    effects = effect_names(data)
    priors: LmmPriors = LmmPriors.default(data)
    n_f = len(data.design.factors)

    def f(beta, tau, sigma):
        beta = np.asarray(beta, dtype=np.float64)
        tau_v = _tau_vec(tau, n_f)
        slopes = beta[list(priors.slope_index)]
        point = {"tau": tau_v if n_f > 1 else float(tau_v[0]), "sigma": sigma, "slope": slopes}
        if priors.intercept_index is not None:
            point["alpha"] = beta[priors.intercept_index] + slopes @ np.asarray(priors.x_mean)
        correction = 0.0
        if any(name in names or f"{name}_offset" in names for name, _ in effects):
            u, correction = _effects_conditional(data, beta, tau_v, sigma)
            for (name, _), u_f, t in zip(effects, u, tau_v, strict=True):
                if name in names:
                    point[name] = u_f
                else:  # offset o = u / tau: p_o(o) = tau^m p_u(tau o)
                    point[f"{name}_offset"] = u_f / t
                    correction -= u_f.size * math.log(t)
        total, prior = fn(point)
        return total - prior + correction, prior

    return f


def _points(data: ClusteredData, n_points: int, rng: np.random.Generator) -> list[dict]:
    """Random (beta, tau, sigma): beta near least squares, tau/sigma log-spaced 1e-4..1e2."""
    d = data.design
    X, y = d.X, data.y[:, 0]
    b_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ b_ols
    s0 = float(np.std(resid)) or 1.0
    ratio = 10.0 ** np.linspace(-4.0, 2.0, n_points)
    rng.shuffle(ratio)
    out = []
    for r in ratio:
        sigma = s0 * math.exp(rng.uniform(-1.0, 1.0))
        tau = r * sigma * np.exp(rng.uniform(-0.5, 0.5, len(d.factors)))
        beta = b_ols + 0.3 * s0 * rng.normal(size=b_ols.size) / np.maximum(X.std(axis=0), 1.0)
        out.append({"beta": beta, "tau": tau, "sigma": sigma, "tau_over_sigma": float(r)})
    return out


def compare_logp_lmm(data: ClusteredData, names: Sequence[str] | None = None, n_points: int = 12,
                     seed: int = 0, rtol: float = 1e-9, *, priors: LmmPriors | None = None,
                     builders: Mapping[str, Callable] | None = None,
                     mode: str | None = "FAST_COMPILE") -> CheckResult:
    """Every form's log-likelihood equals :func:`scipy_loglik_lmm` to relative ``rtol``.

    Forms that do not apply to the data (their family's ``skip``, e.g. ``sufficient`` of an
    unbalanced crossed design) are reported as skipped. Prior terms: equal to
    :meth:`LmmPriors.logpdf` up to PyMC's float32 rounding of log 2 (a constant < 1e-6).
    """
    from varcomp.models.forms import family_of

    family = family_of(data)
    priors = priors or LmmPriors.default(data)
    chosen, skipped = {}, {}
    for nm in (list(family.forms) if names is None else list(names)):
        form = family.form(nm)
        why = form.applies(data)
        if why:
            skipped[nm] = why
            continue
        chosen[nm] = form.build
    funcs = {nm: integrated_loglik_lmm(b(data, priors=priors), data, mode)
             for nm, b in {**chosen, **(builders or {})}.items()}
    points = _points(data, n_points, np.random.default_rng(seed))
    truth = np.array([scipy_loglik_lmm(data, p["beta"], p["tau"], p["sigma"]) for p in points])
    prior_np = np.array([priors.logpdf(p["beta"], p["tau"], p["sigma"]) for p in points])
    table = pd.DataFrame({"tau_over_sigma": [p["tau_over_sigma"] for p in points],
                          "truth": truth})
    max_rel, prior_diff = {}, {}
    for nm, f in funcs.items():
        out = np.array([f(p["beta"], p["tau"], p["sigma"]) for p in points])
        rel = np.abs(out[:, 0] - truth) / np.abs(truth)
        rel[~np.isfinite(out[:, 0])] = np.inf
        table[nm], table[f"rel_err_{nm}"] = out[:, 0], rel
        max_rel[nm] = float(rel.max())
        prior_diff[nm] = float(np.max(np.abs(out[:, 1] - prior_np)))
    failed = [nm for nm, r in max_rel.items() if not r <= rtol]
    failed += [f"{nm} (prior)" for nm, d in prior_diff.items() if not d <= 1e-6]
    lines = [f"{family.name} log-likelihood vs scipy MvNormal of the stacked rows at {n_points} "
             f"points, tau/sigma 1e-4..1e2 ({data.n_obs} rows, factors "
             f"{', '.join(f'{f.name} ({f.m})' for f in data.design.factors)})"]
    lines += [f"{nm}: max relative error {r:.1e} {'ok' if r <= rtol else 'FAILS'} (rtol {rtol:g})"
              for nm, r in max_rel.items()]
    lines += [f"{nm}: skipped ({why})" for nm, why in skipped.items()]
    return CheckResult("compare_logp", not failed, table, "\n".join(lines),
                       {"max_rel_err": max_rel, "failed": failed, "rtol": rtol,
                        "prior_max_abs_diff": prior_diff, "skipped": skipped})


def compare_compiled_lmm(data: ClusteredData, priors: LmmPriors | None = None,
                         n_points: int = 20, seed: int = 0, rtol: float = 1e-8) -> CheckResult:
    """The compiled ``sufficient`` density against the PyMC form it implements.

    At random points: gradients equal and log densities equal up to one constant (PyMC's
    float32 log 2).
    """
    from varcomp.models.compiled import lmm
    from varcomp.models.forms import family_of

    family = family_of(data)
    priors = priors or LmmPriors.default(data)
    form = family.form("sufficient")
    compiled = form.compiled(data, priors)
    model = form.build(data, priors=priors)
    value_names = [v.name for v in model.value_vars]
    logp = model.compile_logp(mode="FAST_COMPILE")
    dlogp = model.compile_dlogp(mode="FAST_COMPILE")
    k, F = len(priors.terms), len(priors.tau)
    i0, slopes = priors.intercept_index, list(priors.slope_index)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_points):
        z = 1.5 * rng.standard_normal(k + F + 1)
        point = {"slope_std__": z[slopes], "tau_log_std__": z[k:k + F] if F > 1 else z[k],
                 "sigma_log_std__": z[k + F]}
        if i0 is not None:
            point["alpha_std__"] = z[i0]
        point = {n: point[n] for n in value_names}
        value, grad = lmm.logp_and_grad(z, compiled.user_data)
        g = np.asarray(dlogp(point))
        order = ([*slopes] if slopes else []) + ([i0] if i0 is not None else []) + \
            list(range(k, k + F + 1))
        want = np.empty_like(grad)
        want[order] = g
        rows.append({"logp_pymc": float(logp(point)), "logp_compiled": value,
                     "grad_rel_err": float(np.max(np.abs(grad - want)) / np.max(np.abs(want)))})
    table = pd.DataFrame(rows)
    offset = table["logp_compiled"] - table["logp_pymc"]
    spread = float(offset.max() - offset.min()) / float(table["logp_pymc"].abs().max())
    worst = float(table["grad_rel_err"].max())
    passed = bool(worst <= rtol and spread <= rtol)
    text = (f"compiled sufficient vs PyMC ({family.name}) at {n_points} points: gradient max "
            f"relative error {worst:.1e}, log-density offset {float(offset.mean()):+.3g} constant "
            f"to {spread:.1e} (rtol {rtol:g}): {'ok' if passed else 'FAILS'}")
    return CheckResult("compiled sufficient", passed, table, text,
                       {"max_grad_rel_err": worst, "logp_offset": float(offset.mean()),
                        "logp_offset_spread": spread, "rtol": rtol})


def simulate_mixed(data: ClusteredData, beta, tau, sigma, rng: np.random.Generator) -> np.ndarray:
    """Simulate y = X beta + sum_f u_f[codes] + e for ``data``'s design."""
    d = data.design
    tau = _tau_vec(tau, len(d.factors))
    y = d.X @ np.asarray(beta) + rng.normal(0.0, sigma, data.n_obs)
    for t, f in zip(tau, d.factors, strict=True):
        y = y + rng.normal(0.0, t, f.m)[f.codes]
    return y
