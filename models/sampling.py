"""Sampling a built model (nutpie by default, or PyMC's NUTS) and the diagnostics gate.

This is the small piece of "using" a model that :mod:`models.checks` needs itself;
:mod:`analyses.fit` builds the user-facing fitting on top of it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GATE", "Fit", "diagnose", "sample_model"]

# The diagnostics gate (Vehtari et al. 2021 thresholds): a fit failing any of these is not
# trusted, in the checks (never "agrees") and in the report (banner, summary.json).
GATE = {"r_hat": 1.01, "ess_bulk": 400.0, "ess_tail": 400.0, "ebfmi": 0.2, "divergences": 0}
SUMMARY_VARS = ("mu", "tau", "sigma", "icc")


@dataclass
class Fit:
    """One sampled parameterisation: its InferenceData, timings, settings and diagnostics."""

    name: str
    idata: object
    seconds: dict[str, float]
    settings: dict
    diagnostics: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the diagnostics gate passed."""
        return bool(self.diagnostics.get("ok", False))


def _quiet():
    """Silence PyMC/pytensor chatter (sampler logs, warnings) for library use."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("pymc", "pytensor", "arviz"):
        logger = logging.getLogger(name)
        old = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, old)
    return stack


def sample_model(
    model,
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    sampler: str = "nutpie",
    target_accept: float = 0.8,
    progress: bool = False,
    cores: int | None = None,
    backend: str = "numba",
) -> tuple[object, dict[str, float]]:
    """Sample ``model``; returns ``(InferenceData, {"compile": s, "sample": s})``.

    ``model`` is a ``pm.Model``, or a model nutpie has already compiled (such as
    :func:`models.native.compile_sufficient`'s; then ``compile`` is 0). nutpie compiles the model with numba then samples in Rust; ``sampler="pymc"`` uses
    ``pm.sample`` (its compile time is measured by compiling logp and gradient first, which
    fills pytensor's cache for the sampler's own compile). ``backend`` is nutpie's compiler:
    ``"numba"`` (fastest per gradient) or ``"c"`` (pytensor's C backend, cached between runs;
    see :mod:`models.compile_cache`).
    """
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    cores = cores or min(int(chains), os.cpu_count() or 1)
    from threadpoolctl import threadpool_limits

    # Small matrices: multi-threaded BLAS makes them 100x slower on a shared 2-core machine.
    with _quiet(), threadpool_limits(limits=1, user_api="blas"):
        if sampler == "nutpie":
            import nutpie

            from models.compile_cache import compile_nutpie

            t0 = time.perf_counter()
            precompiled = hasattr(model, "_make_sampler")  # a nutpie CompiledModel
            compiled = model if precompiled else compile_nutpie(model, backend=backend)
            t1 = time.perf_counter()
            idata = nutpie.sample(compiled, draws=int(draws), tune=int(tune), chains=int(chains),
                                  cores=cores, seed=int(seed), progress_bar=progress,
                                  target_accept=float(target_accept), save_warmup=False)
            t2 = time.perf_counter()
            # nutpie turns Ctrl-C into a partial trace; a partial run must never look complete
            got = (idata.posterior.sizes.get("chain"), idata.posterior.sizes.get("draw"))
            if got != (int(chains), int(draws)):
                raise KeyboardInterrupt(f"sampling stopped early: {got} of {(chains, draws)}")
        elif sampler == "pymc":
            import pymc as pm

            t0 = time.perf_counter()
            model.compile_logp()
            model.compile_dlogp()
            t1 = time.perf_counter()
            sink = io.StringIO()
            with contextlib.redirect_stderr(sink) if not progress else contextlib.nullcontext():
                idata = pm.sample(draws=int(draws), tune=int(tune), chains=int(chains),
                                  cores=cores, random_seed=int(seed), model=model,
                                  target_accept=float(target_accept), progressbar=progress,
                                  compute_convergence_checks=False)
            t2 = time.perf_counter()
        else:
            raise ValueError(f"unknown sampler '{sampler}'; choose nutpie or pymc")
    return idata, {"compile": t1 - t0, "sample": t2 - t1}


def _ebfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI per chain (Betancourt 2016): mean squared energy change over energy variance."""
    de = np.diff(energy, axis=1)
    return (de**2).mean(axis=1) / energy.var(axis=1)


def diagnose(idata, var_names=SUMMARY_VARS) -> dict:
    """Sampler diagnostics and the gate's verdict for ``var_names``.

    Returns r_hat (max), ess_bulk and ess_tail (min), divergences, E-BFMI (min over chains),
    tree-depth saturation, the list of ``problems`` and ``ok``.
    """
    import arviz as az

    with _quiet():
        names = [v for v in var_names if v in idata.posterior]
        post = idata.posterior[names]
        rhat = az.rhat(post)
        ess_b = az.ess(post, method="bulk")
        ess_t = az.ess(post, method="tail")
    r_hat = float(max(np.nanmax(rhat[v].values) for v in names))
    ess_bulk = float(min(np.nanmin(ess_b[v].values) for v in names))
    ess_tail = float(min(np.nanmin(ess_t[v].values) for v in names))
    stats = idata.sample_stats
    div_name = "diverging" if "diverging" in stats else None
    divergences = int(stats[div_name].values.sum()) if div_name else 0
    ebfmi = float(np.min(_ebfmi(stats["energy"].values))) if "energy" in stats else float("nan")
    depth_hits = 0
    if "maxdepth_reached" in stats:
        depth_hits = int(stats["maxdepth_reached"].values.sum())
    elif "reached_max_treedepth" in stats:
        depth_hits = int(stats["reached_max_treedepth"].values.sum())
    max_depth = None
    for key in ("depth", "tree_depth"):
        if key in stats:
            max_depth = int(stats[key].values.max())
    problems = []
    if divergences > GATE["divergences"]:
        problems.append(f"{divergences} divergent transitions")
    if not r_hat <= GATE["r_hat"]:
        problems.append(f"r_hat {r_hat:.3f} > {GATE['r_hat']}")
    if not ess_bulk >= GATE["ess_bulk"]:
        problems.append(f"ESS_bulk {math.floor(ess_bulk)} < {GATE['ess_bulk']:.0f}")
    if not ess_tail >= GATE["ess_tail"]:
        problems.append(f"ESS_tail {math.floor(ess_tail)} < {GATE['ess_tail']:.0f}")
    if np.isfinite(ebfmi) and ebfmi < GATE["ebfmi"]:
        problems.append(f"E-BFMI {ebfmi:.2f} < {GATE['ebfmi']}")
    return {"r_hat": r_hat, "ess_bulk": ess_bulk, "ess_tail": ess_tail,
            "divergences": divergences, "ebfmi": ebfmi, "treedepth_hits": depth_hits,
            "max_treedepth": max_depth, "problems": problems, "ok": not problems}
