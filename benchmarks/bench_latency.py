"""What a small ``varcomp fit`` costs as a user runs it: whole process, cold and warm caches.

Run ``make bench`` (or ``python benchmarks/bench_latency.py [--repeats 5]``). Writes
``benchmarks/results_latency.md`` and ``benchmarks/results_latency.json``.

- Cases: Dyestuff (30 rows, 6 batches; one-way), the 31,022-row / 2,410-cluster exam set
  (simulated as in bench_univariate.py, read from CSV; one-way) and gcsemv (bivariate,
  1,905 rows). Each is ``varcomp fit DATA --out DIR`` with its defaults (the sufficient form,
  4 chains x (1000 tune + 1000 draws), report and summary written).
- Process wall time (start to exit) and CPU (user + sys of the child, from ``os.wait4``).
- Warm: the installed ``varcomp`` after one untimed run (numba's on-disk cache of the
  compiled kernels and Python's bytecode exist); median of ``--repeats`` runs.
- Cold: a fresh ``git clone`` of this checkout per run, run from the clone (its modules have no
  bytecode and no numba cache, as on a user's first run after cloning); median of 3. The
  operating system's page cache is warm in both (site-packages were read before); dropping it
  needs privileges a user does not have.
- The report alone: ``render_report`` of Dyestuff fitted with the sufficient form, and with all
  four forms (defaults), in one process after one untimed render (matplotlib loaded); median
  of ``--repeats``.
- Imports: each heavy module imported alone in a fresh interpreter (its own dependencies
  included, so the rows overlap), median of ``--repeats``.

- ``--baseline REV``: instead of the above, warm runs of REV (a ``git worktree`` of it, byte-
  compiled like an install) and of this checkout, interleaved run by run in the same minutes
  (``python -m analyses.cli`` from each tree), reported as medians and paired ratios: the machine's
  speed drifts by +-20% over tens of minutes here, so a change is measured against its baseline
  in the same run. Writes ``results_latency_ab.md``/``.json``.

- ``--api``: instead of the above, the Python API in a notebook-like process: ``import varcomp``
  in a fresh interpreter (median of ``--repeats``), and a warm in-process refit of Dyestuff
  (``varcomp.fit(df, group="Batch", response="Yield")`` on the shipped DataFrame, defaults:
  4 chains x (1000 tune + 1000 draws), summary included, no files) after one untimed call,
  median of ``--repeats`` (a fresh seed each call, as ``seed=None`` gives), with its CPU time
  (all threads: on this shared machine the wall time grows with the load, the CPU time hardly
  does). Writes
  ``results_latency_api.md``/``.json``.

No timing here is asserted anywhere; tests/test_latency.py checks what the route imports and
that a warm run compiles nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARCOMP = str(Path(sys.executable).with_name("varcomp"))
HEAVY = ["numpy", "pandas", "scipy.stats", "xarray", "matplotlib.pyplot", "numba", "arviz",
         "nutpie", "h5netcdf", "jinja2", "formulae", "pymc", "pytensor", "dask.dataframe",
         "distributed"]


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> dict:
    """Wall and CPU seconds of one process, its exit code and the tail of its stderr."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as fe:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        fe.seek(0)
        err = fe.read().decode()[-600:]
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}: {err}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def exam_csv(path: Path) -> None:
    """The 31k-row exam set of bench_univariate.py as CSV (school, score)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT))
    from bench_univariate import TRUE, exam_sizes

    from varcomp.models.simulate import simulate_univariate

    d = simulate_univariate(L=2410, n=exam_sizes(), rng=1, **TRUE).data()
    import pandas as pd

    pd.DataFrame({"school": [f"s{c + 1}" for c in d.codes], "score": d.y[:, 0]}).to_csv(
        path, index=False)


def median(runs: list[dict]) -> dict:
    """Medians of wall and CPU over runs, and the runs themselves."""
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "walls": [round(r["wall_s"], 3) for r in runs]}


def fit_args(case: list[str], out: Path) -> list[str]:
    return ["fit", *case, "--out", str(out)]


def warm(case: list[str], tmp: Path, repeats: int) -> dict:
    run([VARCOMP, *fit_args(case, tmp / "warmup")], cwd=tmp)
    runs = []
    for i in range(repeats):
        runs.append(run([VARCOMP, *fit_args(case, tmp / f"w{i}")], cwd=tmp))
    return median(runs)


def cold(case: list[str], tmp: Path, repeats: int) -> dict:
    """Each run from its own fresh clone: no bytecode or numba cache of varcomp's modules."""
    runs = []
    for i in range(repeats):
        clone = tmp / f"clone{i}"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        for name in ("data",):  # the shipped CSVs are in git; nothing else to copy
            assert (clone / name).is_dir()
        # -m analyses.cli from the clone's folder: the clone's modules, the console entry
        runs.append(run([sys.executable, "-m", "varcomp", *fit_args(case, tmp / f"c{i}")],
                        cwd=clone))
        shutil.rmtree(clone)
    return median(runs)


REPORT = """
import json, statistics, sys, time
from varcomp.analyses.fit import fit
from varcomp.analyses.report import render_report
from varcomp.models import load

out = {}
for model in ("sufficient", "all"):
    result = fit(load("dyestuff"), model, seed=1)
    render_report(result)
    times = []
    for _ in range(int(sys.argv[1])):
        t = time.perf_counter()
        render_report(result)
        times.append(time.perf_counter() - t)
    out[model] = {"forms": len(result.fits), "render_s": statistics.median(times),
                  "times": [round(x, 3) for x in times]}
print(json.dumps(out))
"""


def report_times(repeats: int) -> dict:
    res = subprocess.run([sys.executable, "-c", REPORT, str(repeats)], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def import_times(repeats: int) -> dict:
    out = {}
    arviz = "arviz via models.sampling.import_arviz"
    for mod in ["(interpreter start)", *HEAVY, arviz]:
        stmt = ("pass" if mod.startswith("(") else
                "from models.sampling import import_arviz; import_arviz()" if mod == arviz else
                f"import {mod}")
        code = ("import time; t = time.perf_counter(); " + stmt
                + "; print(time.perf_counter() - t)")
        walls, inner = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 cwd=ROOT, check=True)
            walls.append(time.perf_counter() - t0)
            inner.append(float(res.stdout.strip()))
        out[mod] = {"import_s": statistics.median(inner), "process_s": statistics.median(walls)}
    return out


API_IMPORT = ("import time; t = time.perf_counter(); import varcomp; "
              "print(time.perf_counter() - t)")
API_REFIT = """
import json, statistics, sys, time
t = time.perf_counter()
import varcomp
df = varcomp.load_dataset("dyestuff")
varcomp.fit(df, group="Batch", response="Yield", progress=False)
first = time.perf_counter() - t
times, cpus, stages = [], [], []
for _ in range(int(sys.argv[1])):
    t, c = time.perf_counter(), time.process_time()
    r = varcomp.fit(df, group="Batch", response="Yield", progress=False)
    times.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
    stages.append(r.summary_dict["fits"]["sufficient"]["seconds"])
print(json.dumps({"first_s": first, "refit_s": statistics.median(times),
                  "refit_cpu_s": statistics.median(cpus),
                  "times": [round(x, 3) for x in times],
                  "sample_s": statistics.median(s["sample"] for s in stages),
                  "fit_total_s": statistics.median(s["total"] for s in stages)}))
"""


def api_times(repeats: int) -> dict:
    """``import varcomp`` in fresh interpreters and a warm in-process refit (module docstring)."""
    inner, walls = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", API_IMPORT], capture_output=True,
                             text=True, cwd=ROOT, check=True)
        walls.append(time.perf_counter() - t0)
        inner.append(float(res.stdout.strip()))
    res = subprocess.run([sys.executable, "-c", API_REFIT, str(repeats)], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    return {"import_s": statistics.median(inner), "import_process_s": statistics.median(walls),
            "imports": [round(x, 4) for x in inner],
            **json.loads(res.stdout.strip().splitlines()[-1])}


def markdown_api(res: dict) -> str:
    m, a = res["meta"], res["api"]
    return (f"Measured {m['when']} on {m['cores']} cores (load average {m['load_start']} at the "
            f"start, {m['load_end']} at the end), median of {m['repeats']}:\n\n"
            "| measurement | seconds | goal |\n|---|---:|---:|\n"
            f"| `import varcomp` (in a fresh interpreter) | {a['import_s']:.3f} | 1 |\n"
            f"| the same, whole process | {a['import_process_s']:.3f} | |\n"
            f"| first `varcomp.fit` of Dyestuff in the process (imports included) | "
            f"{a['first_s']:.2f} | |\n"
            f"| warm refit of Dyestuff (`varcomp.fit`, summary included, no files) | "
            f"{a['refit_s']:.3f} | 0.2 |\n"
            f"| its CPU time (all threads) | {a['refit_cpu_s']:.3f} | |\n"
            f"| of which sampling (nutpie, 4 x 2000 iterations) | {a['sample_s']:.3f} | |\n"
            f"\nRefits: {', '.join(f'{x:.3f}' for x in a['times'])} s.\n")


def baseline(rev: str, cases: dict, tmp: Path, repeats: int) -> dict:
    """Interleaved warm runs of ``rev`` and of this checkout (see the module docstring)."""
    base = tmp / "baseline"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base), rev], cwd=ROOT,
                   check=True)
    try:
        trees = {"baseline": base, "this": ROOT}
        for tree in trees.values():  # bytecode current in both, as after an install
            subprocess.run([sys.executable, "-m", "compileall", "-q", "analyses", "models"],
                           cwd=tree, check=True)
        out = {}
        for name, (case, _, _) in cases.items():
            print(f"{name} ...", flush=True)
            cmd = [sys.executable, "-m", "varcomp", *fit_args(case, tmp / "o")]
            for tree in trees.values():  # untimed: fills each tree's numba cache
                shutil.rmtree(tmp / "o", ignore_errors=True)
                run(cmd, cwd=tree)
            walls: dict = {k: [] for k in trees}
            for _ in range(repeats):
                for k, tree in trees.items():
                    shutil.rmtree(tmp / "o", ignore_errors=True)
                    walls[k].append(run(cmd, cwd=tree)["wall_s"])
            ratios = [b / t for b, t in zip(walls["baseline"], walls["this"], strict=True)]
            out[name] = {k: {"wall_s": statistics.median(v), "walls": [round(w, 3) for w in v]}
                         for k, v in walls.items()}
            out[name]["ratio"] = {"median": statistics.median(ratios), "min": min(ratios),
                                  "max": max(ratios)}
            print(json.dumps(out[name]), flush=True)
        return out
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)


def markdown_ab(res: dict) -> str:
    m = res["meta"]
    lines = [f"Measured {m['when']} on {m['cores']} cores (load average {m['load_start']} at the "
             f"start, {m['load_end']} at the end): warm runs of `{m['baseline']}` and of this "
             f"checkout (`{m['this']}`), interleaved, {m['repeats']} each, whole process "
             "(`python -m analyses.cli fit ...`), report and summary written.", "",
             "| data | baseline wall s (median) | this wall s (median) | paired ratio median "
             "(range) |", "|---|---:|---:|---|"]
    for name, r in res["ab"].items():
        q = r["ratio"]
        lines.append(f"| {name} | {r['baseline']['wall_s']:.2f} | {r['this']['wall_s']:.2f} | "
                     f"{q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f}) |")
    return "\n".join(lines) + "\n"


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        f"Measured {m['when']} on {m['cores']} cores (load average {m['load_start']} at the "
        f"start, {m['load_end']} at the end); warm = median of {m['repeats']} runs of the "
        f"installed `varcomp` after one untimed run; cold = median of {m['cold_repeats']} runs, "
        "each from a fresh `git clone` (no bytecode, no numba cache of varcomp's modules). "
        "Whole process, report and summary written.", "",
        "| data | rows | clusters | caches | wall s (median) | CPU s | peak RSS MB | walls |",
        "|---|---:|---:|---|---:|---:|---:|---|"]
    for name, r in res["fits"].items():
        for kind in ("warm", "cold"):
            x = r[kind]
            lines.append(f"| {name} | {r['rows']:,} | {r['clusters']:,} | {kind} | "
                         f"{x['wall_s']:.2f} | {x['cpu_s']:.2f} | {x['peak_rss_mb']:.0f} | "
                         f"{', '.join(f'{w:.2f}' for w in x['walls'])} |")
    rep = res["report"]
    lines += ["", "The report alone (`render_report`, Dyestuff, median of "
              f"{m['repeats']}): one form {rep['sufficient']['render_s']:.2f} s (goal 0.5 s), "
              f"{rep['all']['forms']} forms {rep['all']['render_s']:.2f} s (goal 1.5 s)."]
    lines += ["", "Import of each heavy module alone in a fresh interpreter (its dependencies "
              "included, so rows overlap), median:", "",
              "| module | import s | whole process s |", "|---|---:|---:|"]
    for mod, x in res["imports"].items():
        lines.append(f"| {mod} | {x['import_s']:.2f} | {x['process_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_latency"))
    ap.add_argument("--baseline", metavar="REV", help="interleave warm runs of REV and this tree")
    ap.add_argument("--api", action="store_true",
                    help="only the Python API: import time and a warm in-process refit")
    args = ap.parse_args()
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
            "load_start": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            "repeats": args.repeats, "cold_repeats": args.cold_repeats}
    if args.api:
        res = {"meta": meta, "api": api_times(args.repeats)}
        meta["load_end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        Path(args.out + "_api.json").write_text(json.dumps(res, indent=1))
        Path(args.out + "_api.md").write_text(markdown_api(res))
        print(markdown_api(res))
        return 0
    res: dict = {"meta": meta, "fits": {}}
    with tempfile.TemporaryDirectory(prefix="varcomp-latency-") as t:
        tmp = Path(t)
        exam = tmp / "exam.csv"
        exam_csv(exam)
        cases = {
            "Dyestuff": (["dyestuff"], 30, 6),
            "exam (31k)": ([str(exam), "--group", "school", "--response", "score"], 31022, 2410),
            "gcsemv (bivariate)": (["gcsemv", "--group", "school", "--response", "written",
                                    "--response", "course"], 1905, 73),
        }
        if args.baseline:
            this = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip()
            meta.update(baseline=args.baseline, this=this)
            res = {"meta": meta, "ab": baseline(args.baseline, cases, tmp, args.repeats)}
            meta["load_end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            Path(args.out + "_ab.json").write_text(json.dumps(res, indent=1))
            Path(args.out + "_ab.md").write_text(markdown_ab(res))
            print(markdown_ab(res))
            return 0
        for name, (case, rows, clusters) in cases.items():
            print(f"{name} ...", flush=True)
            res["fits"][name] = {"rows": rows, "clusters": clusters,
                                 "warm": warm(case, tmp, args.repeats),
                                 "cold": cold(case, tmp, args.cold_repeats)}
            print(json.dumps(res["fits"][name]), flush=True)
        print("report ...", flush=True)
        res["report"] = report_times(args.repeats)
        print("imports ...", flush=True)
        res["imports"] = import_times(args.repeats)
    meta["load_end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    Path(args.out + ".json").write_text(json.dumps(res, indent=1))
    Path(args.out + ".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
