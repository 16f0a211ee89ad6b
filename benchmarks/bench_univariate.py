"""Cost of the four univariate parameterisations as the data grow, and ``varcomp fit`` end to end.

Run ``make bench`` (or ``python benchmarks/bench_univariate.py [--quick]``). One driver process
runs every case in its own subprocess (so each case's peak RSS is its own, read from
/proc/self/status VmHWM) one after another, and writes ``benchmarks/results.md``,
``benchmarks/results.json`` and ``docs/bench_scaling.png``.

Sampling: nutpie, 4 chains x (1000 tune + 1000 draws), 2 cores, compiled as ``varcomp fit``
compiles (``sufficient``: models.compiled.oneway's cached numba code; the others: nutpie's numba
backend). OpenBLAS is pinned to one thread: with its default thread pool every small LAPACK
call (the marginal form's triangular solves) waits on threads the two nutpie chains already
occupy, 10-30x slower on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS (see above)

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FORMS = ("centred", "noncentred", "marginal", "sufficient")
TRUE = {"mu": 50.0, "tau": 3.0, "sigma": 9.0}  # ICC 0.1, like school exam scores
# (rows, clusters); "exam" is the issue-3 set: 31,022 rows, 2,410 clusters, 80 sizes up to 188
GRID = [(1_000, 10), (10_000, 100), ("exam", 2_410), (100_000, 1_000), (1_000_000, 10_000),
        (10_000_000, 100_000)]
QUICK_GRID = [(1_000, 10), (10_000, 100), ("exam", 2_410)]
# Time budgets, stated in the table: the latent forms run up to 1e5 rows; the literal MvNormal up
# to a padded solve work sum_blocks clusters * K^2 of 1.2e6 per gradient (the exam set: 1.17e6).
LATENT_MAX_ROWS = 100_000
MARGINAL_MAX_WORK = 1.2e6


# ----------------------------------------------------------------------------- data
def exam_sizes(L: int = 2410, total: int = 31022, n_distinct: int = 80, max_size: int = 188,
               seed: int = 0) -> np.ndarray:
    """L cluster sizes summing to ``total`` with exactly ``n_distinct`` sizes, the largest
    ``max_size``: every size 1..64 occurs, skewed like school sizes (median 10), plus 16 large
    schools of 70..188 pupils."""
    rng = np.random.default_rng(seed)
    n_small = n_distinct - 16
    big = np.unique(np.round(np.geomspace(n_small + 6, max_size, 16)).astype(int))
    rest, target = L - big.size, total - int(big.sum())
    small = np.clip(rng.negative_binomial(3, 3 / (3 + target / rest), size=rest), 1, n_small)
    small[:n_small] = np.arange(1, n_small + 1)
    free = np.arange(n_small, rest)
    while small.sum() != target:  # +-1 nudges keep the support and reach the exact total
        i = rng.choice(free)
        step = 1 if small.sum() < target else -1
        if 1 <= small[i] + step <= n_small:
            small[i] += step
    sizes = np.concatenate([small, big])
    rng.shuffle(sizes)
    return sizes


def grid_sizes(rows: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Unbalanced sizes (1 + Poisson) summing exactly to ``rows``."""
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(rows / clusters - 1, size=clusters)
    diff = rows - int(sizes.sum())
    idx = rng.choice(clusters, size=abs(diff), replace=True)
    np.add.at(sizes, idx, np.sign(diff))
    while (sizes < 1).any():  # undo rare overshoots below 1
        bad = np.flatnonzero(sizes < 1)
        sizes[bad] += 1
        sizes[rng.choice(np.flatnonzero(sizes > 2), size=bad.size)] -= 1
    return sizes


def make_data(case, seed: int = 1):
    """The data of one grid point (the exam set through models.simulate.simulate_univariate)."""
    from varcomp.models.data import ClusteredData

    if case[0] == "exam":
        from varcomp.models.simulate import simulate_univariate

        return simulate_univariate(L=2410, n=exam_sizes(), rng=seed, **TRUE).data()
    rows, clusters = case
    sizes = grid_sizes(rows, clusters)
    # the same generative model as simulate_univariate, without a 1e7-row frame of labels
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(clusters), sizes)
    y = (TRUE["mu"] + rng.normal(0, TRUE["tau"], clusters)[codes]
         + rng.normal(0, TRUE["sigma"], rows))
    return ClusteredData(y=y[:, None], codes=codes, groups=np.array(
        [f"g{i + 1}" for i in range(clusters)], dtype=object), responses=("y",),
        group_name="group", source="<simulated>")


def padded_work(data) -> float:
    """Per-gradient solve work of the literal MvNormal form: sum_blocks clusters * K^2."""
    from varcomp.models.forms.oneway import size_blocks

    return float(sum(v.shape[0] * v.shape[1] ** 2 for _, v in size_blocks(data)))


# ----------------------------------------------------------------------------- one case
def hwm_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case, form: str, draws: int, tune: int) -> dict:
    """Build, compile and sample one parameterisation on one data set (in this process)."""
    import warnings

    warnings.filterwarnings("ignore")
    from varcomp.analyses.fit import _import_for, prepare
    from varcomp.models.forms import family_named
    from varcomp.models.sampling import diagnose, sample_model

    base = hwm_mb()
    t0 = time.perf_counter()
    data = make_data(case)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    family = family_named("oneway")
    _import_for(family.form(form), "nutpie")  # pymc, or nutpie + the compiled form's cached code
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, backend = prepare(family.form(form), data)  # as varcomp fit does
    t_build = time.perf_counter() - t0
    idata, sec = sample_model(model, draws=draws, tune=tune, chains=4, seed=1, cores=2,
                              backend=backend)
    dg = diagnose(idata, family.summary_vars)
    steps = idata.sample_stats.get("n_steps")
    return {"rows": data.n_obs, "clusters": data.n_groups, "form": form,
            "data_s": t_data, "import_s": t_import, "build_s": t_build, "compile_s": sec["compile"],
            "sample_s": sec["sample"], "min_ess_bulk": dg["ess_bulk"], "r_hat": dg["r_hat"],
            "divergences": dg["divergences"],
            "grad_evals_draws": int(steps.sum()) if steps is not None else None,
            "ess_per_s": dg["ess_bulk"] / sec["sample"], "peak_rss_mb": hwm_mb(),
            "import_rss_mb": base}


def in_subprocess(args: list[str], timeout: float) -> tuple[dict | None, float, str]:
    """Run this script with ``args``; returns (its JSON line, wall s, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return None, time.perf_counter() - t0, f"timeout after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), wall, err[-2000:]


def peak_command(cmd: list[str], timeout: float, env=None) -> dict:
    """Wall time (process start to exit) and the child's own peak RSS (os.wait4's rusage)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT, env=env)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        return {"wall_s": wall, "rc": proc.returncode, "peak_rss_mb": usage.ru_maxrss / 1024,
                "stdout": fo.read().decode()[-1500:], "stderr": fe.read().decode()[-1500:]}


# ----------------------------------------------------------------------------- end to end
def write_parquet(path: Path, rows: int, clusters: int, seed: int = 2,
                  batch: int = 2_000_000) -> None:
    """A Parquet file (school: int64, score: float64) written in batches, never whole in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    effects = rng.normal(0, TRUE["tau"], clusters)
    schema = pa.schema([("school", pa.int64()), ("score", pa.float64())])
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, rows, batch):
            m = min(batch, rows - start)
            g = rng.integers(0, clusters, size=m)
            y = TRUE["mu"] + effects[g] + rng.normal(0, TRUE["sigma"], m)
            w.write_table(pa.table({"school": g, "score": y}, schema=schema), row_group_size=m)


def write_csv(path: Path, rows: int, clusters: int, seed: int = 2, batch: int = 2_000_000):
    """The same data as CSV, written in batches with pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    effects = rng.normal(0, TRUE["tau"], clusters)
    with open(path, "wb") as fh:
        for i, start in enumerate(range(0, rows, batch)):
            m = min(batch, rows - start)
            g = rng.integers(0, clusters, size=m)
            y = TRUE["mu"] + effects[g] + rng.normal(0, TRUE["sigma"], m)
            pcsv.write_csv(pa.table({"school": g, "score": y}), fh,
                           pcsv.WriteOptions(include_header=(i == 0)))


def chunked_fit_main(path: str, out: str, draws: int, tune: int) -> None:
    """What ``varcomp fit FILE --model sufficient`` does, with the statistics read in chunks."""
    import warnings

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    from varcomp.analyses.fit import fit, write_outputs
    from varcomp.models.chunked import read_stats
    from varcomp.models.priors import Priors

    t_import = time.perf_counter() - t0
    data = read_stats(path, group="school", response="score")
    t_stats = time.perf_counter() - t0 - t_import
    result = fit(data, "sufficient", draws=draws, tune=tune, priors=Priors.default(data))
    t_fit = time.perf_counter() - t0 - t_import - t_stats
    write_outputs(result, Path(out))
    dg = result.fits["sufficient"].diagnostics
    print(json.dumps({"import_s": t_import, "stats_s": t_stats, "fit_s": t_fit,
                      "total_s": time.perf_counter() - t0, "min_ess_bulk": dg["ess_bulk"],
                      "peak_rss_mb": hwm_mb()}))


def stats_main(path: str) -> None:
    """Chunked statistics of one file: seconds and peak RSS."""
    t0 = time.perf_counter()
    from varcomp.models.chunked import read_stats

    data = read_stats(path, group="school", response="score")
    print(json.dumps({"rows": data.n_obs, "clusters": data.n_groups,
                      "seconds": time.perf_counter() - t0, "peak_rss_mb": hwm_mb()}))


def end_to_end(tmp: Path, quick: bool, log) -> dict:
    """``varcomp fit`` as a subprocess: Dyestuff (twice), the exam set, 1e7 rows from Parquet."""
    varcomp = str(Path(sys.executable).with_name("varcomp"))
    res: dict = {}
    for i in (1, 2):
        r = peak_command([varcomp, "fit", "dyestuff", "--out", str(tmp / f"dye{i}")], 300)
        res[f"dyestuff_run{i}"] = r
        log(f"  varcomp fit dyestuff (run {i}): {r['wall_s']:.1f} s, rc {r['rc']}")
    exam = make_data(("exam", 2410))
    csv = tmp / "exam.csv"
    exam.to_frame().to_csv(csv, index=False)
    r = peak_command([varcomp, "fit", str(csv), "--group", "group", "--response", "y",
                      "--out", str(tmp / "exam")], 300)
    r["min_ess_bulk"] = _summary_ess(tmp / "exam")
    res["exam_sufficient"] = r
    log(f"  varcomp fit exam.csv: {r['wall_s']:.1f} s, min ESS_bulk {r['min_ess_bulk']}")
    rows, clusters = (1_000_000, 10_000) if quick else (10_000_000, 100_000)
    pq_path = tmp / f"big_{rows}.parquet"
    write_parquet(pq_path, rows, clusters)
    r = peak_command([varcomp, "fit", str(pq_path), "--group", "school", "--response", "score",
                      "--out", str(tmp / "big")], 600)
    r["min_ess_bulk"] = _summary_ess(tmp / "big")
    r["rows"], r["clusters"] = rows, clusters
    res["big_cli"] = r
    log(f"  varcomp fit {rows:.0e} rows (CLI): {r['wall_s']:.1f} s, "
        f"peak {r['peak_rss_mb']:.0f} MB, rc {r['rc']}")
    r = peak_command([sys.executable, __file__, "--chunked-fit", str(pq_path),
                      str(tmp / "big_chunked")], 600)
    r["rows"], r["clusters"] = rows, clusters
    r["detail"] = _json_line(r["stdout"])
    res["big_chunked"] = r
    log(f"  chunked statistics + fit {rows:.0e} rows: {r['wall_s']:.1f} s, "
        f"peak {r['peak_rss_mb']:.0f} MB, rc {r['rc']}")
    return res


def chunked_scaling(tmp: Path, quick: bool, log) -> list[dict]:
    """Chunked statistics of Parquet and CSV files of 1e7 (and 1e8, full mode) rows."""
    out = []
    sizes = [(1_000_000, 10_000)] if quick else [(10_000_000, 100_000), (100_000_000, 100_000)]
    for rows, clusters in sizes:
        for kind in ("parquet", "csv"):
            if kind == "csv" and rows > 10_000_000:
                continue  # a 2.6 GB CSV to write: extrapolated from 1e7 instead
            path = tmp / f"chunk_{rows}.{kind}"
            t0 = time.perf_counter()
            (write_parquet if kind == "parquet" else write_csv)(path, rows, clusters)
            gen = time.perf_counter() - t0
            r = peak_command([sys.executable, __file__, "--stats", str(path)], 900)
            r.update({"rows": rows, "clusters": clusters, "kind": kind, "write_s": gen,
                      "file_mb": path.stat().st_size / 2**20, "detail": _json_line(r["stdout"])})
            out.append(r)
            log(f"  chunked stats {kind} {rows:.0e} rows: {r['wall_s']:.1f} s wall, "
                f"peak {r['peak_rss_mb']:.0f} MB")
            path.unlink()
    return out


def _json_line(text: str) -> dict | None:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def _summary_ess(out: Path) -> float | None:
    try:
        s = json.loads((out / "summary.json").read_text())
        return s["fits"]["sufficient"]["diagnostics"]["ess_bulk"]
    except (OSError, KeyError, ValueError):
        return None


# ----------------------------------------------------------------------------- report
def _fmt(x, nd=1):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:,.{nd}f}"


def write_markdown(rows: list[dict], e2e: dict, chunked: list[dict], meta: dict, path: Path):
    """benchmarks/results.md: the scaling table, the issue-3 table, end-to-end and chunked."""
    lines = [f"# Benchmark results ({meta['mode']} mode)", "",
             f"Measured {meta['date']} on {meta['cpus']} cores shared with other jobs "
             f"(load average {meta['load']}): timings are inflated; ratios within this run are "
             "what to compare. "
             f"nutpie, 4 chains x ({meta['tune']} tune + {meta['draws']} draws), 2 cores; "
             "`sufficient` runs models.compiled.oneway's cached numba code (as `varcomp fit` "
             "does), the others nutpie's numba backend. Peak RSS is each case's own process "
             "(VmHWM), about 0.4 GB of it the imports.", "",
             "`import s` is the form's own imports (pymc; or nutpie and models.compiled.oneway, "
             "whose machine code numba loads from its on-disk cache, so its compile is 0).", "",
             "| rows | clusters | form | import s | build s | compile s | sampling s | "
             "min ESS_bulk | ESS/s | peak RSS MB |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['rows']:,} | {r['clusters']:,} | {r['form']} | "
                         f"skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(f"| {r['rows']:,} | {r['clusters']:,} | {r['form']} | "
                     f"{_fmt(r.get('import_s'), 2)} | {_fmt(r['build_s'], 2)}"
                     f" | {_fmt(r['compile_s'])} | {_fmt(r['sample_s'], 2)} | "
                     f"{_fmt(r['min_ess_bulk'], 0)} | {_fmt(r['ess_per_s'])} | "
                     f"{_fmt(r['peak_rss_mb'], 0)} |")
    exam = {r["form"]: r for r in rows if r.get("exam") and not r.get("skipped")}
    if exam:
        lines += ["", "## The 31,022-row / 2,410-cluster set (80 sizes up to 188)", "",
                  "| form | compile s | sampling s | min ESS_bulk | ESS/s |",
                  "|---|---:|---:|---:|---:|"]
        for f in FORMS:
            if f in exam:
                r = exam[f]
                lines.append(f"| {f} | {_fmt(r['compile_s'])} | {_fmt(r['sample_s'], 2)} | "
                             f"{_fmt(r['min_ess_bulk'], 0)} | {_fmt(r['ess_per_s'])} |")
        if "sufficient" in exam and "centred" in exam:
            ratio = exam["sufficient"]["ess_per_s"] / exam["centred"]["ess_per_s"]
            lines += ["", f"Sampling-phase ESS/s, sufficient / centred: **{ratio:,.0f}x** "
                      "(goal >= 200x)."]
        if "marginal" in exam:
            r = exam["marginal"]
            tot = r["build_s"] + r["compile_s"] + r["sample_s"]
            lines += [f"Literal MvNormal (`marginal`) build + compile + sampling: **{tot:.0f} s** "
                      "(goal <= 300 s)."]
    if e2e:
        lines += ["", "## `varcomp fit` end to end (process start to report written)", "",
                  "| run | wall s | peak RSS MB | min ESS_bulk | goal |",
                  "|---|---:|---:|---:|---|"]
        goals = {"dyestuff_run1": "<= 5 s", "dyestuff_run2": "<= 5 s (compiled code cached)",
                 "exam_sufficient": "<= 6 s, ESS >= 1000",
                 "big_cli": "<= 20 s, <= 1.5 GB (the CLI reads it in chunks)",
                 "big_chunked": "(the same through the Python API: read_stats + fit)"}
        for k, r in e2e.items():
            name = k
            exit_note = "" if r["rc"] == 0 else f" (exit {r['rc']})"
            if "rows" in r:
                name = f"{k} ({r['rows']:.0e} rows, {r['clusters']:.0e} clusters)"
            lines.append(f"| {name} | {_fmt(r['wall_s'])} | {_fmt(r.get('peak_rss_mb'), 0)} | "
                         f"{_fmt(r.get('min_ess_bulk'), 0)} | {goals.get(k, '')}{exit_note} |")
    if chunked:
        lines += ["", "## Out-of-core sufficient statistics (models.chunked)", "",
                  "| file | rows | clusters | size MB | seconds | peak RSS MB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in chunked:
            d = r.get("detail") or {}
            lines.append(f"| {r['kind']} | {r['rows']:,} | {r['clusters']:,} | "
                         f"{_fmt(r['file_mb'], 0)} | {_fmt(d.get('seconds'))} | "
                         f"{_fmt(r['peak_rss_mb'], 0)} |")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    """Log-log cost against rows, clusters.

    The cost is imports + build + compile + sampling, and sampling alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for form, marker in zip(FORMS, "osD^", strict=True):
        done = [r for r in rows if r["form"] == form and not r.get("skipped")]
        if not done:
            continue
        for ax, key in zip(axes, ("rows", "clusters"), strict=True):
            rs = sorted(done, key=lambda r: r[key])
            x = [r[key] for r in rs]
            total = [r.get("import_s", 0.0) + r["build_s"] + r["compile_s"] + r["sample_s"]
                     for r in rs]
            line, = ax.loglog(x, total, marker=marker, label=f"{form}: imports to draws")
            ax.loglog(x, [r["sample_s"] for r in rs], marker=marker, ls=":",
                      color=line.get_color(), label=f"{form}: sampling")
    for ax, key in zip(axes, ("rows N", "clusters L"), strict=True):
        ax.set_xlabel(key)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds (2 shared cores)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("varcomp: cost of one fit (4 chains x 1000 draws) as the data grow")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- driver
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small grid, fewer draws (minutes)")
    p.add_argument("--no-e2e", action="store_true", help="skip the varcomp fit runs")
    p.add_argument("--no-grid", action="store_true", help="skip the per-form grid")
    p.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # rows clusters form
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=1000)
    p.add_argument("--chunked-fit", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        rows, clusters, form = args.case
        case = ("exam", 2410) if rows == "exam" else (int(rows), int(clusters))
        print(json.dumps(run_case(case, form, args.draws, args.tune)))
        return 0
    if args.chunked_fit:
        chunked_fit_main(*args.chunked_fit, draws=args.draws, tune=args.tune)
        return 0
    if args.stats:
        stats_main(args.stats)
        return 0

    if args.quick and args.draws == 1000:
        args.draws = args.tune = 500
    grid = QUICK_GRID if args.quick else GRID
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    results: list[dict] = []
    if not args.no_grid:
        for case in grid:
            data = make_data(case)
            N, L = data.n_obs, data.n_groups
            work = padded_work(data) if N <= 200_000 else float("inf")
            del data
            for form in FORMS:
                row = {"rows": N, "clusters": L, "form": form, "exam": case[0] == "exam"}
                if form in ("centred", "noncentred") and N > LATENT_MAX_ROWS:
                    row["skipped"] = f"latent form above {LATENT_MAX_ROWS:,} rows"
                elif form == "marginal" and work > MARGINAL_MAX_WORK:
                    row["skipped"] = f"padded solve work {work:.2g} > {MARGINAL_MAX_WORK:.2g}"
                elif form == "marginal" and args.quick and N > 1_000:
                    row["skipped"] = "--quick (marginal above 1,000 rows)"
                if row.get("skipped"):
                    log(f"{N:>10,} rows {L:>7,} clusters {form:<11} skipped ({row['skipped']})")
                    results.append(row)
                    continue
                rows_arg = "exam" if case[0] == "exam" else str(case[0])
                out, wall, err = in_subprocess(
                    ["--case", rows_arg, str(case[1]), form, "--draws", str(args.draws),
                     "--tune", str(args.tune)], timeout=900)
                if out is None:
                    row["skipped"] = f"failed ({err.strip().splitlines()[-1] if err else '?'})"
                    log(f"{N:>10,} rows {form}: FAILED {err[-400:]}")
                    results.append(row)
                    continue
                row.update(out)
                results.append(row)
                log(f"{N:>10,} rows {L:>7,} clusters {form:<11} import {out['import_s']:.1f} "
                    f"build {out['build_s']:.2f} compile {out['compile_s']:.1f} "
                    f"sample {out['sample_s']:.2f} s, "
                    f"ESS {out['min_ess_bulk']:.0f}, {out['ess_per_s']:.1f}/s, "
                    f"peak {out['peak_rss_mb']:.0f} MB")
    tmp = Path(tempfile.mkdtemp(prefix="varcomp-bench-"))
    e2e, chunked = {}, []
    try:
        if not args.no_e2e:
            e2e = end_to_end(tmp, args.quick, log)
            chunked = chunked_scaling(tmp, args.quick, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(), "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            "draws": args.draws, "tune": args.tune}
    here = Path(__file__).resolve().parent
    suffix = "_quick" if args.quick else ""
    (here / f"results{suffix}.json").write_text(json.dumps(
        {"meta": meta, "grid": results, "end_to_end": e2e, "chunked": chunked}, indent=1,
        default=str) + "\n")
    write_markdown(results, e2e, chunked, meta, here / f"results{suffix}.md")
    if any(not r.get("skipped") for r in results):
        plot(results, ROOT / "docs" / f"bench_scaling{suffix}.png")
    log(f"wrote {here / f'results{suffix}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
