"""``varcomp check``: every parameterisation gives one posterior, on simulated data.

For each setting (the notes' two univariate examples, an unbalanced design with singletons, a
moderate design; the notes' bivariate example and one with partly missing rows) it runs the
exact log-density checks of every form of the data's family (:func:`models.forms.family_of`),
samples the forms (raising target_accept and draws once if the diagnostics gate fails),
compares the posteriors with each other and, where the family has one, with the quadrature
reference, and finally runs SBC of the ``sufficient`` forms. Exit 0 iff the exact checks pass,
no reliable pair disagrees, and every form of a family with a reference agrees with it in at
least two settings. SBC verdicts are reported in ``checks.json`` but do not set the exit code.

``--quick`` samples only the forms a setting lists in ``quick`` (the multivariate forms in the
partly-missing setting only, and only ``sufficient`` and ``centred``; the literal MvNormal only
where its graph is small), with fewer draws and 30 SBC simulations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SETTINGS", "Setting", "run_checks"]

MIN_REFERENCE_AGREEMENTS = 2

V_NOTES = ((4.0, 3.0), (3.0, 4.0))
"""The notes' between-cluster covariance (the R code's; the printed [[2, 3], [3, 4]] is not PD)."""
SIGMA_SD, SIGMA_CORR = (0.5, 0.6), -0.8
"""Sigma = D R D with D = diag(0.5, 0.6) and within-cluster correlation -0.8."""


@dataclass(frozen=True)
class Setting:
    """A simulated design.

    Its name, a simulator ``simulate(seed) -> data``, a note, its parameters for checks.json,
    and the forms sampled in ``--quick`` (empty: none).
    """

    name: str
    simulate: Callable[[int], object] = field(repr=False)
    note: str
    params: dict
    quick: tuple[str, ...]


def _univariate(name: str, L: int, n, mu: float, tau: float, sigma: float, note: str,
                quick: tuple[str, ...]) -> Setting:
    from varcomp.models.simulate import simulate_univariate

    def simulate(seed: int):
        return simulate_univariate(L, list(n) if isinstance(n, tuple) else n, mu=mu, tau=tau,
                                   sigma=sigma, rng=seed).data()

    return Setting(name, simulate, note, {"L": L, "n": list(n) if isinstance(n, tuple) else n,
                                          "mu": mu, "tau": tau, "sigma": sigma}, quick)


def _bivariate(name: str, L: int, n, mu, missing: float, note: str,
               quick: tuple[str, ...]) -> Setting:
    def simulate(seed: int):
        from varcomp.models.simulate import Simulated
        from varcomp.models.simulate_mv import (
            drop_components,
            sigma_from_sd_corr,
            simulate_multivariate,
        )

        rng = np.random.default_rng(seed)
        R = np.array([[1.0, SIGMA_CORR], [SIGMA_CORR, 1.0]])
        sim = simulate_multivariate(L, list(n) if isinstance(n, tuple) else n, mu,
                                    np.array(V_NOTES), sigma_from_sd_corr(SIGMA_SD, R), rng)
        frame = drop_components(sim.frame, missing, rng) if missing else sim.frame
        return Simulated(frame, sim.effects, sim.params).data()

    return Setting(name, simulate, note, {"L": L, "n": list(n) if isinstance(n, tuple) else n,
                                          "mu": list(mu), "V": [list(r) for r in V_NOTES],
                                          "sigma_sd": list(SIGMA_SD), "sigma_corr": SIGMA_CORR,
                                          "missing": missing}, quick)


def _simulated(name: str, make: Callable[[int], object], note: str, params: dict) -> Setting:
    """A GLMM or slopes setting (:mod:`models.simulate_glmm`).

    Exact log densities always; sampled only without --quick.
    """
    return Setting(name, lambda seed: make(seed).data(), note, params, ())


def _binomial(seed: int):
    from varcomp.models.simulate_glmm import simulate_glmm

    return simulate_glmm("binomial", 15, 4, mu=-1.0, tau=0.8, trials=5, rng=seed)


def _slopes(seed: int):
    from varcomp.models.simulate_glmm import simulate_slopes

    return simulate_slopes(12, 5, beta=(1.0, 0.5), V=((1.0, 0.3), (0.3, 0.25)), sigma=0.8,
                           rng=seed)


ALL4 = ("centred", "noncentred", "marginal", "sufficient")
LATENT_AND_SUFFICIENT = ("centred", "noncentred", "sufficient")
SETTINGS = (
    _univariate("notes-L5-n1000", 5, 1000, 10.0, 2.0, 0.1,
                "the notes' first example: ICC 0.998, effects pinned down by 1000 rows each",
                LATENT_AND_SUFFICIENT),
    _univariate("notes-L2-n3", 2, 3, 0.0, 2.0, 1.0,
                "the notes' second example: ICC 0.8 from two clusters of three", ALL4),
    # in --quick the literal MvNormal is not sampled here: 9 sizes are 8 MvNormal blocks
    _univariate("unbalanced", 12, (1, 1, 1, 2, 2, 3, 3, 5, 8, 12, 20, 30), 5.0, 1.0, 1.0,
                "unbalanced, three singletons, ICC 0.5", LATENT_AND_SUFFICIENT),
    _univariate("moderate", 30, 10, 0.0, math.sqrt(0.3), math.sqrt(0.7),
                "L = 30, n = 10, ICC 0.3", ALL4),
    _bivariate("mv-notes", 30, 10, (10.0, 20.0), 0.0,
               "the notes' bivariate example: V = [[4, 3], [3, 4]], Sigma = D R D, D = "
               "diag(0.5, 0.6), corr -0.8; 30 clusters of 10 complete rows", ()),
    _bivariate("mv-missing", 20, (2, 3, 4, 5, 6, 7, 8, 2, 3, 4, 5, 6, 7, 8, 3, 4, 5, 6, 2, 8),
               (10.0, 20.0), 0.2,
               "the same V and Sigma, 20 clusters of 2-8 rows, 20% of the outcome values missing "
               "(rows partly observed)", ("sufficient", "centred")),
    _simulated("binomial-L15", _binomial,
               "one-way binomial (logit), 15 clusters of 4 rows of 5 trials, mu -1, tau 0.8",
               {"L": 15, "n": 4, "trials": 5, "mu": -1.0, "tau": 0.8}),
    _simulated("slopes-L12", _slopes,
               "y ~ x + (1 + x | g), 12 clusters of 5, V = [[1, 0.3], [0.3, 0.25]], sigma 0.8",
               {"L": 12, "n": 5, "beta": [1.0, 0.5], "V": [[1.0, 0.3], [0.3, 0.25]],
                "sigma": 0.8}),
)


class CompileCounter:
    """Counts PyTensor's work while active: functions compiled, C modules built (cache misses).

    ``functions`` counts :func:`pytensor.function` graphs (every mode); ``c_modules`` counts C
    compilations (``GCC_compiler.compile_str``: a module not found in the compiledir), the
    expensive part of a cold run. ``graphs`` lists each function's outputs' names.
    """

    def __init__(self) -> None:
        self.functions, self.c_modules, self.graphs = 0, 0, []

    def __enter__(self) -> CompileCounter:
        from importlib import import_module

        from pytensor.link.c import cmodule

        pfunc = import_module("pytensor.compile.function.pfunc")  # the module, not the function
        self._saved = (pfunc.orig_function, cmodule.GCC_compiler.__dict__["compile_str"])
        real_function, real_compile = pfunc.orig_function, cmodule.GCC_compiler.compile_str

        def orig_function(inputs, outputs, *args, **kwargs):
            self.functions += 1
            outs = outputs if isinstance(outputs, list | tuple) else [outputs]
            self.graphs.append(f"{len(inputs)} inputs -> {len(outs)} outputs, mode "
                               f"{getattr(kwargs.get('mode'), 'optimizer', kwargs.get('mode'))}")
            return real_function(inputs, outputs, *args, **kwargs)

        def compile_str(*args, **kwargs):
            self.c_modules += 1
            return real_compile(*args, **kwargs)

        pfunc.orig_function = orig_function
        cmodule.GCC_compiler.compile_str = staticmethod(compile_str)
        return self

    def __exit__(self, *exc) -> None:
        from importlib import import_module

        from pytensor.link.c import cmodule

        pfunc = import_module("pytensor.compile.function.pfunc")
        pfunc.orig_function, cmodule.GCC_compiler.compile_str = self._saved

    def as_dict(self) -> dict:
        return {"pytensor_functions": self.functions, "c_modules_built": self.c_modules}


def _sampling_plan(quick: bool) -> list[dict]:
    """First attempt, then raised settings if the diagnostics gate fails.

    ``maxdepth`` caps NUTS trees at 2^maxdepth leapfrog steps: in quick mode a form whose
    geometry needs longer trees (the latent forms when 1000 rows pin each effect) is cut short
    and then fails the gate as "unreliable here" instead of spending minutes.
    """
    if quick:
        return [dict(draws=400, tune=400, chains=4, target_accept=0.9, maxdepth=6),
                dict(draws=1000, tune=600, chains=4, target_accept=0.99, maxdepth=8)]
    return [dict(draws=1000, tune=1000, chains=4, target_accept=0.9, maxdepth=10),
            dict(draws=3000, tune=2000, chains=4, target_accept=0.99, maxdepth=10)]


def _fit_form(family, name: str, data, priors, plan: list[dict], seed: int, *, backend: str,
              retry_budget: float | None = None):
    """Sample the family's own form ``name``.

    The result is the first attempt of ``plan`` whose diagnostics pass, or the last.

    The model is what ``varcomp fit`` samples (:func:`analyses.fit.prepare`): a form with a
    compiled route runs as its hand-written kernel (machine code cached on disk, no compilation
    per setting; it equals the PyMC form exactly, :func:`models.checks.compare_compiled`), and
    every other form is its builder (data in ``pm.Data``), compiled once for all attempts by
    ``backend``: PyTensor's C backend in ``--quick`` (its compiled modules are cached on disk),
    numba otherwise (slower to compile, faster per gradient for long runs). A retry is skipped
    when the previous attempt's sampling took longer than ``retry_budget`` seconds.
    """
    from varcomp.analyses.fit import prepare
    from varcomp.models.compiled.nutpie import compile_pymc
    from varcomp.models.sampling import Fit, diagnose, quiet, sample_compiled

    t0 = time.perf_counter()
    with quiet():
        model, route = prepare(family.form(name), data, priors=priors)
        if route == "native":
            compiled, backend = model, route
        else:
            compiled = compile_pymc(model, backend=backend)
    seconds = {"compile": time.perf_counter() - t0, "sample": 0.0}
    for attempt, settings in enumerate(plan, start=1):  # noqa: B007 (read after the loop)
        t1 = time.perf_counter()
        with quiet():
            idata = sample_compiled(compiled, seed=seed, cores=2, **settings)
            diagnostics = diagnose(idata, family.compare_vars)
        took = time.perf_counter() - t1
        seconds["sample"] += took
        if diagnostics["ok"] or (retry_budget is not None and took > retry_budget):
            break
    used = dict(settings, attempt=attempt, seed=seed, sampler="nutpie", backend=backend)
    return Fit(name, idata, seconds, used, diagnostics)


def _check_setting(setting: Setting, seed: int, *, quick: bool, plan: list[dict],
                   t_start: float) -> dict:
    """Exact log densities, fits and posterior comparison of one setting (a plain dict)."""
    from varcomp.models import checks, family_of
    from varcomp.models.checks.kit import kit_of

    data = setting.simulate(seed)
    family = family_of(data)
    priors = family.default_priors(data)
    t0 = time.perf_counter()
    lp = checks.compare_logp(data, seed=seed, priors=priors)
    if kit_of(family).native is not None:
        native = checks.compare_compiled(data, priors, seed=seed)
        compiled = {"passed": native.passed, **native.details}
        text, native_ok = lp.text + "\n" + native.text, native.passed
    else:  # the GLMM and slopes kernels are checked by their own tests (no kit.native)
        compiled = {"skipped": "no compiled-kernel check in the kit"}
        text, native_ok = lp.text, True
    out = {"family": family.name, "logp": {
        "passed": lp.passed and native_ok, **lp.details, "text": text, "compiled": compiled,
        "seconds": time.perf_counter() - t0}}
    line = f"{setting.name} ({family.name}): logp {'ok' if out['logp']['passed'] else 'FAILS'}"
    names = setting.quick if quick else tuple(family.forms)
    if not names:
        out["posteriors"] = {"skipped": "not sampled in --quick"}
        print(f"[{time.perf_counter() - t_start:6.1f} s] {line}; not sampled in --quick",
              flush=True)
        return out
    reference = family.reference(data, priors) if family.reference else None
    fits, skipped = {}, {}
    for name in names:
        form = family.form(name)
        why = form.applies(data) or form.skip(data)
        if why:
            skipped[name] = why
            continue
        fits[name] = _fit_form(family, name, data, priors, plan, seed,
                               backend="c" if quick else "numba",
                               retry_budget=8.0 if quick else None)
    if quick:
        skipped |= {n: "not sampled in --quick; run without --quick" for n in family.forms
                    if n not in names}
    cmp = checks.compare_posteriors(fits, reference=reference, var_names=family.compare_vars)
    out["posteriors"] = {
        "passed": cmp.passed, "status": cmp.details["status"], "text": cmp.text,
        "max_abs_z": cmp.details["max_abs_z"], "skipped": skipped,
        "agrees_with_reference": cmp.details["agrees_with_reference"] if reference else {},
        "n_comparisons": int((cmp.table.verdict != "not judged").sum()),
        "reference": reference.summary.to_dict(orient="index") if reference else None,
        "fits": {f: {"settings": fit.settings, "seconds": fit.seconds,
                     "diagnostics": fit.diagnostics} for f, fit in fits.items()},
        "table": cmp.table}
    print(f"[{time.perf_counter() - t_start:6.1f} s] {line}; " + "; ".join(
        f"{f} {s}" for f, s in cmp.details["status"].items()), flush=True)
    return out


def _sbc_runs(quick: bool, sims: int | None, seed: int, t_start: float) -> dict:
    """SBC runs of the one-way and the multivariate forms (:func:`models.checks.sbc`).

    The ``sufficient`` forms are calibrated as ``varcomp fit`` samples them: their compiled
    kernels (machine code cached on disk, a new parameter block per data set; the kernels equal
    the PyMC forms exactly, :func:`models.checks.compare_compiled`). Without --quick the one-way
    ``centred`` form too (its PyMC model, compiled once by PyTensor's C backend).
    """
    from varcomp.models import checks

    n_sims = sims or (30 if quick else 100)
    models = {"sufficient": (checks.OnewaySBC("sufficient", backend="compiled"), {})}
    if not quick:
        # the centred form mixes ~4x slower: thin to about its ESS per kept draw
        models["centred"] = (checks.OnewaySBC("centred", backend="c"),
                             dict(draws=800, thin=8, target_accept=0.95))
    models["mv_sufficient"] = (checks.MultivariateSBC(missing=0.1, backend="compiled"), {})
    results = {}
    for name, (model, settings) in models.items():
        t0 = time.perf_counter()
        res = checks.sbc(model, n_sims=n_sims, seed=seed, **settings)
        res.details["seconds"] = time.perf_counter() - t0
        results[name] = res
        print(f"[{time.perf_counter() - t_start:6.1f} s] {res.text}", flush=True)
    return results


def _print_table(status: dict[str, dict[str, str]], settings: list[str]) -> str:
    width = max([18, *(len(s) + 2 for s in settings)])  # a family may have no sampled setting
    head = f"{'form':<12}" + "".join(f"{s:<{width}}" for s in settings)
    lines = [head, "-" * len(head)]
    for form, row in status.items():
        lines.append(f"{form:<12}" + "".join(f"{row.get(s, '-'):<{width}}" for s in settings))
    return "\n".join(lines)


def run_checks(*, quick: bool, sims: int | None, out: Path | None, seed: int = 0) -> int:
    """Run the checks; print the form x setting tables; return the exit code (0 iff passed).

    Parameters
    ----------
    quick : bool
        Fewer draws and forms (see the module docstring); SBC of ``sufficient`` only.
    sims : int, optional
        SBC simulations per form (default 30 quick, 100 otherwise).
    out : Path, optional
        Folder for ``checks.json`` (top-level ``passed``), the comparison tables (CSV) and the
        SBC rank ECDF plots (PNG), written atomically.
    seed : int
        Seed of the simulations and the samplers.
    """
    from threadpoolctl import threadpool_limits

    from varcomp.models import checks

    t_start = time.perf_counter()
    plan = _sampling_plan(quick)
    report: dict = {"quick": quick, "seed": seed, "sampling_plan": plan,
                    "settings": [{"name": s.name, "note": s.note, **s.params} for s in SETTINGS],
                    "logp": {}, "posteriors": {}}
    status: dict[str, dict[str, dict[str, str]]] = {}
    agreements: dict[str, dict[str, int]] = {}
    tables = {}
    # OpenBLAS threads spinning on 2 shared cores make small LAPACK calls ~100x slower
    with threadpool_limits(limits=1, user_api="blas"), CompileCounter() as compiled:
        for i, setting in enumerate(SETTINGS):
            res = _check_setting(setting, seed + i, quick=quick, plan=plan, t_start=t_start)
            report["logp"][setting.name] = res["logp"]
            post = res["posteriors"]
            if "table" in post:
                tables[setting.name] = post.pop("table")
            report["posteriors"][setting.name] = post
            fam = status.setdefault(res["family"], {})
            for form, st in post.get("status", {}).items():
                fam.setdefault(form, {})[setting.name] = st
            for form in post.get("skipped", {}) if isinstance(post.get("skipped"), dict) else ():
                fam.setdefault(form, {})[setting.name] = "skipped"
            if post.get("reference") is not None:
                agree = agreements.setdefault(res["family"], {})
                for form, ok in post["agrees_with_reference"].items():
                    agree[form] = agree.get(form, 0) + int(ok)
        sbc_results = _sbc_runs(quick, sims, seed, t_start)
    logp_ok = all(v["passed"] for v in report["logp"].values())
    pairs_ok = all(v.get("passed", True) for v in report["posteriors"].values())
    enough = {fam: {f: n >= MIN_REFERENCE_AGREEMENTS for f, n in forms.items()}
              for fam, forms in agreements.items()}
    passed = bool(logp_ok and pairs_ok and all(all(v.values()) for v in enough.values()))
    report["sbc"] = {name: {"passed": r.passed, "pvalues": r.pvalues, "text": r.text,
                            "p_chi2": dict(zip(r.table.quantity, r.table.p_chi2, strict=True)),
                            **r.details} for name, r in sbc_results.items()}
    report.update({"passed": passed, "exact_logp_passed": bool(logp_ok),
                   "no_reliable_pair_disagrees": bool(pairs_ok),
                   "agreements_with_reference": agreements, "table": status,
                   "compilations": compiled.as_dict(),
                   "seconds": time.perf_counter() - t_start})
    for fam, rows in status.items():
        names = [s.name for s in SETTINGS if report["logp"][s.name] and
                 any(s.name in r for r in rows.values())]
        print(f"\n{fam}\n" + _print_table(rows, names))
    print()
    for fam, forms in agreements.items():
        print(f"agreements with the reference posterior ({fam}): " + ", ".join(
            f"{f} {n}" for f, n in forms.items()) + f" (each needs >= {MIN_REFERENCE_AGREEMENTS})")
    for s in SETTINGS:
        skipped = report["posteriors"][s.name].get("skipped")
        for f, why in skipped.items() if isinstance(skipped, dict) else ():
            print(f"{s.name}: {f} {why}")
    print(f"exact log densities: {'pass' if logp_ok else 'FAIL'}; reliable pairs: "
          f"{'agree' if pairs_ok else 'DISAGREE'}; SBC: " + ", ".join(
              f"{f} {'pass' if r.passed else 'FAIL'}" for f, r in sbc_results.items())
          + f"; {'PASSED' if passed else 'FAILED'} in {report['seconds']:.0f} s")
    print(f"PyTensor: {compiled.functions} functions compiled, {compiled.c_modules} C modules "
          f"built (0 when the compiledir holds them all)")
    if out is not None:
        from varcomp.analyses.outputs import dump_json, write_atomically

        def writer(tmp: Path) -> None:
            dump_json(report, tmp / "checks.json")
            for name, table in tables.items():
                table.to_csv(tmp / f"posteriors_{name}.csv", index=False)
            for name, res in sbc_results.items():
                res.ranks.to_csv(tmp / f"sbc_ranks_{name}.csv", index=False)
                checks.plot_sbc(res, tmp / f"sbc_{name}.png")

        write_atomically(Path(out), writer)
        print(f"wrote {Path(out) / 'checks.json'}")
    return 0 if passed else 1
