"""Fitting: build, compile and sample each form of the data's family, summarise, write outputs.

The Python API for notebooks is :func:`fit` (returns the InferenceData objects) and
:func:`run` (fit and write ``summary.json``, ``report.html`` and one NetCDF per form).
Which forms exist, what each samples and which names it reports are asked of the family
(:func:`models.forms.family_of`); this module tests nothing about the kind of data.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varcomp.analyses.outputs import (
    checkpoint,
    dump_json,
    resolve_out,
    stop_on_signals,
    write_atomically,
)
from varcomp.models import ClusteredData, family_of
from varcomp.models.errors import DataError
from varcomp.models.forms import Family, Form
from varcomp.models.forms.mixed import effect_names
from varcomp.models.pointwise import add_pointwise
from varcomp.models.predictive import add_new_cluster
from varcomp.models.sampling import (
    HDI_PROB,
    Fit,
    chain_draw_values,
    diagnose,
    posterior_stats,
    sample_model,
)

__all__ = ["FitResult", "check_memory", "fit", "param_table", "prepare", "run", "summarise",
           "write_outputs"]


@dataclass
class FitResult:
    """Everything one ``varcomp fit`` produces."""

    data: ClusteredData
    family: Family
    fits: dict[str, Fit]
    estimates: dict = field(default_factory=dict)
    comparison: object | None = None
    summary: dict = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def idata(self) -> dict[str, object]:
        """The InferenceData of each fit, by parameterisation."""
        return {name: f.idata for name, f in self.fits.items()}


def _models(family: Family, model: str | Sequence[str] | None, data) -> list[str]:
    if model is None:
        return [family.default(data)]
    if model == "all":
        return list(family.forms)  # those that do not apply are reported as skipped
    names = [model] if isinstance(model, str) else list(model)
    for n in names:  # one line naming the family's forms, or why this one does not apply
        family.form_for(n, data)
    return names


def _check_settings(draws: int, tune: int, chains: int, sampler: str) -> None:
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise DataError(f"--{name} must be a positive integer, got {value}")
    if sampler not in ("nutpie", "pymc"):
        raise DataError(f"unknown sampler '{sampler}': choose nutpie or pymc")


def check_memory(family: Family, data, names: Sequence[str], draws: int, chains: int) -> None:
    """Refuse, before any work, a run whose posterior draws would not fit in memory.

    Per draw and form: the parameters (a few dozen numbers, p^2 per matrix) plus the group
    effects (L x p; latent forms hold their sampled coordinates too; a form that integrates them
    out stores their moments instead of draws above 10^7 values); 8 bytes each, three copies
    (the sampler's trace, the InferenceData, the NetCDF writer). The budget is half of this
    machine's memory (:func:`models.data.memory_budget`).
    """
    from varcomp.models.data import memory_budget
    from varcomp.models.effects import MAX_DRAW_VALUES

    p = len(data.responses)
    total = 0
    for name in names:
        form = family.form(name)
        group = data.n_groups * p * (2 if form.latent else 1)
        if not form.latent and draws * chains * data.n_groups > MAX_DRAW_VALUES:
            group = 0
        total += (64 + 6 * p * p + group) * draws * chains * 8 * 3
    budget = memory_budget()
    if total > budget:
        raise DataError(f"{len(names)} fit(s) of {chains} chains x {draws:,} draws would hold "
                         f"about {total / 2**30:.1f} GiB of draws, more than the "
                         f"{budget / 2**30:.1f} GiB budget (half of this machine's memory): use "
                         f"fewer --draws or --chains")


def check_data(data) -> None:
    """Raise a one-line ``TypeError`` unless ``data`` is loaded data varcomp can fit."""
    from varcomp.models.chunked import SufficientData
    from varcomp.models.formula_stats import CellData

    if not isinstance(data, (ClusteredData, SufficientData, CellData)):
        hint = (" (a FitResult is a fit's output; pass its .data to fit again)"
                if isinstance(data, FitResult) else
                " (a DataFrame: models.load(df, formula=...) or group=/response=)"
                if "pandas" in type(data).__module__ else "")
        raise TypeError(f"fit takes data from models.load (ClusteredData), not "
                        f"{type(data).__name__}{hint}")


def fit(
    data: ClusteredData,
    model: str | Sequence[str] | None = None,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    sampler: str = "nutpie",
    priors=None,
    target_accept: float = 0.8,
    progress: bool = False,
) -> FitResult:
    """Fit one form (default: the family's default), several, or ``"all"`` to ``data``.

    No files are written. Every fit gets group effects (the marginal forms by exact conditional
    draws from the family), its diagnostics and timings of build, compile and sampling; the
    family's ML/REML estimates are added when it has them, and several fits get the posterior
    comparison of :func:`models.checks.compare_posteriors`.
    """
    check_data(data)
    family = family_of(data)
    names = _models(family, model, data)
    _check_settings(draws, tune, chains, sampler)
    check_memory(family, data, names, draws, chains)
    data.require_identifiable()
    skipped = family.skipped(data) if model == "all" else {}
    fits: dict[str, Fit] = {}
    for name in [n for n in names if n not in skipped]:
        form = family.form(name)
        _import_for(form, sampler)  # imports are not build time
        t0 = time.perf_counter()
        m, backend = prepare(form, data, priors=priors, sampler=sampler)
        t_build = time.perf_counter() - t0
        idata, sec = sample_model(m, draws=draws, tune=tune, chains=chains, seed=seed,
                                  sampler=sampler, target_accept=target_accept,
                                  progress=progress, backend=backend)
        checkpoint()
        t1 = time.perf_counter()
        if not form.latent:
            family.add_effects(idata, data, seed)
        if family.derive is not None:
            family.derive(idata, data, family.likelihood)
        effects = [v for v, _ in effect_names(data)] if form.latent and family.design else ()
        add_pointwise(idata, family, data, priors or family.default_priors(data), effects)
        add_new_cluster(idata, family, data, seed)
        seconds = {"build": t_build, "compile": sec["compile"], "sample": sec["sample"]}
        seconds["total"] = t_build + sec["compile"] + sec["sample"] + (time.perf_counter() - t1)
        settings = {"draws": draws, "tune": tune, "chains": chains, "seed": seed,
                    "sampler": sampler, "target_accept": target_accept,
                    "backend": backend if sampler == "nutpie" else "pymc"}
        stats = posterior_stats(idata, family.summary_vars)
        fits[name] = Fit(name, idata, seconds, settings,
                         diagnose(idata, family.summary_vars, stats), stats)
    estimates = family.estimates(data) if family.estimates else {}
    comparison = None
    if len(fits) > 1:
        from varcomp.models.checks import compare_posteriors

        reference = family.reference(data, priors) if family.reference else None
        comparison = compare_posteriors(fits, reference=reference,
                                        var_names=family.compare_vars)
    result = FitResult(data, family, fits, estimates, comparison, skipped=skipped)
    result.summary = summarise(result)
    return result


def prepare(form: Form, data, *, priors=None, sampler: str = "nutpie") -> tuple[object, str]:
    """What :func:`fit` samples for ``form``: ``(model, backend)``.

    With nutpie, a form with a compiled route (:mod:`models.compiled`) runs as that hand-written
    machine code (an already compiled nutpie model, backend ``"native"``) when it covers the
    priors; every other form is its PyMC model, compiled by nutpie's numba backend. PyMC is
    imported only when a PyMC model is built.
    """
    if sampler == "nutpie" and form.compiled is not None:
        compiled = form.compiled(data, priors)
        if compiled is not None:
            return compiled, "native"
    return form.build(data, priors=priors), "numba"


def _import_for(form: Form, sampler: str) -> None:
    from varcomp.models.sampling import import_arviz

    import_arviz()
    if sampler == "nutpie" and form.compiled is not None:
        import nutpie  # noqa: F401  (the compiled route's only heavy import)
    else:
        import pymc  # noqa: F401


# ---------------------------------------------------------------------------- summary.json
def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _element_labels(post, var_names: Sequence[str]) -> list[tuple[str, str, dict]]:
    """(contract label, variable, selection) of each scalar the tables report.

    Vectors by element (``mu[written]``), matrices over (outcome, outcome_bis) by their upper
    triangle without the diagonal (``corr_between[written,course]``).
    """
    out = []
    for var in var_names:
        if var not in post:
            continue
        dims = [d for d in post[var].dims if d not in ("chain", "draw")]
        if not dims:
            out.append((var, var, {}))
        elif len(dims) == 1:
            out += [(f"{var}[{x}]", var, {dims[0]: x}) for x in post[var][dims[0]].values]
        else:
            labels = list(post[var][dims[0]].values)
            out += [(f"{var}[{a},{b}]", var, {dims[0]: a, dims[1]: b})
                    for i, a in enumerate(labels) for j, b in enumerate(labels) if j > i]
    return out


PSENS_THRESHOLD = 0.05
"""priorsense's threshold: a power-scaling sensitivity above it is worth a look."""


def prior_sensitivity(idata, var_names: Sequence[str]) -> dict[str, dict]:
    """Power-scaling sensitivity (``arviz.psens``) of each reported parameter.

    Sensitivity to the prior and to the likelihood, flagged when the prior's exceeds 0.05
    (Kallioinen et al. 2024).

    ``diagnosis``: "prior-data conflict" when both exceed 0.05, "weak likelihood" (the prior
    dominates) when only the prior's does, else "". Empty without log_prior/log_likelihood.

    ``az.psens`` computed on NumPy arrays (:func:`_psens`): the same steps, without its
    stacking of the draws into xarray objects (0.07 s of a 0.35 s warm Dyestuff refit).
    tests/test_compare.py and tests/test_crossed.py hold the numbers equal to ``az.psens``.
    """
    groups = idata.groups()
    if "log_prior" not in groups or "log_likelihood" not in groups:
        return {}
    post = idata.posterior
    names = [v for v in var_names if v in post]
    prior_w = _power_weights(_component_total(_draws(idata.log_prior)))
    lik_w = _power_weights(_total_loglik(idata))
    with np.errstate(all="ignore"):
        prior = {v: _psens(post[v], prior_w) for v in names}
        lik = {v: _psens(post[v], lik_w) for v in names}
    out = {}
    for label, var, sel in _element_labels(post, names):
        index = tuple(post[var].get_index(dim).get_loc(value) for dim, value in sel.items())
        p, q = _num(prior[var][index]), _num(lik[var][index])
        if p is None or q is None:
            continue
        flagged = p > PSENS_THRESHOLD
        out[label] = {"prior": p, "likelihood": q, "flagged": bool(flagged),
                      "diagnosis": ("prior-data conflict" if flagged and q > PSENS_THRESHOLD
                                    else "weak likelihood" if flagged else "")}
    return out


def sensitivity_likelihood(idata) -> str | None:
    """Which likelihood :func:`prior_sensitivity` power-scaled (``models.pointwise.add_pointwise``).

    "marginal" (the effects integrated out), "conditional" (given the effects drawn: the
    sensitivity of the joint posterior of effects and variances), None without one.
    """
    if "log_prior" not in idata.groups() or "log_likelihood" not in idata.groups():
        return None
    return idata.log_likelihood.attrs.get("likelihood", "marginal")


def _component_total(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One value per draw (chain-major) of (chain, draw, ...) arrays.

    The NaN-skipping sum of all their elements, as ``az.psens`` stacks and sums a component's
    variables.
    """
    n = arrays[0].shape[0] * arrays[0].shape[1]
    stacked = np.concatenate([a.reshape(n, -1) for a in arrays], axis=1)
    return np.where(np.isnan(stacked), 0.0, stacked).sum(axis=1)


def _draws(ds) -> list[np.ndarray]:
    return [chain_draw_values(ds[v]) for v in ds.data_vars]


def _total_loglik(idata) -> np.ndarray:
    """The summed log-likelihood of each draw (chain-major): the sum over every observation.

    What ``arviz.psens(component="likelihood")`` power-scales is that sum (it stacks and sums
    the pointwise values through xarray's NaN-skipping reductions: 0.8 s for 4,000 draws x
    2,410 clusters; 0.02 s as one numpy sum here; tests/test_compare.py holds the two equal).
    A draw whose sum is NaN counts as 0, as in ``az.psens`` given this sum.
    """
    ll = _draws(idata.log_likelihood)
    chains, draws = ll[0].shape[:2]
    return _component_total([sum(a.reshape(chains, draws, -1).sum(axis=-1) for a in ll)])


PSENS_DELTA = 0.01
"""``az.psens``'s default power-scaling step: alpha = 1/(1+delta) and 1+delta."""


def _power_weights(component: np.ndarray, delta: float = PSENS_DELTA) -> list[np.ndarray]:
    """Normalised Pareto-smoothed importance weights of the draws, as ``az.psens`` takes them.

    For power-scaling the summed log density ``component`` by 1/(1+delta) and by 1+delta.
    """
    import arviz as az

    weights = []
    for alpha in (1 / (1 + delta), 1 + delta):
        w = np.exp(az.psislw((alpha - 1) * component)[0])
        weights.append(w / np.sum(w))
    return weights


def _psens(da, weights: list[np.ndarray], delta: float = PSENS_DELTA) -> np.ndarray:
    """``az.psens`` of each element of ``da`` (chain, draw, ...) given :func:`_power_weights`.

    The finite-difference derivative of the cumulative Jensen-Shannon distance between the
    draws and the power-scaled ones (Kallioinen et al. 2024), the larger of the draws' and
    their negation's, at both steps.
    """
    x = chain_draw_values(da)
    shape = x.shape[2:]
    x = x.reshape(x.shape[0] * x.shape[1], -1)
    out = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        d, neg = x[:, j], -1 * x[:, j]
        up, down = np.argsort(d), np.argsort(neg)  # one sort for both steps
        out[j] = sum(max(_cjs_dist(d, w, up), _cjs_dist(neg, w, down)) for w in weights) / (
            2 * np.log2(1 + delta))
    return out.reshape(shape)


def _cjs_dist(draws: np.ndarray, weights: np.ndarray, order: np.ndarray) -> float:
    """Cumulative Jensen-Shannon distance of the weighted draws from the unweighted ones.

    ArviZ's ``_cjs_dist``, step for step; ``order`` is ``np.argsort(draws)``.
    """
    draws, weights = draws[order], weights[order]
    binwidth = np.diff(draws)
    cdf_p = np.linspace(1 / len(draws), 1 - 1 / len(draws), len(draws) - 1)
    cdf_q = np.cumsum(weights / np.sum(weights))[:-1]
    cdf_p_int, cdf_q_int = np.dot(cdf_p, binwidth), np.dot(cdf_q, binwidth)
    pq_numer = np.log2(cdf_p, out=np.zeros_like(cdf_p), where=cdf_p != 0)
    qp_numer = np.log2(cdf_q, out=np.zeros_like(cdf_q), where=cdf_q != 0)
    denom = 0.5 * (cdf_p + cdf_q)
    denom = np.log2(denom, out=np.zeros_like(denom), where=denom != 0)
    cjs_pq = np.sum(binwidth * (cdf_p * (pq_numer - denom))) + 0.5 / np.log(2) * (
        cdf_q_int - cdf_p_int)
    cjs_qp = np.sum(binwidth * (cdf_q * (qp_numer - denom))) + 0.5 / np.log(2) * (
        cdf_p_int - cdf_q_int)
    return np.sqrt((max(0, cjs_pq) + max(0, cjs_qp)) / (cdf_p_int + cdf_q_int))


def param_table(idata, var_names: Sequence[str], stats: dict | None = None) -> dict[str, dict]:
    """Posterior summary per scalar parameter: ArviZ's ``az.summary`` numbers (94% HDI, unrounded).

    Vectors give one row per element (``mu[written]``); matrices over (outcome, outcome_bis)
    give their upper triangle without the diagonal (``corr_between[written,course]``). The one
    table behind summary.json and the report. ``stats``: the fit's
    :func:`models.sampling.posterior_stats` (the gate's numbers), computed here when absent.
    """
    post = idata.posterior
    names = [v for v in var_names if v in post]
    stats = stats or {}
    if missing := [v for v in names if v not in stats]:
        stats = stats | posterior_stats(idata, missing)
    out: dict[str, dict] = {}
    for label, var, sel in _element_labels(post, names):
        da = post[var]
        index = tuple(da.get_index(dim).get_loc(value) for dim, value in sel.items())
        s = stats[var]
        out[label] = {k: _num(s[k][index]) for k in ("mean", "sd", "hdi_low", "hdi_high",
                                                     "ess_bulk", "ess_tail", "r_hat",
                                                     "mcse_mean")}
    return out


def _new_cluster_summary(idata) -> dict:
    """Mean and 94% HDI of a new cluster's effect and mean (:mod:`models.predictive`)."""
    import arviz as az

    if "posterior_predictive" not in idata.groups():
        return {}
    pp = idata.posterior_predictive
    out = {}
    for label, var, sel in _element_labels(pp, ("new_cluster_effect", "new_cluster_mean")):
        x = pp[var].sel(sel)
        lo, hi = az.hdi(x.values.reshape(1, -1)[0], hdi_prob=HDI_PROB)
        out[label] = {"mean": _num(x.mean()), "hdi_low": _num(lo), "hdi_high": _num(hi)}
    return out


def summarise(result: FitResult) -> dict:
    """The ``summary.json`` contract (docs/report.md)."""
    d, family = result.data, result.family
    summary: dict = {
        "data": {"source": d.source, "n_obs": d.n_obs, "n_groups": d.n_groups,
                 "group": d.group_name, "response": list(d.responses),
                 "dropped_rows": d.dropped_rows},
        "family": family.name,
        "fits": {},
    }
    if d.warnings:
        summary["data"]["warnings"] = list(d.warnings)
    for name, f in result.fits.items():
        dg = f.diagnostics
        summary["fits"][name] = {
            "seconds": {k: round(float(v), 3) for k, v in f.seconds.items()},
            "divergences": int(dg["divergences"]),
            "diagnostics_ok": bool(dg["ok"]),
            "problems": list(dg["problems"]),
            "diagnostics": {k: _num(dg[k]) for k in ("r_hat", "ess_bulk", "ess_tail", "ebfmi")}
            | {"treedepth_hits": int(dg["treedepth_hits"])},
            "settings": dict(f.settings),
            "params": param_table(f.idata, family.summary_vars, f.stats),
            "prior_sensitivity": prior_sensitivity(f.idata, family.summary_vars),
            "prior_sensitivity_likelihood": sensitivity_likelihood(f.idata),
            "new_cluster": _new_cluster_summary(f.idata),
        }
        if family.fit_tables is not None:
            summary["fits"][name].update(family.fit_tables(f.idata, d))
    if result.estimates:
        summary["estimates"] = {k: e.as_dict() for k, e in result.estimates.items()}
    if result.comparison is not None:
        c = result.comparison
        table = c.table.replace({np.nan: None}).to_dict(orient="records")
        summary["comparison"] = {"passed": bool(c.passed), "table": table, "text": c.text}
    if result.skipped:
        summary["skipped"] = dict(result.skipped)
    return summary


# ---------------------------------------------------------------------------- outputs
def write_outputs(result: FitResult, out: Path, *, inputs=()) -> Path:
    """Write summary.json, report.html and ``<model>.nc`` into ``out`` atomically."""
    from varcomp.analyses.report import render_report

    def writer(tmp: Path) -> None:
        for name, f in result.fits.items():
            # uncompressed: zlib saves 3% on posterior draws (31k-row set: 75.4 vs 77.8 MB) and
            # costs 2 s there
            f.idata.to_netcdf(str(tmp / f"{name}.nc"), compress=False)
        html = render_report(result)
        (tmp / "report.html").write_text(html, encoding="utf-8")
        dump_json(result.summary, tmp / "summary.json")

    return write_atomically(out, writer, inputs=inputs)


def run(data: ClusteredData, *, out: Path, **kwargs) -> FitResult:
    """Fit (see :func:`fit`) and write the outputs into ``out``; returns the result.

    ``out`` is checked first (:func:`analyses.outputs.resolve_out`): an existing folder that
    varcomp did not write is refused before any sampling.
    """
    check_data(data)
    inputs = [data.source] if Path(data.source).is_file() else []
    resolve_out(out, inputs=inputs)
    with stop_on_signals():
        result = fit(data, **kwargs)
        checkpoint()
        write_outputs(result, Path(out), inputs=inputs)
    return result


def is_terminal() -> bool:
    """Whether stderr is a terminal (then a progress bar is shown)."""
    return sys.stderr.isatty()
