"""Fitting: build, compile and sample each parameterisation, summarise, write outputs atomically.

The Python API for notebooks is :func:`fit` (returns the InferenceData objects) and
:func:`run` (fit and write ``summary.json``, ``report.html`` and one NetCDF per form).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analyses.outputs import (checkpoint, dump_json, resolve_out, stop_on_signals,
                              write_atomically)
from models import NAMES, ClusteredData, build
from models.data import DataError
from models.estimate import PointEstimate, fit_ml, fit_reml
from models.sampling import SUMMARY_VARS, Fit, diagnose, sample_model

__all__ = ["FitResult", "fit", "run", "summarise", "write_outputs"]

HDI_PROB = 0.94
# The sufficient form runs on models.native / models.native_mv (hand-written numba, cached on
# disk: no pytensor graph at all). Every other form uses nutpie's numba backend: fastest per
# gradient and free of the GIL across chains. pytensor's C backend ("c", cached on disk:
# models.compile_cache) compiles faster on re-runs but samples 20x slower (gcsemv sufficient:
# 23.7 s against 1.1 s of sampling), so no form uses it here.


@dataclass
class FitResult:
    """Everything one ``varcomp fit`` produces."""

    data: ClusteredData
    fits: dict[str, Fit]
    estimates: dict[str, PointEstimate] = field(default_factory=dict)
    comparison: object | None = None
    summary: dict = field(default_factory=dict)

    @property
    def idata(self) -> dict[str, object]:
        """The InferenceData of each fit, by parameterisation."""
        return {name: f.idata for name, f in self.fits.items()}


# ``--model all`` leaves out the multivariate literal MvNormal when it would need more blocks
# (distinct cluster layouts, each its own MvNormal graph) than this: gcsemv has 68, and compiling
# and sampling them takes far longer than the other three forms together. Asked for by name,
# it still runs.
MV_MARGINAL_MAX_BLOCKS = 8


def _models(model: str | Sequence[str]) -> list[str]:
    names = list(NAMES) if model == "all" else [model] if isinstance(model, str) else list(model)
    for n in names:
        if n not in NAMES:
            raise ValueError(f"unknown model '{n}': choose one of {', '.join(NAMES)} or all")
    return names


def skipped_in_all(data) -> dict[str, str]:
    """Forms that ``model="all"`` leaves out for these data, with the reason."""
    if data.p == 1:
        return {}
    from models.multivariate import marginal_block_count

    blocks = marginal_block_count(data)
    if blocks <= MV_MARGINAL_MAX_BLOCKS:
        return {}
    return {"marginal": f"the literal MvNormal would need {blocks} blocks (distinct cluster "
                        f"layouts; limit {MV_MARGINAL_MAX_BLOCKS} for --model all): ask for "
                        f"--model marginal to run it anyway"}


def _check_settings(draws: int, tune: int, chains: int, sampler: str) -> None:
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if sampler not in ("nutpie", "pymc"):
        raise ValueError(f"unknown sampler '{sampler}': choose nutpie or pymc")


def fit(
    data: ClusteredData,
    model: str | Sequence[str] = "sufficient",
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
    """Fit one parameterisation (or ``"all"``) to ``data``; no files are written.

    Every fit gets ``group_effect`` draws (the marginal forms by exact conditional draws),
    its diagnostics, and timings of build, compile and sampling. Univariate data also get the
    ML and REML estimates, and several fits get the posterior comparison of
    :func:`models.checks.compare_posteriors`.
    """
    names = _models(model)
    _check_settings(draws, tune, chains, sampler)
    data.require_identifiable()
    skipped = skipped_in_all(data) if model == "all" else {}
    names = [n for n in names if n not in skipped]
    fits: dict[str, Fit] = {}
    for name in names:
        _import_for(name, data, sampler, priors)  # imports are not build time
        t0 = time.perf_counter()
        m, backend = prepare(name, data, priors=priors, sampler=sampler)
        t_build = time.perf_counter() - t0
        idata, sec = sample_model(m, draws=draws, tune=tune, chains=chains, seed=seed,
                                  sampler=sampler, target_accept=target_accept,
                                  progress=progress, backend=backend)
        checkpoint()
        t1 = time.perf_counter()
        _add_group_effects(idata, data, seed)
        seconds = {"build": t_build, "compile": sec["compile"], "sample": sec["sample"]}
        seconds["total"] = t_build + sec["compile"] + sec["sample"] + (time.perf_counter() - t1)
        settings = {"draws": draws, "tune": tune, "chains": chains, "seed": seed,
                    "sampler": sampler, "target_accept": target_accept,
                    "backend": backend if sampler == "nutpie" else "pymc"}
        fits[name] = Fit(name, idata, seconds, settings, diagnose(idata, _summary_vars(idata)))
    estimates = {}
    if data.p == 1:
        estimates = {"ml": fit_ml(data), "reml": fit_reml(data)}
    comparison = None
    if len(fits) > 1:
        comparison = _compare(data, fits, priors)
    result = FitResult(data, fits, estimates, comparison)
    result.summary = summarise(result)
    if skipped:
        result.summary["skipped"] = skipped
    return result


def prepare(name: str, data, *, priors=None, sampler: str = "nutpie") -> tuple[object, str]:
    """What :func:`fit` samples for form ``name``: ``(model, backend)``.

    The ``sufficient`` form sampled by nutpie is :mod:`models.native`'s (univariate) or
    :mod:`models.native_mv`'s (multivariate) compiled density (an already compiled nutpie
    model, backend ``"native"``); every other form is its
    PyMC model, compiled by nutpie's numba backend. PyMC is imported only
    when a PyMC model is built.
    """
    if _native_route(name, data, sampler, priors):
        if data.p > 1:
            from models import native_mv

            return native_mv.compile_sufficient_mv(data, priors), "native"
        from models import native

        return native.compile_sufficient(data.stats, priors or _default_priors(data)), "native"
    return build(name, data, priors=priors), "numba"


def _import_for(name: str, data, sampler: str, priors) -> None:
    if _native_route(name, data, sampler, priors):
        import models.native  # noqa: F401  (loads the cached machine code)
        import models.native_mv  # noqa: F401
        import nutpie  # noqa: F401
    else:
        import pymc  # noqa: F401


def _default_priors(data):
    from models.priors import Priors

    return Priors.default(data)


def _native_route(name: str, data, sampler: str, priors) -> bool:
    """Whether this fit runs on :mod:`models.native` / :mod:`models.native_mv` (the
    sufficient form sampled by nutpie)."""
    if name != "sufficient" or sampler != "nutpie":
        return False
    if data.p > 1:
        return True  # MvPriors: HalfNormal sds and LKJ, all covered by models.native_mv
    from models.native import supported

    return supported(priors or _default_priors(data))


def _add_group_effects(idata, data: ClusteredData, seed: int) -> None:
    if "group_effect" in idata.posterior:
        return
    if data.p == 1:
        from models.effects import add_group_effects

        add_group_effects(idata, data, seed=seed)
    else:
        from models import multivariate

        multivariate.add_group_effects_mv(idata, data, seed=seed)


def _compare(data: ClusteredData, fits: dict[str, Fit], priors):
    from models import checks

    reference = None
    if data.p == 1:
        reference = checks.reference_posterior(data, priors or _default_priors(data))
    return checks.compare_posteriors(fits, reference=reference)


def _summary_vars(idata) -> list[str]:
    names = list(SUMMARY_VARS)
    names += [v for v in ("corr_between", "corr_within") if v in idata.posterior]
    return names


def _flat_names(da) -> Iterable[tuple[str, dict]]:
    """Contract names: ``mu``; ``mu[written]``; ``corr_between[written,course]`` (a < b only)."""
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    if not dims:
        yield da.name, {}
        return
    if len(dims) == 1:
        for label in da[dims[0]].values:
            yield f"{da.name}[{label}]", {dims[0]: label}
        return
    a, b = dims
    labels_a, labels_b = list(da[a].values), list(da[b].values)
    for i, la in enumerate(labels_a):
        for j, lb in enumerate(labels_b):
            if j > i:
                yield f"{da.name}[{la},{lb}]", {a: la, b: lb}


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def param_table(idata) -> dict[str, dict]:
    """Posterior summary per scalar parameter (mean, sd, 94% HDI, ESS, r_hat, MCSE)."""
    import arviz as az

    out: dict[str, dict] = {}
    post = idata.posterior
    for var in _summary_vars(idata):
        if var not in post:
            continue
        for name, sel in _flat_names(post[var]):
            x = post[var].sel(sel) if sel else post[var]
            vals = x.values
            ds = x.to_dataset(name="x")
            hdi = az.hdi(ds, hdi_prob=HDI_PROB)["x"].values
            out[name] = {
                "mean": _num(vals.mean()), "sd": _num(vals.std(ddof=1)),
                "hdi_low": _num(hdi[0]), "hdi_high": _num(hdi[1]),
                "ess_bulk": _num(az.ess(ds, method="bulk")["x"]),
                "ess_tail": _num(az.ess(ds, method="tail")["x"]),
                "r_hat": _num(az.rhat(ds)["x"]),
                "mcse_mean": _num(az.mcse(ds, method="mean")["x"]),
            }
    return out


def summarise(result: FitResult) -> dict:
    """The ``summary.json`` contract (see the README)."""
    d = result.data
    summary: dict = {
        "data": {"source": d.source, "n_obs": d.n_obs, "n_groups": d.n_groups,
                 "group": d.group_name, "response": list(d.responses),
                 "dropped_rows": d.dropped_rows},
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
            "params": param_table(f.idata),
        }
    if result.estimates:
        summary["estimates"] = {
            k: {"mu": e.mu, "tau": e.tau, "sigma": e.sigma, "icc": e.icc,
                "boundary": e.boundary, "criterion": e.criterion}
            for k, e in result.estimates.items()
        }
    if result.comparison is not None:
        c = result.comparison
        table = c.table.replace({np.nan: None}).to_dict(orient="records")
        summary["comparison"] = {"passed": bool(c.passed), "table": table, "text": c.text}
    return summary


def write_outputs(result: FitResult, out: Path, *, inputs=()) -> Path:
    """Write summary.json, report.html and ``<model>.nc`` into ``out`` atomically."""
    from analyses.report import render_report

    def writer(tmp: Path) -> None:
        for name, f in result.fits.items():
            # uncompressed: zlib saves 3% on posterior draws (31k-row set: 75.4 vs 77.8 MB) and
            # costs 2 s there
            f.idata.to_netcdf(str(tmp / f"{name}.nc"), compress=False)
        html = render_report(data=result.data, fits=result.fits, estimates=result.estimates,
                             comparison=result.comparison, summary=result.summary)
        (tmp / "report.html").write_text(html, encoding="utf-8")
        dump_json(result.summary, tmp / "summary.json")

    return write_atomically(out, writer, inputs=inputs)


def run(data: ClusteredData, *, out: Path, **kwargs) -> FitResult:
    """Fit (see :func:`fit`) and write the outputs into ``out``; returns the result.

    ``out`` is checked first (:func:`analyses.outputs.resolve_out`): an existing folder that
    varcomp did not write is refused before any sampling.
    """
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
