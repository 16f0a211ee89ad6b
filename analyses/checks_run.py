"""``varcomp check``: every parameterisation gives one posterior, on simulated data.

For each setting (the notes' two, an unbalanced design with singletons, a moderate design) it
runs the exact log-density check, samples every form (raising target_accept and draws once if
the diagnostics gate fails), compares the posteriors with each other and with the quadrature
reference, and finally runs SBC. Exit 0 iff the exact checks pass, no reliable pair disagrees,
and every form agrees with the reference in at least two settings (the issue's definition; the
SBC verdict is reported in ``checks.json`` under ``sbc`` but does not set the exit code).

Then the multivariate forms (:data:`MV_SETTINGS`: the notes' bivariate example, and one with
partly missing rows): the exact log-density check of every form, the posterior comparison of
the forms with each other (there is no quadrature reference for p = 2), and SBC of the
multivariate ``sufficient`` form, reported under ``multivariate`` in ``checks.json``. Their exact
checks and pairwise agreement count towards the exit code like the univariate ones; their SBC
verdict is reported only. ``--quick`` compares the forms in the partly-missing setting only,
and only ``sufficient`` and ``centred`` (the non-centred form needs long runs on these data,
the literal MvNormal's numba compilation takes minutes).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SETTINGS", "Setting", "run_checks"]

# The literal MvNormal form costs O(k^2)-O(k^3) per gradient in a cluster of size k: beyond
# this size it is not sampled (its exact log density is still checked).
MARGINAL_MAX_CLUSTER = 200
MIN_REFERENCE_AGREEMENTS = 2
# In --quick mode the MvNormal form is sampled only where its graph has few blocks.
QUICK_MARGINAL_MAX_SIZES = 3


V_NOTES = ((4.0, 3.0), (3.0, 4.0))
"""The notes' between-cluster covariance (the R code's; the printed [[2, 3], [3, 4]] is not PD)."""
SIGMA_SD, SIGMA_CORR = (0.5, 0.6), -0.8
"""Sigma = D R D with D = diag(0.5, 0.6) and within-cluster correlation -0.8."""


@dataclass(frozen=True)
class MvSetting:
    """A simulated bivariate design: L clusters of sizes ``n``, true (mu, V, Sigma), and a
    fraction ``missing`` of outcome values missing completely at random."""

    name: str
    L: int
    n: int | tuple[int, ...]
    mu: tuple[float, ...]
    V: tuple[tuple[float, ...], ...]
    sigma_sd: tuple[float, ...]
    sigma_corr: float
    missing: float
    note: str

    @property
    def Sigma(self) -> np.ndarray:
        """D R D."""
        from models.simulate_mv import sigma_from_sd_corr

        p = len(self.sigma_sd)
        R = np.full((p, p), self.sigma_corr)
        np.fill_diagonal(R, 1.0)
        return sigma_from_sd_corr(self.sigma_sd, R)

    def simulate(self, seed: int):
        """Simulate the design: a multivariate :class:`~models.data.ClusteredData`."""
        from models.simulate import Simulated
        from models.simulate_mv import drop_components, simulate_multivariate

        rng = np.random.default_rng(seed)
        sim = simulate_multivariate(self.L, list(self.n) if isinstance(self.n, tuple) else self.n,
                                    self.mu, np.array(self.V), self.Sigma, rng)
        frame = drop_components(sim.frame, self.missing, rng) if self.missing else sim.frame
        return Simulated(frame, sim.effects, sim.params).data()

    def describe(self) -> dict:
        """Plain-dict form for JSON."""
        return {"name": self.name, "L": self.L, "n": list(self.n) if isinstance(self.n, tuple)
                else self.n, "mu": list(self.mu), "V": [list(r) for r in self.V],
                "Sigma": self.Sigma.tolist(), "missing": self.missing, "note": self.note}


MV_SETTINGS = (
    MvSetting("mv-notes", 30, 10, (10.0, 20.0), V_NOTES, SIGMA_SD, SIGMA_CORR, 0.0,
              "the notes' bivariate example: V = [[4, 3], [3, 4]], Sigma = D R D, D = "
              "diag(0.5, 0.6), corr -0.8; 30 clusters of 10 complete rows"),
    MvSetting("mv-missing", 20, (2, 3, 4, 5, 6, 7, 8, 2, 3, 4, 5, 6, 7, 8, 3, 4, 5, 6, 2, 8),
              (10.0, 20.0), V_NOTES, SIGMA_SD, SIGMA_CORR, 0.2,
              "the same V and Sigma, 20 clusters of 2-8 rows, 20% of the outcome values missing "
              "(rows partly observed)"),
)
MV_QUICK_SETTINGS = ("mv-missing",)
MV_QUICK_FORMS = ("sufficient", "centred")
# the literal MvNormal form is sampled only with few blocks (numba compiles each MvNormal)
MV_MARGINAL_MAX_BLOCKS = 3
MV_COMPARE_VARS = ("mu", "V", "Sigma", "icc", "corr_between", "corr_within")


@dataclass(frozen=True)
class Setting:
    """A simulated design: L clusters of sizes ``n`` with true (mu, tau, sigma)."""

    name: str
    L: int
    n: int | tuple[int, ...]
    mu: float
    tau: float
    sigma: float
    note: str

    def simulate(self, seed: int):
        """Simulate the design: a :class:`~models.data.ClusteredData`."""
        from models.simulate import simulate_univariate

        return simulate_univariate(self.L, list(self.n) if isinstance(self.n, tuple) else self.n,
                                   mu=self.mu, tau=self.tau, sigma=self.sigma, rng=seed).data()

    def describe(self) -> dict:
        """Plain-dict form for JSON."""
        return {"name": self.name, "L": self.L, "n": list(self.n) if isinstance(self.n, tuple)
                else self.n, "mu": self.mu, "tau": self.tau, "sigma": self.sigma,
                "note": self.note}


SETTINGS = (
    Setting("notes-L5-n1000", 5, 1000, 10.0, 2.0, 0.1,
            "the notes' first example: ICC 0.998, effects pinned down by 1000 rows each"),
    Setting("notes-L2-n3", 2, 3, 0.0, 2.0, 1.0,
            "the notes' second example: ICC 0.8 from two clusters of three"),
    Setting("unbalanced", 12, (1, 1, 1, 2, 2, 3, 3, 5, 8, 12, 20, 30), 5.0, 1.0, 1.0,
            "unbalanced, three singletons, ICC 0.5"),
    Setting("moderate", 30, 10, 0.0, math.sqrt(0.3), math.sqrt(0.7), "L = 30, n = 10, ICC 0.3"),
)


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


def _fit_form(name: str, data, priors, plan: list[dict], seed: int, *,
              retry_budget: float | None = None):
    """Sample form ``name``: the first attempt of ``plan`` whose diagnostics pass, or the last.

    The latent and sufficient forms are sampled as :func:`models.checks.build_data_model`
    (the registry's density with data in ``pm.Data``; ``compare_logp`` checks the equality in
    every setting) through PyTensor's C backend, whose compiled modules are cached on disk
    and shared across settings because the data are not baked into the graph. The literal
    MvNormal form is the registry's builder through numba. The model is compiled once for all
    attempts; a retry is skipped when the previous attempt's sampling took longer than
    ``retry_budget`` seconds.
    """
    from models import PARAMETERISATIONS, checks
    from models.compile_cache import compile_nutpie
    from models.sampling import Fit, _quiet

    backend = "numba" if name == "marginal" else "c"
    t0 = time.perf_counter()
    with _quiet():
        model = (PARAMETERISATIONS[name](data, priors=priors) if name == "marginal"
                 else checks.build_data_model(name, data, priors=priors))
        compiled = compile_nutpie(model, backend=backend)
    seconds = {"compile": time.perf_counter() - t0}
    idata, seconds["sample"], settings, attempt, diagnostics = _sample_until_ok(
        compiled, plan, seed, retry_budget)
    used = dict(settings, attempt=attempt, seed=seed, sampler="nutpie", backend=backend,
                model="registry" if name == "marginal" else "pm.Data twin")
    return Fit(name, idata, seconds, used, diagnostics)


def _sample_until_ok(compiled, plan: list[dict], seed: int, retry_budget: float | None,
                     var_names=None):
    """Sample with each attempt of ``plan`` until the diagnostics gate (on ``var_names``,
    default mu, tau, sigma, icc) passes, or an attempt's sampling took longer than
    ``retry_budget`` s. Returns (idata, sampling seconds of all attempts, the last attempt's
    settings, its number, its diagnostics)."""
    import nutpie

    from models.sampling import SUMMARY_VARS, _quiet, diagnose

    total, attempt, settings = 0.0, 0, plan[0]
    for settings in plan:
        attempt += 1
        t1 = time.perf_counter()
        with _quiet():
            idata = nutpie.sample(compiled, seed=seed, cores=2, progress_bar=False,
                                  save_warmup=False, **settings)
        took = time.perf_counter() - t1
        total += took
        with _quiet():
            diagnostics = diagnose(idata, var_names or SUMMARY_VARS)
        if diagnostics["ok"] or (retry_budget is not None and took > retry_budget):
            break
    return idata, total, settings, attempt, diagnostics


def _fit_form_mv(name: str, data, priors, plan: list[dict], seed: int, *, backend: str,
                 retry_budget: float | None = None):
    """Sample the registry's multivariate form ``name`` (as :func:`_fit_form`, diagnostics on
    mu, V, Sigma, icc and the correlations)."""
    from models import build
    from models.compile_cache import compile_nutpie
    from models.sampling import Fit, _quiet

    t0 = time.perf_counter()
    with _quiet():
        compiled = compile_nutpie(build(name, data, priors=priors), backend=backend)
    seconds = {"compile": time.perf_counter() - t0}
    idata, seconds["sample"], settings, attempt, diagnostics = _sample_until_ok(
        compiled, plan, seed, retry_budget, MV_COMPARE_VARS)
    used = dict(settings, attempt=attempt, seed=seed, sampler="nutpie", backend=backend,
                model="registry")
    return Fit(name, idata, seconds, used, diagnostics)


def _skip_mv(form: str, data, quick: bool) -> str | None:
    """Why multivariate form ``form`` is not sampled in this setting (None: it is)."""
    from models import multivariate as mv

    if quick and form not in MV_QUICK_FORMS:
        return (f"not sampled in --quick (only {', '.join(MV_QUICK_FORMS)} are); run without "
                f"--quick")
    if form == "marginal":
        blocks = list(mv.marginal_blocks(data))
        if len(blocks) > MV_MARGINAL_MAX_BLOCKS:
            return (f"not sampled: {len(blocks)} MvNormal blocks (> {MV_MARGINAL_MAX_BLOCKS}; "
                    f"numba compiles each, minutes); its exact log density is checked")
    return None


def _run_multivariate(*, quick: bool, sims: int | None, seed: int, t_start: float) -> tuple:
    """The multivariate part: exact logp, posterior comparison, SBC of ``sufficient``.

    Returns ``(report, passed_logp, passed_pairs, tables, sbc_result)``.
    """
    from models import NAMES, checks, checks_mv
    from models.priors import MvPriors

    plan = _sampling_plan(quick)
    # quick: PyTensor's C backend, whose compiled modules are cached between runs; otherwise
    # numba (slower to compile, ~10x faster per gradient for the long runs of the full check)
    backend = "c" if quick else "numba"
    report: dict = {"settings": [s.describe() for s in MV_SETTINGS], "logp": {},
                    "posteriors": {}, "backend": backend}
    logp_ok, pairs_ok, tables = True, True, {}
    for i, setting in enumerate(MV_SETTINGS):
        data = setting.simulate(seed + 100 + i)
        priors = MvPriors.default(data)
        t0 = time.perf_counter()
        twin = {"sufficient (pm.Data)": lambda d, priors: checks_mv.build_data_model_mv(
            "sufficient", d, priors=priors)}
        lp = checks_mv.compare_logp_mv(data, seed=seed + i, priors=priors, builders=twin)
        native = checks.compare_compiled(data, priors, seed=seed + i)
        logp_ok &= lp.passed and native.passed
        report["logp"][setting.name] = {"passed": lp.passed and native.passed, **lp.details,
                                        "text": lp.text + "\n" + native.text,
                                        "compiled": {"passed": native.passed, **native.details},
                                        "seconds": time.perf_counter() - t0}
        line = f"{setting.name}: logp {'ok' if lp.passed else 'FAILS'}"
        if quick and setting.name not in MV_QUICK_SETTINGS:
            report["posteriors"][setting.name] = {"skipped": "not sampled in --quick"}
            print(f"[{time.perf_counter() - t_start:6.1f} s] {line}; posteriors not compared "
                  f"in --quick", flush=True)
            continue
        fits, skipped = {}, {}
        for form in NAMES:
            why = _skip_mv(form, data, quick)
            if why:
                skipped[form] = why
                continue
            fits[form] = _fit_form_mv(form, data, priors, plan, seed + i, backend=backend,
                                      retry_budget=8.0 if quick else None)
        cmp = checks.compare_posteriors(fits, var_names=MV_COMPARE_VARS)
        pairs_ok &= cmp.passed
        tables[setting.name] = cmp.table
        report["posteriors"][setting.name] = {
            "passed": cmp.passed, "status": cmp.details["status"], "text": cmp.text,
            "max_abs_z": cmp.details["max_abs_z"], "skipped": skipped,
            "n_comparisons": int((cmp.table.verdict != "not judged").sum()),
            "fits": {f: {"settings": fit.settings, "seconds": fit.seconds,
                         "diagnostics": fit.diagnostics} for f, fit in fits.items()},
        }
        print(f"[{time.perf_counter() - t_start:6.1f} s] {line}; " + "; ".join(
            f"{f} {s}" for f, s in cmp.details["status"].items()), flush=True)
    n_sims = sims or (30 if quick else 100)
    t0 = time.perf_counter()
    res = checks_mv.sbc_mv(n_sims, seed=seed, missing=0.1)
    report["sbc"] = {"passed": res.passed, "pvalues": res.pvalues, "text": res.text,
                     "p_chi2": dict(zip(res.table.quantity, res.table.p_chi2, strict=True)),
                     "seconds": time.perf_counter() - t0, **res.details}
    print(f"[{time.perf_counter() - t_start:6.1f} s] {res.text}", flush=True)
    report.update({"exact_logp_passed": bool(logp_ok), "no_reliable_pair_disagrees":
                   bool(pairs_ok)})
    return report, bool(logp_ok), bool(pairs_ok), tables, res


def _data_twins(forms) -> dict:
    """``compare_logp`` builders of the pm.Data twins that :func:`_fit_form` samples."""
    from models import checks

    return {f"{f} (pm.Data)": (lambda d, priors, f=f: checks.build_data_model(f, d,
                                                                             priors=priors))
            for f in forms if f != "marginal"}


def _skip_marginal(data, quick: bool) -> str | None:
    """Why the literal MvNormal form is not sampled in this setting (None: it is)."""
    kmax, distinct = int(data.sizes.max()), int(np.unique(data.sizes).size)
    if kmax > MARGINAL_MAX_CLUSTER:
        return (f"not sampled: clusters of {kmax} rows (> {MARGINAL_MAX_CLUSTER}) make the "
                f"literal MvNormal too costly per gradient")
    if quick and distinct > QUICK_MARGINAL_MAX_SIZES:
        return (f"not sampled in --quick: {distinct} distinct cluster sizes are {distinct} "
                f"MvNormal blocks (numba compiles them for ~2 minutes); run without --quick")
    return None


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _print_table(status: dict[str, dict[str, str]], settings: list[str]) -> str:
    width = max(18, *(len(s) + 2 for s in settings))
    head = f"{'form':<12}" + "".join(f"{s:<{width}}" for s in settings)
    lines = [head, "-" * len(head)]
    for form, row in status.items():
        lines.append(f"{form:<12}" + "".join(f"{row.get(s, '-'):<{width}}" for s in settings))
    return "\n".join(lines)


def run_checks(*, quick: bool, sims: int | None, out: Path | None, seed: int = 0) -> int:
    """Run the checks; print the form x setting table; return the exit code (0 iff passed).

    Parameters
    ----------
    quick : bool
        Fewer draws, SBC for ``sufficient`` only, and the multivariate posteriors compared in
        one setting for two forms (target: <= 5 minutes on 2 cores; measured 273 s).
    sims : int, optional
        SBC simulations per form (default 30 quick, 100 otherwise).
    out : Path, optional
        Directory for ``checks.json`` (top-level ``passed``), the comparison tables (CSV) and
        the SBC rank ECDF plots (PNG), written atomically.
    seed : int
        Seed of the simulations and the samplers.
    """
    from threadpoolctl import threadpool_limits

    from models import PARAMETERISATIONS, checks
    from models.priors import Priors

    t_start = time.perf_counter()
    forms = list(PARAMETERISATIONS)
    plan = _sampling_plan(quick)
    report: dict = {"quick": quick, "seed": seed, "sampling_plan": plan,
                    "settings": [s.describe() for s in SETTINGS], "logp": {}, "posteriors": {}}
    status = {f: {} for f in forms}
    agreements = {f: 0 for f in forms}
    tables = {}
    logp_ok, pairs_ok = True, True
    # OpenBLAS threads spinning on 2 shared cores make small LAPACK calls ~100x slower
    with threadpool_limits(limits=1, user_api="blas"):
        for i, setting in enumerate(SETTINGS):
            data = setting.simulate(seed + i)
            priors = Priors.default(data)
            t0 = time.perf_counter()
            lp = checks.compare_logp(data, seed=seed + i, builders=_data_twins(forms))
            native = checks.compare_compiled(data, priors, seed=seed + i)
            logp_ok &= lp.passed and native.passed
            report["logp"][setting.name] = {"passed": lp.passed and native.passed, **lp.details,
                                            "text": lp.text + "\n" + native.text,
                                            "compiled": {"passed": native.passed,
                                                         **native.details},
                                            "seconds": time.perf_counter() - t0}
            reference = checks.reference_posterior(data, priors)
            fits, skipped = {}, {}
            for form in forms:
                why = _skip_marginal(data, quick) if form == "marginal" else None
                if why:
                    skipped[form] = why
                    status[form][setting.name] = "skipped"
                    continue
                fits[form] = _fit_form(form, data, priors, plan, seed + i,
                                       retry_budget=8.0 if quick else None)
            cmp = checks.compare_posteriors(fits, reference=reference)
            pairs_ok &= cmp.passed
            tables[setting.name] = cmp.table
            for form, st in cmp.details["status"].items():
                status[form][setting.name] = st
                agreements[form] += int(cmp.details["agrees_with_reference"][form])
            report["posteriors"][setting.name] = {
                "passed": cmp.passed, "status": cmp.details["status"], "text": cmp.text,
                "max_abs_z": cmp.details["max_abs_z"], "skipped": skipped,
                "reference": reference.summary.to_dict(orient="index"),
                "fits": {f: {"settings": fit.settings, "seconds": fit.seconds,
                             "diagnostics": fit.diagnostics} for f, fit in fits.items()},
            }
            print(f"[{time.perf_counter() - t_start:6.1f} s] {setting.name}: logp "
                  f"{'ok' if lp.passed else 'FAILS'}; " + "; ".join(
                      f"{f} {s}" for f, s in cmp.details["status"].items()), flush=True)
        sbc_forms = ("sufficient",) if quick else ("sufficient", "centred")
        n_sims = sims or (30 if quick else 100)
        sbc_results = {}
        for form in sbc_forms:
            t0 = time.perf_counter()
            # the centred form mixes ~4x slower: thin to about its ESS per kept draw
            slow_mixing = form == "centred"
            res = checks.sbc(form, n_sims, seed=seed, backend="c",
                             draws=800 if slow_mixing else 400, thin=8 if slow_mixing else 4,
                             target_accept=0.95 if slow_mixing else 0.9)
            sbc_results[form] = res
            report.setdefault("sbc", {})[form] = {
                "passed": res.passed, "pvalues": res.pvalues, "text": res.text,
                "p_chi2": dict(zip(res.table.quantity, res.table.p_chi2, strict=True)),
                "seconds": time.perf_counter() - t0, **res.details}
            print(f"[{time.perf_counter() - t_start:6.1f} s] {res.text}", flush=True)
        mv_report, mv_logp_ok, mv_pairs_ok, mv_tables, mv_sbc = _run_multivariate(
            quick=quick, sims=sims, seed=seed, t_start=t_start)
    report["multivariate"] = mv_report
    enough = {f: agreements[f] >= MIN_REFERENCE_AGREEMENTS for f in forms}
    passed = bool(logp_ok and pairs_ok and all(enough.values()) and mv_logp_ok and mv_pairs_ok)
    report.update({"passed": passed, "exact_logp_passed": bool(logp_ok),
                   "no_reliable_pair_disagrees": bool(pairs_ok),
                   "multivariate_passed": bool(mv_logp_ok and mv_pairs_ok),
                   "agreements_with_reference": agreements, "table": status,
                   "seconds": time.perf_counter() - t_start})
    print()
    print(_print_table(status, [s.name for s in SETTINGS]))
    print()
    print("agreements with the reference posterior: " + ", ".join(
        f"{f} {agreements[f]}/{len(SETTINGS)}" for f in forms)
        + f" (each needs >= {MIN_REFERENCE_AGREEMENTS})")
    for s in SETTINGS:
        for f, why in report["posteriors"][s.name]["skipped"].items():
            print(f"{s.name}: {f} {why}")
    for s in SETTINGS:
        used = {f: v["settings"] for f, v in report["posteriors"][s.name]["fits"].items()}
        print(f"settings used, {s.name}: " + "; ".join(
            f"{f} target_accept {u['target_accept']}, {u['chains']}x{u['draws']} draws, "
            f"maxdepth {u['maxdepth']}" for f, u in used.items()))
    for name, v in mv_report["posteriors"].items():
        for f, why in v.get("skipped", {}).items() if isinstance(v.get("skipped"), dict) else ():
            print(f"{name}: {f} {why}")
    print(f"multivariate: exact log densities {'pass' if mv_logp_ok else 'FAIL'}; reliable "
          f"pairs {'agree' if mv_pairs_ok else 'DISAGREE'}; SBC sufficient "
          f"{'pass' if mv_sbc.passed else 'FAIL'}")
    print(f"exact log densities: {'pass' if logp_ok else 'FAIL'}; reliable pairs: "
          f"{'agree' if pairs_ok else 'DISAGREE'}; SBC: " + ", ".join(
              f"{f} {'pass' if r.passed else 'FAIL'}" for f, r in sbc_results.items())
          + f"; {'PASSED' if passed else 'FAILED'} in {report['seconds']:.0f} s")
    if out is not None:
        from analyses.outputs import write_atomically

        def writer(tmp: Path) -> None:
            (tmp / "checks.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n",
                                             encoding="utf-8")
            for name, table in tables.items():
                table.to_csv(tmp / f"posteriors_{name}.csv", index=False)
            for form, res in sbc_results.items():
                res.ranks.to_csv(tmp / f"sbc_ranks_{form}.csv", index=False)
                checks.plot_sbc(res, tmp / f"sbc_{form}.png")
            for name, table in mv_tables.items():
                table.to_csv(tmp / f"posteriors_{name}.csv", index=False)
            mv_sbc.ranks.to_csv(tmp / "sbc_ranks_mv_sufficient.csv", index=False)
            checks.plot_sbc(mv_sbc, tmp / "sbc_mv_sufficient.png")

        write_atomically(Path(out), writer)
        print(f"wrote {Path(out) / 'checks.json'}")
    return 0 if passed else 1
