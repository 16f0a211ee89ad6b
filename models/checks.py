r"""Checks that every parameterisation is one posterior: exact densities, MCMC agreement, SBC.

Four checks, each returning a :class:`CheckResult` (``name``, ``passed``, ``table``, ``text``):

- :func:`compare_logp`: the log densities of the registry's models, latent effects integrated out
  exactly, equal ``scipy.stats.multivariate_normal`` on every cluster to relative 1e-9.
- :func:`compare_posteriors`: posterior means and 5/50/95% quantiles agree between fits, and
  with :func:`reference_posterior` (quadrature), within |z| <= 4 MCSE; a fit failing the
  diagnostics gate is "unreliable here", never "agrees".
- :func:`sbc`: simulation-based calibration (Talts et al. 2018) with the log-likelihood as an
  extra test quantity (Modrak et al. 2023) and the ECDF uniformity test of Sailynoja et al.
  (2022).
- Power: :func:`build_broken_tau_not_squared`, a deliberately wrong model, fails the first and
  the last.

The multivariate forms are covered by :mod:`models.checks_mv` (re-exported here):
``compare_logp`` dispatches to :func:`~models.checks_mv.compare_logp_mv` for p > 1,
``compare_posteriors`` compares mu, V, Sigma, icc and both correlations of multivariate fits,
and :func:`~models.checks_mv.sbc_mv` calibrates the multivariate ``sufficient`` form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import interpolate, optimize, special, stats

from models.data import ClusteredData
from models.density import group_effect_conditional, marginal_logp_terms
from models.priors import NormalPrior, Priors, ScalePrior
from models.sampling import SUMMARY_VARS, Fit, diagnose
from models.simulate import cluster_sizes, simulate_univariate

__all__ = [
    "BROKEN",
    "SBC_PRIORS",
    "CheckResult",
    "ReferencePosterior",
    "SBCResult",
    "build_broken_tau_not_squared",
    "build_data_model",
    "compare_compiled",
    "compare_logp",
    "compare_posteriors",
    "data_updates",
    "integrated_loglik",
    "plot_sbc",
    "rank_table",
    "rank_uniformity",
    "reference_posterior",
    "sbc",
    "scipy_loglik",
]

STATS = ("mean", "q05", "q50", "q95")
PROBS = {"q05": 0.05, "q50": 0.5, "q95": 0.95}
AGREES, UNRELIABLE, DISAGREES = "agrees", "unreliable here", "DISAGREES"


@dataclass
class CheckResult:
    """The outcome of a check: a verdict, the numbers behind it and a short summary.

    ``details`` holds machine-readable extras (per-form status, maxima) for reports and JSON.
    """

    name: str
    passed: bool
    table: pd.DataFrame
    text: str
    details: dict = field(default_factory=dict)

    @property
    def verdicts(self) -> dict[str, str]:
        """Per-form verdict text (agrees / unreliable here / DISAGREES), when the check has one."""
        status = self.details.get("status", {})
        return {k: (v if isinstance(v, str) else str(v.get("status", v))) for k, v in status.items()}


# ============================================================================ exact log densities
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


def _constrained_logp(model, mode: str | None = None, *,
                      prior_names: Sequence[str] = ("mu", "tau", "sigma"),
                      ) -> tuple[Callable[[dict], tuple], list[str]]:
    """Compile ``model``'s log density (no Jacobian) as a function of constrained values.

    Each value variable is replaced by the transform's ``forward`` of a new input, so the
    function takes ``{"mu": .., "tau": .., ...}`` on the model's own scale. (The transforms of
    :mod:`models.transforms`, PyMC's log transform and its LKJ-Cholesky transform use no RV
    inputs in ``forward``.) The function returns ``(total, prior)``: the whole log density and
    the terms of ``prior_names``. Each term is summed separately and the terms are added in
    Python (PyTensor's Python linker cannot add more than 32 terms in one Elemwise).
    """
    import pytensor
    from pytensor.graph.replace import graph_replace

    names, inputs, replace = [], [], {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        x = value.type(name=rv.name)
        tr = model.rvs_to_transforms.get(rv)
        replace[value] = x if tr is None else tr.forward(x)
        names.append(rv.name)
        inputs.append(x)
    prior_vars = [model[v] for v in prior_names]
    terms = [t.sum() for t in model.logp(jacobian=False, sum=False)]
    prior_terms = [t.sum() for t in model.logp(vars=prior_vars, jacobian=False, sum=False)]
    outs = graph_replace(terms + prior_terms, replace, strict=False)
    fn = pytensor.function(inputs, outs, on_unused_input="ignore", mode=mode)

    def f(point: dict) -> tuple[float, float]:
        out = fn(*[np.asarray(point[n], dtype=np.float64) for n in names])
        return float(sum(out[:len(terms)])), float(sum(out[len(terms):]))

    return f, names


def integrated_loglik(model, data: ClusteredData,
                      mode: str | None = None) -> Callable[[float, float, float], tuple]:
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
    fn, names = _constrained_logp(model, mode)
    n = data.stats.n[:, 0].astype(np.float64)
    xbar = data.stats.mean[:, 0]
    if (n < 1).any():
        raise ValueError("every group needs at least one observation for the latent identity")
    latent = "group_effect" if "group_effect" in names else (
        "group_effect_offset" if "group_effect_offset" in names else None)

    def f(mu: float, tau: float, sigma: float) -> tuple[float, float]:
        point = {"mu": mu, "tau": tau, "sigma": sigma}
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

    Multivariate data (``data.p > 1``) go to :func:`models.checks_mv.compare_logp_mv` (the
    same check on each cluster's stacked observed vector, missing outcomes integrated out).

    Parameters
    ----------
    data : ClusteredData
        Univariate data (multivariate: see above).
    names : sequence of str, optional
        Registry entries to check (default: all of ``models.PARAMETERISATIONS``).
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
    from models import PARAMETERISATIONS

    if data.p > 1:  # the multivariate forms: models.checks_mv
        from models.checks_mv import compare_logp_mv

        return compare_logp_mv(data, names, n_points, seed, rtol, priors=priors,
                               builders=builders, mode=mode or "FAST_COMPILE")
    priors = priors or Priors.default(data)
    mode = mode or ("FAST_COMPILE" if int(data.sizes.max()) <= 50 else "FAST_RUN")
    chosen = {nm: PARAMETERISATIONS[nm] for nm in (PARAMETERISATIONS if names is None else names)}
    chosen.update(builders or {})
    funcs = {nm: integrated_loglik(b(data, priors=priors), data, mode) for nm, b in chosen.items()}
    table = _logp_points(data, priors, n_points, np.random.default_rng(seed))
    truth = np.array([scipy_loglik(data, r.mu, r.tau, r.sigma) for r in table.itertuples()])
    table["truth"] = truth
    prior_np = np.array([priors.logpdf(r.mu, r.tau, r.sigma) for r in table.itertuples()])
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


# ============================================================================ a broken model
def compare_compiled(data: ClusteredData, priors=None, n_points: int = 20, seed: int = 0,
                     rtol: float = 1e-8) -> CheckResult:
    """The compiled ``sufficient`` density (:mod:`models.native`, :mod:`models.native_mv`,
    what ``varcomp fit`` samples) against the PyMC ``build_sufficient`` model it implements.

    At ``n_points`` random points of the sampler's coordinates (standard normal x 1.5): the
    gradients agree to relative ``rtol`` (of the largest component) and the log densities differ
    by one constant, the same at every point to ``rtol`` relative (PyMC rounds a few constants to
    float32 and has the LKJ normaliser's sign flipped: DEVELOPERS.md), so the posteriors are the
    same. Exact, no false alarms.
    """
    if data.p == 1:
        from models import native
        from models.univariate import build_sufficient

        priors = priors or Priors.default(data)
        block = native.parameter_block(data.stats, priors)
        evaluate = native.logp_and_grad
    else:
        from models import native_mv
        from models.multivariate import build_sufficient
        from models.priors import MvPriors

        priors = priors or MvPriors.default(data)
        block = native_mv.parameter_block(data, priors)
        evaluate = native_mv.logp_and_grad
    model = build_sufficient(data, priors=priors)
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


def build_broken_tau_not_squared(data: ClusteredData, *, priors: Priors | None = None):
    r"""Build a DELIBERATELY WRONG model, to prove the checks have power: tau for tau^2.

    .. math::
        X_l \sim \mathrm{MvNormal}(\mu 1, \sigma^2 I + \tau\, 1 1^\top) \quad (\text{wrong})

    Otherwise identical to ``build_sufficient``. :func:`compare_logp` and :func:`sbc` must
    fail it; never use it for inference.
    """
    return build_data_model("broken_tau_not_squared", data, priors=priors)


BROKEN = {"broken_tau_not_squared": build_broken_tau_not_squared}


# ============================================================================ data-container models
DATA_FORMS = ("centred", "noncentred", "marginal", "sufficient", "broken_tau_not_squared")


def build_data_model(name: str, data: ClusteredData, *, priors: Priors | None = None):
    """Parameterisation ``name`` with its data in ``pm.Data`` containers (compile once, reuse).

    The same density, priors and sampler coordinates as the registry's builder of the same name
    (the tests check equality of log densities to 1e-9), but the responses are shared
    variables, so one compilation serves every data set of the same design: nutpie's
    ``compiled.with_data(**data_updates(name, new_data))`` (numba) or ``set_value`` on the
    containers (PyTensor's C backend). For ``sufficient`` (and the broken model) the design may
    change too: the statistics (n, xbar, ss) may have any length.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from models.density import compound_symmetry_chol, marginal_logp
    from models.transforms import Affine

    if name not in DATA_FORMS:
        raise ValueError(f"unknown form '{name}'; choose one of {', '.join(DATA_FORMS)}")
    if data.p != 1:
        raise ValueError("data-container models are univariate")
    priors = priors or Priors.default(data)
    model = pm.Model(coords={"group": [str(g) for g in data.groups]})
    upd = data_updates(name, data)
    with model:
        mu, tau, sigma = priors.create()
        if name in ("centred", "noncentred"):
            y = pm.Data("y_obs", upd["y_obs"])
            if name == "centred":
                effect = pm.Normal("group_effect", 0.0, tau, dims="group",
                                   default_transform=Affine(0.0, priors.scale))
            else:
                offset = pm.Normal("group_effect_offset", 0.0, 1.0, dims="group")
                effect = pm.Deterministic("group_effect", tau * offset, dims="group")
            pm.Normal("y", mu + effect[data.codes], sigma, observed=y)
        elif name == "marginal":
            for key, block in upd.items():  # one MvNormal per cluster size, as the registry
                k = block.shape[1]
                chol = compound_symmetry_chol(k, sigma, tau, xp=pt)
                pm.MvNormal(key.removesuffix("_obs"), mu=pt.ones(k) * mu, chol=chol,
                            observed=pm.Data(key, block))
        else:
            n, xbar, ss = (pm.Data(k, upd[k]) for k in ("n", "xbar", "ss"))
            t = pt.sqrt(tau) if name == "broken_tau_not_squared" else tau  # the deliberate bug
            pm.Potential("loglik", marginal_logp(n, xbar, ss, mu, t, sigma, xp=pt))
        pm.Deterministic("icc", tau**2 / (tau**2 + sigma**2))
    return model


def data_updates(name: str, data: ClusteredData) -> dict[str, np.ndarray]:
    """Values of the ``pm.Data`` containers of :func:`build_data_model` ``(name, ...)``."""
    if name in ("centred", "noncentred"):
        return {"y_obs": data.y[:, 0].copy()}
    if name == "marginal":
        return {f"y_n{k}_obs": b for k, b in _cluster_blocks(data.y[:, 0], data.codes).items()}
    n, xbar, ss = data.stats.column(0)
    return {"n": n, "xbar": xbar, "ss": ss}


# ============================================================================ reference posterior
@dataclass(frozen=True)
class ReferencePosterior:
    """Near-exact posterior summaries by quadrature.

    Attributes
    ----------
    summary : DataFrame
        Index ``mu, tau, sigma, icc``; columns ``mean, q05, q50, q95``.
    log_tau, log_sigma : ndarray
        The final grid's axes.
    log_density : ndarray
        Unnormalised log posterior of (log tau, log sigma) on the grid, mu integrated out.
    """

    summary: pd.DataFrame
    log_tau: np.ndarray
    log_sigma: np.ndarray
    log_density: np.ndarray

    def value(self, param: str, stat: str) -> float:
        """One summary, e.g. ``value("tau", "q95")``."""
        return float(self.summary.loc[param, stat])


def _log_post_mu_integrated(n, xbar, ss, priors: Priors, lt, ls):
    r"""Log p(log tau, log sigma | X) + const with mu integrated out; and mu | tau, sigma.

    Given (tau, sigma) the likelihood is Gaussian in mu with precision sum_l w_l,
    w_l = n_l / (sigma^2 + n_l tau^2); with mu ~ N(m0, s0^2):

    .. math::
        \int p(X | \mu) p(\mu) d\mu = C \, (P s_0^2)^{-1/2}
            \exp\{-\tfrac12 [\textstyle\sum_l w_l (\bar x_l - m)^2 + (m - m_0)^2 / s_0^2]\},

    P = sum w + 1/s0^2, m = (sum w xbar + m0/s0^2) / P and C the mu-free part of
    :func:`models.density.marginal_logp_terms`. The Jacobian of (tau, sigma) -> logs adds
    log tau + log sigma. Returns (log density, conditional mean of mu, conditional var of mu).
    """
    lt, ls = np.broadcast_arrays(lt, ls)
    tau, sigma = np.exp(lt), np.exp(ls)
    s2, t2 = (sigma * sigma)[..., None], (tau * tau)[..., None]
    v = s2 + n * t2
    w = n / v
    m0, s0 = priors.mu.loc, priors.mu.scale
    prec = w.sum(-1) + 1.0 / s0**2
    # the mean relative to m0 keeps large offsets (data far from 0) exact
    m = m0 + (w * (xbar - m0)).sum(-1) / prec
    q = (w * (xbar - m[..., None]) ** 2).sum(-1) + (m - m0) ** 2 / s0**2
    c = (-0.5 * n * math.log(2 * math.pi) - 0.5 * (n - 1.0) * np.log(s2) - 0.5 * np.log(v)
         - 0.5 * ss / s2).sum(-1)
    lp = (c - 0.5 * q - 0.5 * np.log(prec * s0**2)
          + priors.tau.logpdf(tau) + priors.sigma.logpdf(sigma) + lt + ls)
    return lp, m, 1.0 / prec


def _grid_eval(n, xbar, ss, priors, lt, ls):
    """Log density on the outer product ``lt x ls`` (chunked over lt to bound memory)."""
    lp = np.empty((lt.size, ls.size))
    m = np.empty_like(lp)
    var = np.empty_like(lp)
    chunk = max(1, int(2_000_000 // max(ls.size * n.size, 1)))
    for i in range(0, lt.size, chunk):
        sl = slice(i, i + chunk)
        lp[sl], m[sl], var[sl] = _log_post_mu_integrated(n, xbar, ss, priors, lt[sl, None],
                                                         ls[None, :])
    return lp, m, var


def _marginal_summary(x: np.ndarray, log_m: np.ndarray, transform, probs, refine: int = 20):
    """Mean of ``transform(x)`` and quantiles of x from a log marginal density on nodes ``x``.

    log m is smooth, so a cubic spline of it, integrated on a ``refine`` times finer grid,
    makes the CDF (and its inversion) accurate far beyond the node spacing.
    """
    fine = np.linspace(x[0], x[-1], (x.size - 1) * refine + 1)
    lm = interpolate.CubicSpline(x, log_m - log_m.max())(fine)
    dens = np.exp(lm)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    total = cdf[-1]
    cdf /= total
    g = transform(fine)
    mean = float(np.sum(0.5 * (g[1:] * dens[1:] + g[:-1] * dens[:-1]) * np.diff(fine)) / total)
    qs = [float(transform(np.interp(p, cdf, fine))) for p in probs]
    return mean, qs


def _box(lt, ls, lp, drop: float):
    """Bounding box (one cell of padding) of the nodes with log density > max - drop."""
    keep = lp > lp.max() - drop
    it, js = np.nonzero(keep)
    ht, hs = lt[1] - lt[0], ls[1] - ls[0]
    return ((max(lt[0], lt[it.min()] - ht), min(lt[-1], lt[it.max()] + ht)),
            (max(ls[0], ls[js.min()] - hs), min(ls[-1], ls[js.max()] + hs)), keep)


def reference_posterior(
    data: ClusteredData,
    priors: Priors | None = None,
    *,
    grid: int = 256,
    drop: float = 40.0,
    k: int = 0,
) -> ReferencePosterior:
    r"""Near-exact posterior of the one-way model by quadrature.

    mu is integrated out analytically under its Normal prior (:func:`_log_post_mu_integrated`);
    (log tau, log sigma) is a ``grid`` x ``grid`` lattice, refined three times onto the box
    where the log density is within ``drop`` of its maximum (40 nats: the mass outside is
    below 1e-15 of the total for a Gaussian, about e^-40 for tau's exponential left tail on
    the log scale). Marginals of log tau, log sigma and u = log tau - log sigma (icc =
    logistic(2u), from a second lattice in (u, log sigma)) are summed over the other axis
    (spectrally accurate for smooth integrands) and integrated with a spline; mu's marginal is
    the mixture of its conditional normals over the lattice.

    Returns
    -------
    ReferencePosterior
        ``summary`` with the mean and 5/50/95% quantiles of mu, tau, sigma, icc.
    """
    priors = priors or Priors.default(data, k)
    n, xbar, ss = data.stats.column(k)
    s = priors.scale
    hi_t = math.log(max(priors.tau.quantile(1 - 1e-12), 10 * s))
    hi_s = math.log(max(priors.sigma.quantile(1 - 1e-12), 10 * s))
    bt, bs = (math.log(s) - 25.0, hi_t), (math.log(s) - 25.0, hi_s)
    for _ in range(4):
        lt, ls = np.linspace(*bt, grid), np.linspace(*bs, grid)
        lp, m, var = _grid_eval(n, xbar, ss, priors, lt, ls)
        if not np.isfinite(lp.max()):
            raise ValueError("reference posterior: the log density is not finite on the grid")
        bt, bs, keep = _box(lt, ls, lp, drop)
    lp0 = lp - lp.max()
    probs = [PROBS[q] for q in STATS[1:]]
    rows = {}
    log_mt = special.logsumexp(lp0, axis=1)
    rows["tau"] = _marginal_summary(lt, log_mt, np.exp, probs)
    log_ms = special.logsumexp(lp0, axis=0)
    rows["sigma"] = _marginal_summary(ls, log_ms, np.exp, probs)
    # mu: a mixture of normals N(m_ij, var_ij) with the lattice weights
    wts = np.exp(lp0)
    wts /= wts.sum()
    mm, sd = m.ravel(), np.sqrt(var.ravel())
    wv = wts.ravel()
    sel = wv > 1e-18 * wv.max()
    mm, sd, wv = mm[sel], sd[sel], wv[sel] / wv[sel].sum()

    def cdf(x: float) -> float:
        return float(np.sum(wv * special.ndtr((x - mm) / sd)))

    lo, hi = float((mm - 12 * sd).min()), float((mm + 12 * sd).max())
    mu_q = [optimize.brentq(lambda x, p=p: cdf(x) - p, lo, hi, xtol=1e-13 * max(1.0, abs(hi)),
                            rtol=1e-14) for p in probs]
    rows["mu"] = (float(np.sum(wv * mm)), mu_q)
    # icc = tau^2 / (tau^2 + sigma^2) = logistic(2u), u = log tau - log sigma: its own lattice
    uu = (lt[:, None] - ls[None, :])[keep]
    pad = (lt[1] - lt[0]) + (ls[1] - ls[0])
    bu = (uu.min() - pad, uu.max() + pad)
    u = np.linspace(*bu, grid)
    lpu, _, _ = _log_post_mu_integrated(n, xbar, ss, priors, u[:, None] + ls[None, :], ls[None, :])
    log_mu_u = special.logsumexp(lpu - lpu.max(), axis=1)
    rows["icc"] = _marginal_summary(u, log_mu_u, lambda x: special.expit(2.0 * x), probs)
    summary = pd.DataFrame({p: [rows[p][0], *rows[p][1]] for p in ("mu", "tau", "sigma", "icc")},
                           index=list(STATS)).T
    return ReferencePosterior(summary, lt, ls, lp)


# ============================================================================ posterior agreement
def _draws(idata, var: str) -> dict[str, np.ndarray]:
    """``{label: (chain, draw) array}`` for ``var``, flattening any extra dims (``mu[a]``).

    A matrix over (outcome, outcome_bis) is symmetric: only its upper triangle is kept
    (``V[a,b]`` for a <= b, as ``summary.json`` names them), and for a correlation matrix only
    the off-diagonal (its diagonal is 1).
    """
    post = idata.posterior
    if var not in post:
        if var == "icc" and "tau" in post and "sigma" in post and post["tau"].ndim == 2:
            t, s = post["tau"].values, post["sigma"].values
            return {var: t**2 / (t**2 + s**2)}
        return {}
    da = post[var]
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    if not extra:
        return {var: da.values}
    if len(extra) == 2 and extra[1].endswith("_bis"):
        a, b = extra
        labels = list(da[a].values)
        first = 1 if var.startswith("corr") else 0
        return {f"{var}[{la},{labels[j]}]": da.isel({a: i, b: j}).values
                for i, la in enumerate(labels) for j in range(i + first, len(labels))}
    flat = da.stack(_elem=extra)
    return {f"{var}[{','.join(map(str, np.atleast_1d(lab)))}]": flat.isel(_elem=i).values
            for i, lab in enumerate(flat["_elem"].values)}


def _estimates(x: np.ndarray) -> dict[str, tuple[float, float]]:
    """``{stat: (estimate, MCSE)}`` for the mean and the 5/50/95% quantiles (ArviZ MCSE)."""
    import arviz as az
    import xarray as xr

    ds = xr.Dataset({"x": (("chain", "draw"), np.asarray(x, dtype=np.float64))})
    out = {"mean": (float(x.mean()), float(az.mcse(ds, method="mean")["x"]))}
    for stat, p in PROBS.items():
        out[stat] = (float(np.quantile(x, p)),
                     float(az.mcse(ds, method="quantile", prob=p)["x"]))
    return out


def _z(diff: float, se: float) -> float:
    if se > 0 and np.isfinite(se):
        return diff / se
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def compare_posteriors(
    fits: Mapping[str, Fit] | Sequence[Fit],
    reference: ReferencePosterior | None = None,
    z_max: float = 4.0,
    *,
    var_names: Sequence[str] | None = None,
) -> CheckResult:
    r"""Posterior means and 5/50/95% quantiles agree between fits within Monte Carlo error.

    ``var_names`` defaults to mu, tau, sigma, icc; for multivariate fits (a posterior with
    ``V``) to :data:`models.checks_mv.MV_SUMMARY_VARS`: mu[k], the upper triangles of V and
    Sigma, icc[k], and the off-diagonal corr_between and corr_within. For each pair of fits and
    each of ``var_names`` (elements of vectors and matrices separately),
    :math:`z = (\hat\theta_a - \hat\theta_b) / \sqrt{\mathrm{mcse}_a^2 + \mathrm{mcse}_b^2}`
    (ArviZ MCSE: ``method="mean"``, or ``"quantile"`` at the quantile's probability); against
    the ``reference`` the denominator is the fit's MCSE alone. With |z| <= 4 about 0.1% of
    ~16 comparisons of one pair falsely fail. Each comparison falsely fails with probability
    6.3e-5 if the MCSEs are exact (two-sided normal tail beyond 4); for p = 2 outcomes one pair
    makes 12 x 4 = 48 comparisons (0.3%), and the four forms' six pairs 288 (about 2%), somewhat
    more in practice since the MCSEs are themselves estimated. A fit failing the diagnostics
    gate (:func:`models.sampling.diagnose` on ``var_names``) is never judged: its rows say
    "not judged" and its status is "unreliable here" with its problems.

    Returns
    -------
    CheckResult
        ``passed`` iff no reliable comparison has |z| > ``z_max``. ``table``: one row per
        (a, b, param, stat) with est_a, est_b, diff, se, z and verdict. ``details["status"]``:
        per form "agrees" / "unreliable here" / "DISAGREES" (or "not compared").
    """
    if not isinstance(fits, Mapping):
        fits = {f.name: f for f in fits}
    if var_names is None:
        multivariate = any("V" in f.idata.posterior for f in fits.values())
        if multivariate:
            from models.checks_mv import MV_SUMMARY_VARS
        var_names = MV_SUMMARY_VARS if multivariate else SUMMARY_VARS
    diags = {nm: (f.diagnostics if f.diagnostics else diagnose(f.idata, var_names))
             for nm, f in fits.items()}
    reliable = {nm: bool(d.get("ok", False)) for nm, d in diags.items()}
    est: dict[str, dict[str, dict]] = {}
    for nm, f in fits.items():
        est[nm] = {}
        for var in var_names:
            for label, x in _draws(f.idata, var).items():
                est[nm][label] = _estimates(x)
    names = list(fits)
    rows = []

    def add(a, b, label, stat, ea, eb, se_a, se_b, judged):
        diff = ea - eb
        se = math.sqrt(se_a**2 + se_b**2)
        z = _z(diff, se)
        verdict = ("ok" if abs(z) <= z_max else "DIFFERS") if judged else "not judged"
        rows.append({"a": a, "b": b, "param": label, "stat": stat, "est_a": ea, "est_b": eb,
                     "diff": diff, "se": se, "z": z, "verdict": verdict})

    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for label in [lab for lab in est[a] if lab in est[b]]:
                for stat in STATS:
                    (ea, sa), (eb, sb) = est[a][label][stat], est[b][label][stat]
                    add(a, b, label, stat, ea, eb, sa, sb, reliable[a] and reliable[b])
        if reference is not None:
            for label in [lab for lab in est[a] if lab in reference.summary.index]:
                for stat in STATS:
                    ea, sa = est[a][label][stat]
                    add(a, "reference", label, stat, ea, reference.value(label, stat), sa, 0.0,
                        reliable[a])
    table = pd.DataFrame(rows, columns=["a", "b", "param", "stat", "est_a", "est_b", "diff",
                                        "se", "z", "verdict"])
    status, lines = {}, []
    for nm in names:
        mine = table[((table.a == nm) | (table.b == nm)) & (table.verdict != "not judged")]
        bad = mine[mine.verdict == "DIFFERS"]
        if not reliable[nm]:
            status[nm] = UNRELIABLE
            lines.append(f"{nm}: {UNRELIABLE} ({'; '.join(diags[nm]['problems'])})")
        elif len(bad):
            status[nm] = DISAGREES
            worst = bad.loc[bad.z.abs().idxmax()]
            other = worst.b if worst.a == nm else worst.a
            lines.append(f"{nm}: {DISAGREES} ({len(bad)} of {len(mine)} comparisons beyond "
                         f"|z| {z_max:g}; worst z {worst.z:+.1f} vs {other} on "
                         f"{worst.param} {worst.stat})")
        elif len(mine) == 0:
            status[nm] = "not compared"
            lines.append(f"{nm}: not compared (no other reliable fit or reference)")
        else:
            status[nm] = AGREES
            lines.append(f"{nm}: {AGREES} (max |z| {mine.z.abs().max():.1f} over {len(mine)} "
                         f"comparisons)")
    judged = table[table.verdict != "not judged"]
    passed = bool((judged.verdict != "DIFFERS").all())
    vs_ref = {nm: bool(reference is not None and reliable[nm] and len(
        table[(table.a == nm) & (table.b == "reference")]) > 0 and (table[
            (table.a == nm) & (table.b == "reference")].verdict == "ok").all()) for nm in names}
    return CheckResult("compare_posteriors", passed, table, "\n".join(lines),
                       {"status": status, "reliable": reliable, "agrees_with_reference": vs_ref,
                        "problems": {nm: list(d.get("problems", [])) for nm, d in diags.items()},
                        "max_abs_z": float(judged.z.abs().max()) if len(judged) else 0.0,
                        "z_max": z_max})


# ============================================================================ SBC
SBC_PRIORS = Priors(mu=NormalPrior(0.0, 1.0), tau=ScalePrior("halfnormal", 1.0),
                    sigma=ScalePrior("halfnormal", 1.0), center=0.0, scale=1.0)
SBC_QUANTITIES = ("mu", "tau", "sigma", "icc", "loglik")


@dataclass
class SBCResult(CheckResult):
    """SBC outcome: ``ranks`` (one row per simulation) in 0..``n_ranks``, p-values per quantity.

    ``table`` has one row per quantity: the ECDF test's p-value (the verdict), the chi-square
    p-value (reported) and pass/fail at ``alpha``; ``sims`` has per-simulation diagnostics.
    """

    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_ranks: int = 0
    pvalues: dict = field(default_factory=dict)
    sims: pd.DataFrame = field(default_factory=pd.DataFrame)
    band: dict = field(default_factory=dict)


def _thresholds(n_ranks: int, n: int) -> np.ndarray:
    """ECDF evaluation points c (ranks < c), at most ``n`` of them, strictly inside 1..M."""
    k = min(n_ranks + 1, n)
    c = np.unique(np.round(np.linspace(0, n_ranks + 1, k + 1)[1:-1]).astype(int))
    return c[(c > 0) & (c <= n_ranks)]


def _ecdf_stat(counts: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """Smallest two-sided pointwise binomial tail probability of ECDF counts (last axis)."""
    lo = stats.binom.cdf(counts, n, p)
    hi = stats.binom.sf(counts - 1, n, p)
    return np.minimum(1.0, 2.0 * np.minimum(lo, hi)).min(axis=-1)


def rank_uniformity(
    ranks: np.ndarray,
    n_ranks: int,
    *,
    alpha: float = 0.01,
    n_null: int = 4000,
    seed: int = 0,
) -> dict:
    """Uniformity of SBC ranks on {0..M}: ECDF test with a simultaneous band, and chi-square.

    ECDF test (Sailynoja, Buerkner & Vehtari 2022): at thresholds c, N F(c) = #{rank < c} is
    Binomial(N, c / (M + 1)) under uniformity; the statistic is the smallest two-sided
    pointwise tail probability over c, its null distribution is simulated from exact discrete
    uniform ranks (``n_null`` replicates), and ``gamma`` (its alpha quantile) gives the
    simultaneous 1 - alpha band. Chi-square: ranks in <= 10 bins with their exact
    probabilities. Returns p_ecdf, p_chi2, gamma, thresholds and the band.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    n = ranks.size
    c = _thresholds(n_ranks, n)
    p = c / (n_ranks + 1.0)
    counts = np.searchsorted(np.sort(ranks), c, side="left")
    t_obs = float(_ecdf_stat(counts, n, p))
    rng = np.random.default_rng(seed)
    t_null = np.empty(n_null)
    for i in range(0, n_null, 500):
        b = min(500, n_null - i)
        r = rng.integers(0, n_ranks + 1, size=(b, n))
        hist = np.bincount((r + (n_ranks + 1) * np.arange(b)[:, None]).ravel(),
                           minlength=b * (n_ranks + 1)).reshape(b, n_ranks + 1)
        cum = np.cumsum(hist, axis=1)
        t_null[i:i + b] = _ecdf_stat(cum[:, c - 1], n, p)
    p_ecdf = float((1 + np.sum(t_null <= t_obs)) / (n_null + 1))
    gamma = float(np.quantile(t_null, alpha))
    band_lo = stats.binom.ppf(gamma / 2, n, p) / n - p
    band_hi = stats.binom.isf(gamma / 2, n, p) / n - p
    n_bins = int(min(10, n_ranks + 1, max(2, n // 5)))
    edges = np.linspace(0, n_ranks + 1, n_bins + 1)
    bins = np.minimum(np.searchsorted(edges, ranks, side="right") - 1, n_bins - 1)
    per_bin = np.diff(np.ceil(edges))  # integers per bin
    obs = np.bincount(bins, minlength=n_bins)
    expected = n * per_bin / (n_ranks + 1)
    p_chi2 = float(stats.chisquare(obs, expected).pvalue)
    return {"p_ecdf": p_ecdf, "p_chi2": p_chi2, "gamma": gamma, "thresholds": c,
            "ecdf_diff": counts / n - p, "band_lo": band_lo, "band_hi": band_hi, "p": p}


def rank_table(ranks: pd.DataFrame, n_ranks: int, alpha: float, seed: int = 0):
    """:func:`rank_uniformity` of each column of ``ranks`` at level ``alpha``.

    Returns ``(table, pvalues, band)``: one row per quantity (``p_ecdf``, ``p_chi2``,
    ``passed`` iff p_ecdf >= alpha), the ECDF p-values and each quantity's full result.
    """
    rows, pvals, band = [], {}, {}
    for q in ranks.columns:
        u = rank_uniformity(ranks[q].to_numpy(), n_ranks, alpha=alpha, seed=seed)
        pvals[q] = u["p_ecdf"]
        band[q] = u
        rows.append({"quantity": q, "p_ecdf": u["p_ecdf"], "p_chi2": u["p_chi2"],
                     "passed": u["p_ecdf"] >= alpha})
    return pd.DataFrame(rows), pvals, band


class _DataSwapper:
    """One compiled model, many data sets: nutpie's ``with_data`` (numba) or ``set_value`` (c).
    ``updates(name, data)`` gives the containers' values (default :func:`data_updates`).

    The numba backend bakes pointers to the data into its C callback and swaps them with
    ``with_data``; the ``"c"`` backend of :mod:`models.compile_cache` calls PyTensor
    functions whose shared variables are the model's ``pm.Data`` containers, so setting their
    values changes the data the compiled density reads (PyTensor's shared-storage semantics).
    """

    def __init__(self, model, name: str, backend: str,
                 updates: Callable[[str, ClusteredData], dict] | None = None):
        from models.compile_cache import compile_nutpie

        self.model, self.name, self.backend = model, name, backend
        self.updates = updates or data_updates
        self.compiled = compile_nutpie(model, backend=backend)

    def __call__(self, data: ClusteredData):
        upd = self.updates(self.name, data)
        if self.backend == "numba":
            return self.compiled.with_data(**upd)
        for key, value in upd.items():
            self.model[key].set_value(np.asarray(value, dtype=np.float64))
        return self.compiled


def _loglik_draws(n, xbar, ss, mu, tau, sigma) -> np.ndarray:
    """Log p(X | mu, tau, sigma) for vectors of draws (the closed form, data-dependent)."""
    return marginal_logp_terms(n, xbar, ss, np.asarray(mu)[..., None], np.asarray(tau)[..., None],
                               np.asarray(sigma)[..., None]).sum(-1)


def _sbc_fit(compiled, rng, names, *, draws, tune, chains, cores, target_accept):
    """One SBC fit (:func:`sbc`, :func:`models.checks_mv.sbc_mv`) of a data-swapped nutpie model.

    Returns the posterior and the simulation's record: total divergences and the smallest bulk
    ESS over the variables ``names`` (every element of array-valued ones). The sampler's seed is
    the next draw of ``rng``.
    """
    import arviz as az
    import nutpie

    idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains,
                          cores=cores or min(chains, 2), seed=int(rng.integers(2**31)),
                          progress_bar=False, target_accept=target_accept, save_warmup=False)
    post = idata.posterior
    ess = az.ess(post[list(names)], method="bulk")
    return post, {"divergences": int(idata.sample_stats["diverging"].values.sum()),
                  "min_ess_bulk": float(min(np.nanmin(ess[v].values) for v in names))}


def sbc(
    parameterisation: str,
    n_sims: int,
    *,
    L: int = 8,
    n: int | Sequence[int] = 5,
    priors: Priors = SBC_PRIORS,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
    alpha: float = 0.01,
    cores: int | None = None,
    backend: str = "numba",
) -> SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018) of one form.

    For each simulation: (mu, tau, sigma) ~ ``priors`` (fixed, not data-scaled), data from
    :func:`models.simulate.simulate_univariate` with ``L`` clusters of sizes ``n``, a nutpie fit
    of the form (compiled once: :func:`build_data_model`), every ``thin``-th draw kept
    (M = chains * draws / thin draws), and the rank of the true value among them for mu, tau,
    sigma, icc and the log-likelihood log p(X | mu, tau, sigma) of the simulated data (Modrak
    et al. 2023: a data-dependent quantity that catches what parameter ranks miss). If the
    fit is exact, each rank is uniform on {0..M}; :func:`rank_uniformity` tests it at
    ``alpha`` per quantity (family-wise about 5% for the five quantities).

    Returns
    -------
    SBCResult
        ``passed`` iff every quantity's ECDF p-value >= ``alpha``.
    """
    from threadpoolctl import threadpool_limits

    from models.sampling import _quiet

    if draws % thin:
        raise ValueError(f"draws ({draws}) must be a multiple of thin ({thin})")
    if n_sims < 1:
        raise ValueError("n_sims must be a positive integer")
    sizes = cluster_sizes(L, n)
    rng = np.random.default_rng(seed)
    template = simulate_univariate(L, sizes, mu=0.0, tau=1.0, sigma=1.0, rng=rng).data()
    swap = _DataSwapper(build_data_model(parameterisation, template, priors=priors),
                        parameterisation, backend)
    n_ranks = chains * draws // thin
    ranks, sims = [], []
    # one BLAS thread: OpenBLAS threads spinning on shared cores slow small LAPACK calls ~100x
    with _quiet(), threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_sims):
            theta = priors.draw(rng)
            data = simulate_univariate(L, sizes, rng=rng, **theta).data()
            nn, xbar, ss = data.stats.column(0)
            post, fit_stats = _sbc_fit(swap(data), rng, ("mu", "tau", "sigma"), draws=draws,
                                       tune=tune, chains=chains, cores=cores,
                                       target_accept=target_accept)
            kept = {v: post[v].values[:, ::thin].ravel() for v in ("mu", "tau", "sigma", "icc")}
            truth = dict(theta, icc=theta["tau"]**2 / (theta["tau"]**2 + theta["sigma"]**2))
            kept["loglik"] = _loglik_draws(nn, xbar, ss, kept["mu"], kept["tau"], kept["sigma"])
            truth["loglik"] = float(_loglik_draws(nn, xbar, ss, theta["mu"], theta["tau"],
                                                  theta["sigma"]))
            ranks.append({q: int(np.sum(kept[q] < truth[q])) for q in SBC_QUANTITIES})
            sims.append({**{f"true_{k}": v for k, v in truth.items()}, **fit_stats})
    ranks_df = pd.DataFrame(ranks, columns=list(SBC_QUANTITIES))
    sims_df = pd.DataFrame(sims)
    table, pvals, band = rank_table(ranks_df, n_ranks, alpha, seed)
    passed = bool(table.passed.all())
    failing = list(table.quantity[~table.passed])
    div = int(sims_df.divergences.sum())
    text = (f"SBC {parameterisation}: {n_sims} simulations, L={L}, ranks 0..{n_ranks} "
            f"({chains}x{draws} draws thinned by {thin}); ECDF p-values "
            + ", ".join(f"{q} {pvals[q]:.3f}" for q in SBC_QUANTITIES)
            + (f"; FAILS uniformity for {', '.join(failing)} at alpha {alpha:g}" if failing
               else f"; uniform at alpha {alpha:g} per quantity")
            + f"; {div} divergences in total, median ESS_bulk "
              f"{float(sims_df.min_ess_bulk.median()):.0f}")
    if float(sims_df.min_ess_bulk.median()) < n_ranks:
        text += f" (below the {n_ranks} kept draws: increase thin)"
    return SBCResult(f"sbc_{parameterisation}", passed, table, text,
                     {"n_sims": n_sims, "L": L, "sizes": sizes.tolist(), "alpha": alpha,
                      "draws": draws, "tune": tune, "chains": chains, "thin": thin,
                      "target_accept": target_accept, "divergences": div},
                     ranks=ranks_df, n_ranks=n_ranks, pvalues=pvals, sims=sims_df, band=band)


def plot_sbc(result: SBCResult, path: str | Path | None = None):
    """Plot each quantity's rank ECDF minus the uniform CDF with the simultaneous band.

    Uses :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state). Saves a PNG
    to ``path`` if given; returns the figure.
    """
    from matplotlib.figure import Figure

    qs = list(result.band)
    # the per-quantity level (the multivariate SBC splits its family-wise alpha)
    alpha = result.details.get("alpha_per_quantity", result.details.get("alpha", 0.01))
    fig = Figure(figsize=(3.0 * len(qs), 2.8), layout="constrained")
    axes = fig.subplots(1, len(qs), sharey=True, squeeze=False)[0]
    for ax, q in zip(axes, qs, strict=True):
        b = result.band[q]
        ax.fill_between(b["p"], b["band_lo"], b["band_hi"], step="mid", color="0.85",
                        label=f"{100 * (1 - alpha):.3g}% band")
        ax.step(b["p"], b["ecdf_diff"], where="mid", color="C3" if b["p_ecdf"] < alpha else "C0")
        ax.axhline(0.0, color="0.4", lw=0.6)
        ax.set_title(f"{q} (p={b['p_ecdf']:.3f})", fontsize=9)
        ax.set_xlabel("fractional rank")
    axes[0].set_ylabel("ECDF - uniform")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(result.text.split(";")[0], fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ============================================================================ multivariate
_MV_EXPORTS = ("BROKEN_MV", "MV_SUMMARY_VARS", "SBC_MV_PRIORS", "build_broken_V_not_scaled_by_n",
               "build_data_model_mv", "compare_logp_mv", "mv_prior_draw", "sbc_mv",
               "scipy_loglik_mv")
__all__ += list(_MV_EXPORTS)


def __getattr__(name: str):
    """The multivariate checks of :mod:`models.checks_mv`, re-exported lazily (it imports this
    module)."""
    if name in _MV_EXPORTS:
        from models import checks_mv

        return getattr(checks_mv, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
