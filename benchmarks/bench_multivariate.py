"""Benchmark: the multivariate `sufficient` form against the latent (centred) form.

Simulated bivariate data shaped like the issue's school data (7,185 rows, 160 clusters,
p = 2; the notes' V = [[4, 3], [3, 4]], Sigma = D R D with D = diag(0.5, 0.6), corr -0.8).
For each form: nutpie compile seconds, sampling seconds, the minimum ESS_bulk over the shared
parameters, ESS per sampling second and ESS per end-to-end second (compile included), and the
ratio of ESS/s to the latent form's. The issue's goals: sufficient <= 5 s sampling,
<= 20 s end to end, >= 50x the latent ESS/s.

Forms: ``sufficient`` as ``varcomp fit`` runs it (models.compiled.multivariate, cached machine
code), ``sufficient-pymc`` (the PyMC graph through nutpie's numba backend) and ``centred``; then
``varcomp fit`` of the same data as a CSV file, end to end in a subprocess.

Run: .venv/bin/python benchmarks/bench_multivariate.py [--models sufficient,centred]
       [--draws 1000 --tune 1000 --chains 4] [--json out.json] [--no-e2e]
Timings depend on machine load; the script prints the 1-minute load average with the table.
The first nutpie compile in a process pays numba's start-up; it is measured once on a
one-parameter model and reported apart, so the rows compare the models themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

from varcomp.models.forms import multivariate as mv  # noqa: E402
from varcomp.models.sampling import diagnose, sample_model  # noqa: E402
from varcomp.models.simulate_mv import sigma_from_sd_corr, simulate_multivariate  # noqa: E402

VARS = ("mu", "tau", "sigma", "icc", "V", "Sigma", "corr_between", "corr_within")
V_TRUE = np.array([[4.0, 3.0], [3.0, 4.0]])
SIGMA_TRUE = sigma_from_sd_corr([0.5, 0.6], [[1.0, -0.8], [-0.8, 1.0]])


def bench_data(N: int = 7185, L: int = 160, seed: int = 2026):
    """Unbalanced cluster sizes summing to N (each >= 5), simulated from the notes' model."""
    rng = np.random.default_rng(seed)
    sizes = 5 + rng.multinomial(N - 5 * L, rng.dirichlet(np.full(L, 4.0)))
    sim = simulate_multivariate(L, sizes, [50.0, 70.0], V_TRUE, SIGMA_TRUE, rng,
                                responses=["written", "course"])
    return sim.data()


def end_to_end(data) -> str:
    """``varcomp fit`` of the data as a CSV file in a subprocess: wall seconds and exit code."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "bivariate.csv"
        data.to_frame().to_csv(csv, index=False)
        cmd = [str(Path(sys.executable).with_name("varcomp")), "fit", str(csv), "--group",
               data.group_name, *sum((["--response", r] for r in data.responses), []),
               "--out", str(Path(tmp) / "out")]
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, capture_output=True).returncode
        return f"{time.perf_counter() - t0:.1f} s (exit {rc})"


def run(name: str, data, *, draws: int, tune: int, chains: int, seed: int) -> dict:
    """One form as ``varcomp fit`` runs it (``sufficient``: models.compiled.multivariate); the
    suffix ``-pymc`` samples the PyMC graph through nutpie's numba backend instead."""
    from varcomp.analyses.fit import prepare

    t0 = time.perf_counter()
    if name.endswith("-pymc"):
        model = getattr(mv, f"build_{name.removesuffix('-pymc')}")(data)
    else:
        model, _ = prepare(mv.FAMILY.form(name), data)
    t_build = time.perf_counter() - t0
    idata, secs = sample_model(model, draws=draws, tune=tune, chains=chains, seed=seed,
                               cores=min(chains, os.cpu_count() or 1))
    diag = diagnose(idata, var_names=VARS)
    ess = diag["ess_bulk"]
    total = t_build + secs["compile"] + secs["sample"]
    return {"model": name, "build_s": t_build, "compile_s": secs["compile"],
            "sample_s": secs["sample"], "total_s": total, "min_ess_bulk": ess,
            "ess_per_s": ess / secs["sample"], "ess_per_total_s": ess / total,
            "r_hat": diag["r_hat"], "divergences": diag["divergences"]}


def numba_warmup() -> float:
    """Seconds for the first nutpie compile in a process (numba start-up), kept out of the rows."""
    import nutpie
    import pymc as pm

    t0 = time.perf_counter()
    with pm.Model() as model:
        pm.Normal("x")
    nutpie.compile_pymc_model(model)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="sufficient,sufficient-pymc,centred")
    ap.add_argument("--no-e2e", action="store_true", help="skip the varcomp fit subprocess")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data = bench_data()
    print(f"data: {data.n_obs} rows, {data.n_groups} clusters, p = {data.p}; "
          f"{args.chains} chains x {args.draws} draws (+{args.tune} tune); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    warm = numba_warmup()
    print(f"numba warm-up (first nutpie compile in this process, a 1-parameter model): "
          f"{warm:.1f} s")
    rows = [run(m, data, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed)
            for m in args.models.split(",")]
    latent = next((r for r in rows if r["model"] in ("centred", "noncentred")), None)
    header = (f"{'model':<16}{'compile s':>10}{'sample s':>10}{'total s':>9}{'min ESS':>9}"
              f"{'ESS/s':>9}{'ratio':>8}{'r_hat':>7}{'div':>5}")
    print(header)
    for r in rows:
        r["ratio_vs_latent"] = r["ess_per_s"] / latent["ess_per_s"] if latent else float("nan")
        print(f"{r['model']:<16}{r['compile_s']:>10.1f}{r['sample_s']:>10.2f}{r['total_s']:>9.1f}"
              f"{r['min_ess_bulk']:>9.0f}{r['ess_per_s']:>9.0f}{r['ratio_vs_latent']:>8.1f}"
              f"{r['r_hat']:>7.3f}{r['divergences']:>5d}")
    if not args.no_e2e:
        print(f"varcomp fit end to end (process start to report written): {end_to_end(data)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
