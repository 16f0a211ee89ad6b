"""Sampling, in one module.

A built or compiled model with nutpie (or PyMC's NUTS), one compiled model for many data sets of
one design (SBC, checks), and the diagnostics gate.

:mod:`models.checks` needs sampling itself; :mod:`analyses.fit` builds the user-facing fitting on
top of it. Nothing else calls ``nutpie.sample`` or ``pm.sample``.
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

from varcomp.models.errors import DataError

__all__ = ["GATE", "HDI_PROB", "STATS", "DataSwapper", "Fit", "chain_draw_values", "diagnose",
           "import_arviz", "posterior_stats", "quiet", "sample_compiled", "sample_model",
           "trace_to_idata"]

# The diagnostics gate (Vehtari et al. 2021 thresholds): a fit failing any of these is not
# trusted, in the checks (never "agrees") and in the report (banner, summary.json).
GATE = {"r_hat": 1.01, "ess_bulk": 400.0, "ess_tail": 400.0, "ebfmi": 0.2, "divergences": 0}

HDI_PROB = 0.94
"""The probability of every highest-density interval varcomp reports."""

STATS = ("mean", "sd", "hdi_low", "hdi_high", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")
"""What :func:`posterior_stats` gives per element: the parameter table's columns."""


@dataclass
class Fit:
    """One sampled parameterisation: its InferenceData, timings, settings and diagnostics."""

    name: str
    idata: object
    seconds: dict[str, float]
    settings: dict
    diagnostics: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    """:func:`posterior_stats` of the reported variables (the gate's and the table's numbers)."""

    @property
    def ok(self) -> bool:
        """Whether the diagnostics gate passed."""
        return bool(self.diagnostics.get("ok", False))


def import_arviz():
    """ArviZ (and so nutpie, which imports it), imported without run-time numba compilation.

    Measured on this 2-core machine, per process: ArviZ compiles ``_binom_pmf`` (an eagerly
    typed ``numba.vectorize`` of its ECDF bands, which varcomp never draws) while it is
    imported, ~0.35 s, and its numba ``stats_variance_1d`` (used by ``rhat``) on first use,
    ~0.3 s; neither is cached. Here the vectorize is made lazy for the duration of the import
    (it compiles on first call, if ever) and ArviZ's numba paths are switched off (its NumPy
    variance is the same statistic). ``varcomp fit`` then compiles nothing once numba's caches
    of :mod:`models.compiled` exist (tests/test_latency.py).
    """
    import sys

    if "arviz" not in sys.modules:
        import numba

        eager = numba.vectorize

        def lazy(*args, **kwargs):
            if args and isinstance(args[0], (list, tuple, str)):  # signatures: compile later
                args = args[1:]
            return eager(*args, **kwargs)

        numba.vectorize = lazy
        try:
            import arviz
        finally:
            numba.vectorize = eager
    import arviz

    arviz.Numba.disable_numba()
    return arviz


def quiet():
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

    ``model`` is a ``pm.Model``, or a model nutpie has already compiled (such as a form's
    compiled route, :mod:`models.compiled`; then ``compile`` is 0). nutpie compiles the model
    with numba then samples in Rust; ``sampler="pymc"`` uses ``pm.sample`` (its compile time is
    measured by compiling logp and gradient first, which fills pytensor's cache for the sampler's
    own compile). ``backend`` is nutpie's compiler: ``"numba"`` (fastest per gradient) or ``"c"``
    (pytensor's C backend, cached between runs; see :mod:`models.compiled.nutpie`).
    """
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if int(value) < 1:
            raise DataError(f"{name} must be a positive integer, got {value}")
    cores = cores or min(int(chains), os.cpu_count() or 1)
    from threadpoolctl import threadpool_limits

    # Small matrices: multi-threaded BLAS makes them 100x slower on a shared 2-core machine.
    with quiet(), threadpool_limits(limits=1, user_api="blas"):
        if sampler == "nutpie":
            from varcomp.models.compiled.nutpie import compile_pymc

            t0 = time.perf_counter()
            precompiled = hasattr(model, "_make_sampler")  # a nutpie CompiledModel
            compiled = model if precompiled else compile_pymc(model, backend=backend)
            t1 = time.perf_counter()
            idata = sample_compiled(compiled, draws=draws, tune=tune, chains=chains,
                                    cores=cores, seed=seed, progress=progress,
                                    target_accept=target_accept)
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
            raise DataError(f"unknown sampler '{sampler}'; choose nutpie or pymc")
    return idata, {"compile": t1 - t0, "sample": t2 - t1}


def sample_compiled(compiled, *, draws: int, tune: int, chains: int, seed: int,
                    target_accept: float = 0.8, cores: int | None = None,
                    progress: bool = False, maxdepth: int | None = None):
    """``nutpie.sample`` of a compiled model (no warm-up saved); returns the InferenceData.

    The trace is taken raw and made into the InferenceData by :func:`trace_to_idata` (the
    same groups, variables, dims, coordinates and attributes as nutpie's own conversion, in
    ~5 ms instead of ~0.1 s; tests/test_sampling.py holds the two identical).
    """
    import nutpie

    extra = {} if maxdepth is None else {"maxdepth": int(maxdepth)}
    trace = nutpie.sample(compiled, draws=int(draws), tune=int(tune), chains=int(chains),
                          cores=int(cores or min(int(chains), os.cpu_count() or 1)),
                          seed=int(seed), progress_bar=progress,
                          target_accept=float(target_accept), save_warmup=False,
                          return_raw_trace=True, **extra)
    return trace_to_idata(trace, compiled)


SKIPPED_STATS = ("chain", "draw", "gradient", "unconstrained_draw", "mass_matrix_inv",
                 "mass_matrix_eigvals", "mass_matrix_stds", "divergence_start",
                 "divergence_end", "divergence_momentum", "divergence_start_gradient")
"""Sampler statistics nutpie's conversion leaves out with varcomp's settings (nothing stored
beyond the defaults; ``chain`` and ``draw`` are the coordinates)."""


def trace_to_idata(trace, compiled):
    """The raw Arrow trace of ``nutpie.sample`` as ArviZ InferenceData (warm-up left out).

    What nutpie's ``_arrow_to_arviz`` and ``arviz.from_dict`` make of it (posterior and
    sample_stats; each variable ``(chain, draw, *shape)`` with the model's dims or ArviZ's
    ``<name>_dim_<i>``; a chain shorter than the longest padded with NaN, or 0 for integers
    and booleans), built as two xarray Datasets directly: ``from_dict`` builds each variable
    as its own DataArray and aligns them, ~0.1 s of a warm Dyestuff refit.
    """
    import pyarrow
    from arviz import InferenceData
    from arviz.data.base import make_attrs

    draw_batches, stat_batches = trace.get_arrow_trace()
    tuning = [int(b.column("tuning").to_numpy().sum()) for b in stat_batches]
    draw_batches = [b.slice(n, b.num_rows - n) for b, n in zip(draw_batches, tuning, strict=True)]
    stat_batches = [b.slice(n, b.num_rows - n) for b, n in zip(stat_batches, tuning, strict=True)]
    model_coords = {k: np.asarray(v) for k, v in (compiled.coords or {}).items()}

    def dataset(batches, skip) -> object:
        import xarray as xr

        length = max(b.num_rows for b in batches)
        arrays: dict[str, np.ndarray] = {}
        dims: dict[str, list[str]] = {}
        for chain, batch in enumerate(batches):
            for name in batch.column_names:
                if name in skip:
                    continue
                col = batch.column(name)
                meta = col.field.metadata
                shape = [int(x) for x in meta[b"shape"].decode().split(",")] \
                    if meta.get(b"shape") else []
                col = pyarrow.array(col)
                nulls = col.is_null().to_numpy(zero_copy_only=False)
                col = col.flatten() if hasattr(col, "flatten") else col
                values = col.to_numpy(False)
                if name not in arrays:
                    dtype = col.type.to_pandas_dtype()
                    fill = np.nan if dtype in (np.float64, np.float32) else 0
                    arrays[name] = np.full((len(batches), length, *shape), fill, dtype=dtype)
                    named = meta[b"dims"].decode().split(",") if meta.get(b"dims") else []
                    dims[name] = named + [f"{name}_dim_{i}" for i in
                                          range(len(named), len(shape))]
                rows = arrays[name][chain, :batch.num_rows]
                if nulls.any():
                    rows[~nulls] = values.reshape((int((~nulls).sum()), *shape))
                else:
                    rows[...] = values.reshape((batch.num_rows, *shape))
        coords = {"chain": np.arange(len(batches)), "draw": np.arange(length)}
        for name, arr in arrays.items():
            for dim, size in zip(dims[name], arr.shape[2:], strict=True):
                coords.setdefault(dim, model_coords.get(dim, np.arange(size)))
        return xr.Dataset({k: (("chain", "draw", *dims[k]), v) for k, v in arrays.items()},
                          coords=coords, attrs=make_attrs())

    return InferenceData(posterior=dataset(draw_batches, ()),
                         sample_stats=dataset(stat_batches, SKIPPED_STATS))


class DataSwapper:
    """One compiled model of a form, many data sets of the same design (checks, SBC).

    The form's builder puts its data in ``pm.Data`` containers and ``form.data_values(data)``
    gives their values for new data. The numba backend bakes pointers to the data into its C
    callback and swaps them with nutpie's ``with_data``; the ``"c"`` backend calls PyTensor
    functions whose shared variables are the containers, so ``set_value`` changes the data the
    compiled density reads. Data whose containers have other shapes than the template's are
    refused (the compiled graph holds the design).
    """

    def __init__(self, form, template, priors, backend: str = "numba"):
        from varcomp.models.compiled.nutpie import compile_pymc

        self.form, self.backend = form, backend
        self.shapes = {k: np.shape(v) for k, v in form.data_values(template).items()}
        self.design = _design_signature(template)
        with quiet():
            self.model = form.build(template, priors=priors)
            self.compiled = compile_pymc(self.model, backend=backend)

    def __call__(self, data):
        """The compiled model with ``data``'s values in its containers."""
        values = {k: np.asarray(v, dtype=np.float64) for k, v in
                  self.form.data_values(data).items()}
        if ({k: v.shape for k, v in values.items()} != self.shapes
                or not _same_design(_design_signature(data), self.design)):
            raise DataError("the data's design (clusters, sizes, missing cells, covariates) "
                            "differs from the compiled model's; rebuild it")
        if self.backend == "numba":
            return self.compiled.with_data(**values)
        for key, value in values.items():
            self.model[key].set_value(value)
        return self.compiled


def _design_signature(data) -> tuple:
    """What a compiled graph holds of a data set besides its values.

    Each row's cluster, which cells are observed, and the fixed-effects design.
    """
    X = getattr(data.design, "X", None)  # the fixed effects, where the data have them
    return (np.asarray(data.codes), np.isfinite(np.asarray(data.y)),
            None if X is None else np.asarray(X))


def _same_design(a: tuple, b: tuple) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None
                                             and np.array_equal(x, y))
               for x, y in zip(a, b, strict=True))


def _ebfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI per chain (Betancourt 2016): mean squared energy change over energy variance."""
    de = np.diff(energy, axis=1)
    return (de**2).mean(axis=1) / energy.var(axis=1)


def chain_draw_values(da) -> np.ndarray:
    """The values of a DataArray with its dims ordered (chain, draw, ...)."""
    if da.dims[:2] == ("chain", "draw"):
        return da.values
    return da.transpose("chain", "draw", ...).values


def posterior_stats(idata, var_names) -> dict[str, dict[str, np.ndarray]]:
    """ArviZ's summary statistics (:data:`STATS`) of each element of each variable, by variable.

    Computed once per variable for both the diagnostics gate and the parameter table, on NumPy
    arrays: ``az.summary`` and ``az.rhat``/``az.ess`` on the posterior Dataset spend most of
    their time building xarray objects (~0.09 s on Dyestuff for four scalars). The numbers are
    ArviZ's: mean and sd (ddof=1) over chains and draws as ``az.summary`` takes them, its
    94% HDI (:data:`HDI_PROB`), its MCSE of the mean, and ``az.rhat`` (rank-normalised split
    R-hat) and ``az.ess`` (bulk, tail) of each element's (chain, draw) array
    (tests/test_fit.py holds them equal to ``az.summary``'s and the Dataset functions').
    Variables the posterior lacks are left out.
    """
    import arviz as az

    post = idata.posterior
    out: dict[str, dict[str, np.ndarray]] = {}
    with quiet(), np.errstate(all="ignore"):
        for var in var_names:
            if var not in post:
                continue
            x = np.asarray(chain_draw_values(post[var]), dtype=np.float64)
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            cols = {k: np.empty(flat.shape[2]) for k in STATS[2:]}
            for j in range(flat.shape[2]):
                a = flat[:, :, j]
                cols["hdi_low"][j], cols["hdi_high"][j] = az.hdi(a.ravel(), hdi_prob=HDI_PROB)
                c2 = (a - a.mean()) ** 2  # az.summary's MCSE of the mean, as it computes it
                cols["mcse_mean"][j] = np.sqrt(c2.sum() / (c2.size - 1)
                                               / az.ess(a, method="mean"))
                cols["ess_bulk"][j] = az.ess(a, method="bulk")
                cols["ess_tail"][j] = az.ess(a, method="tail")
                cols["r_hat"][j] = az.rhat(a)
            out[var] = {"mean": x.mean(axis=(0, 1)), "sd": x.std(axis=(0, 1), ddof=1)} | {
                k: v.reshape(x.shape[2:]) for k, v in cols.items()}
    return out


def diagnose(idata, var_names, stats: dict | None = None) -> dict:
    """Sampler diagnostics and the gate's verdict for ``var_names``.

    Returns r_hat (max), ess_bulk and ess_tail (min), divergences, E-BFMI (min over chains),
    tree-depth saturation, the list of ``problems`` and ``ok``. ``stats``: the variables'
    :func:`posterior_stats` when already computed.
    """
    names = [v for v in var_names if v in idata.posterior]
    stats = stats or {}
    if missing := [v for v in names if v not in stats]:
        stats = stats | posterior_stats(idata, missing)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN slices (constant elements) are skipped
        r_hat = float(max(np.nanmax(stats[v]["r_hat"]) for v in names))
        ess_bulk = float(min(np.nanmin(stats[v]["ess_bulk"]) for v in names))
        ess_tail = float(min(np.nanmin(stats[v]["ess_tail"]) for v in names))
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
