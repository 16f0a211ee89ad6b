"""The mixed-model families' goals, measured: covariates, nested and crossed factors.

Run ``make bench`` (or ``python benchmarks/bench_mixed.py [--quick]``). Every end-to-end figure is
``varcomp fit`` as a user runs it: a new process, from start to exit, report written, timed by
``/usr/bin/time`` (wall seconds and peak RSS), warm caches (one untimed run first), median of
``--repeats`` runs. Sampling comparisons (ESS per second of sampling, same data, same run) come from
``analyses.fit.fit`` in one process. Writes ``benchmarks/results_mixed.md`` and ``.json``.

Cases (the issues' goals):

- regression: 31,022 rows / 2,410 clusters (the exam shape of bench_univariate) with one covariate:
  end to end <= 6 s with min ESS_bulk >= 1000; sufficient's ESS/s >= 200 x centred's.
- regression, 10^7 rows / 10^5 clusters / 5 covariates from Parquet (read in chunks): <= 30 s and
  <= 2 GB peak RSS.
- nested: pupils in 2,400 schools in 100 areas, 31k rows (``(1|area/school)``): <= 8 s, ESS >= 1000.
- crossed: 73,421 rows, 2,972 x 1,128 levels (InstEval's shape, simulated): the fastest latent
  form, every ESS_bulk >= 400 and the gate passed, <= 300 s.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
VARCOMP = str(Path(sys.executable).parent / "varcomp")


# ----------------------------------------------------------------------------- data
def regression_frame(sizes: np.ndarray, k: int = 1, seed: int = 0) -> pd.DataFrame:
    """y = 50 + x'b + school effect + noise; one row-level covariate, the rest cluster-level."""
    rng = np.random.default_rng(seed)
    L = sizes.size
    g = np.repeat(np.arange(L), sizes)
    cols = {"g": np.char.add("s", g.astype(str))}
    y = 50.0 + rng.normal(0, 3, L)[g] + rng.normal(0, 9, g.size)
    for j in range(k):
        x = rng.normal(size=g.size) if j == 0 else rng.normal(size=L)[g]
        cols[f"x{j + 1}"] = x
        y = y + (2.0 - 0.5 * j) * x
    cols["y"] = y
    return pd.DataFrame(cols)


def nested_frame(rows: int = 31_000, schools: int = 2_400, areas: int = 100,
                 seed: int = 0) -> pd.DataFrame:
    from bench_univariate import grid_sizes

    rng = np.random.default_rng(seed)
    sizes = grid_sizes(rows, schools, seed)
    school = np.repeat(np.arange(schools), sizes)
    area_of = rng.integers(0, areas, schools)
    y = (50 + rng.normal(0, 2, areas)[area_of][school] + rng.normal(0, 3, schools)[school]
         + rng.normal(0, 8, school.size))
    return pd.DataFrame({"area": np.char.add("a", area_of[school].astype(str)),
                         "school": np.char.add("s", school.astype(str)), "y": y})


def crossed_frame(rows: int = 73_421, students: int = 2_972, lecturers: int = 1_128,
                  seed: int = 0) -> pd.DataFrame:
    """InstEval's shape: every student rates ~25 lecturers, lecturers' popularity skewed."""
    rng = np.random.default_rng(seed)
    s = np.sort(rng.integers(0, students, rows))
    pop = rng.gamma(0.8, 1.0, lecturers)
    d = rng.choice(lecturers, rows, p=pop / pop.sum())
    s[:students] = np.arange(students)  # every level present
    d[:lecturers] = np.arange(lecturers)
    y = 3.2 + rng.normal(0, 0.32, students)[s] + rng.normal(0, 0.52, lecturers)[d] + \
        rng.normal(0, 1.18, rows)
    return pd.DataFrame({"s": np.char.add("s", s.astype(str)),
                         "d": np.char.add("d", d.astype(str)), "y": y})


# ----------------------------------------------------------------------------- measuring
def timed(cmd: list[str], timeout: float = 1800) -> dict:
    """One process: wall seconds and peak RSS (MB) from /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as fh:
        t0 = time.perf_counter()
        res = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", fh.name, *cmd],
                             capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        parts = Path(fh.name).read_text().split()
    out = {"ok": res.returncode == 0, "wall_s": wall, "stderr": res.stderr[-2000:]}
    if len(parts) >= 2:
        out["rss_mb"] = float(parts[-1]) / 1024.0
    return out


def end_to_end(args: list[str], out: Path, repeats: int) -> dict:
    """``varcomp fit`` warm (one untimed run first), median wall of ``repeats`` runs."""
    cmd = [VARCOMP, "fit", *args, "--out", str(out)]
    first = timed(cmd)
    if not first["ok"]:
        return {"ok": False, "stderr": first["stderr"]}
    runs = [timed(cmd) for _ in range(repeats)] or [first]
    summary = json.loads((out / "summary.json").read_text())
    fit = next(iter(summary["fits"].values()))
    ess = min(p["ess_bulk"] for p in fit["params"].values() if p["ess_bulk"] is not None)
    return {"ok": all(r["ok"] for r in runs), "first_s": first["wall_s"],
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "walls": [r["wall_s"] for r in runs], "rss_mb": max(r.get("rss_mb", 0) for r in runs),
            "min_ess_bulk": ess, "diagnostics_ok": fit["diagnostics_ok"],
            "problems": fit["problems"], "form": next(iter(summary["fits"])),
            "sample_s": fit["seconds"]["sample"]}


def ess_per_second(data, forms: list[str], draws: int = 1000) -> dict:
    """Sampling seconds, min ESS_bulk and ESS/s of each form on the same data, one process."""
    from varcomp.analyses.fit import fit

    out = {}
    for form in forms:
        r = fit(data, form, draws=draws, tune=draws, seed=1)
        f = r.fits[form]
        ess = min(p["ess_bulk"] for p in r.summary["fits"][form]["params"].values()
                  if p["ess_bulk"] is not None)
        out[form] = {"sample_s": f.seconds["sample"], "compile_s": f.seconds["compile"],
                     "min_ess_bulk": ess, "ess_per_s": ess / f.seconds["sample"],
                     "diagnostics_ok": f.ok}
    return out


def write_big_parquet(path: Path, rows: int, clusters: int, k: int, seed: int = 3,
                      batch: int = 2_000_000) -> None:
    """rows x (group, y, x1..xk) in row groups, written batch by batch (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench_univariate import grid_sizes

    rng = np.random.default_rng(seed)
    sizes = grid_sizes(rows, clusters, seed)
    g = np.repeat(np.arange(clusters), sizes)
    effect = rng.normal(0, 3, clusters)
    level = rng.normal(size=(clusters, k))
    writer = None
    for a in range(0, rows, batch):
        gb = g[a:a + batch]
        cols = {"g": pa.array(np.char.add("s", gb.astype(str)))}
        y = 50 + effect[gb] + rng.normal(0, 9, gb.size)
        for j in range(k):
            x = rng.normal(size=gb.size) if j < 2 else level[gb, j]
            cols[f"x{j + 1}"] = pa.array(x)
            y = y + (1.0 + 0.3 * j) * x
        cols["y"] = pa.array(y)
        table = pa.table(cols)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


# ----------------------------------------------------------------------------- the table
CASES = [  # (key, what, goal)
    ("regression_31k", "regression y ~ x1 + (1|g), 31,022 rows / 2,410 clusters, CSV",
     "<= 6 s, ESS >= 1000"),
    ("nested_31k", "nested y ~ 1 + (1|area/school), 31,000 rows, 100 areas / 2,400 schools",
     "<= 8 s, ESS >= 1000"),
    ("regression_1e7", "regression, 5 covariates, 10^7 rows / 10^5 clusters, Parquet (chunked)",
     "<= 30 s, <= 2 GB"),
    ("crossed_noncentred", "crossed y ~ 1 + (1|s) + (1|d), 73,421 rows, 2,972 x 1,128 levels",
     "<= 300 s, ESS >= 400, gate passed"),
    ("crossed_centred", "the same, centred form", "(comparison)"),
]


def markdown(results: dict) -> str:
    """The results as the README's table."""
    meta = results["meta"]
    lines = [f"Measured {meta['started']} (load average at start "
             f"{', '.join(f'{x:.1f}' for x in meta['load'])}); `varcomp fit` as a new process, "
             f"report written, warm caches, median of {meta['repeats']} runs after one untimed "
             "run (the 10^7 case: of fewer; crossed: the one run).", "",
             "| case | goal | form | wall s | first run s | peak RSS MB | sampling s | "
             "min ESS_bulk | gate |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for key, what, goal in CASES:
        what = what.replace("|", "\\|")  # a formula's bar inside a table cell
        r = results.get(key)
        if r is None:
            continue
        if not r.get("ok"):
            lines.append(f"| {what} | {goal} | failed: {r.get('stderr', '')[:80]} |||||||")
            continue
        gate = "passed" if r["diagnostics_ok"] else "FAILED"
        lines.append(f"| {what} | {goal} | {r['form']} | {r['wall_s']:.1f} | "
                     f"{r['first_s']:.1f} | {r['rss_mb']:.0f} | {r['sample_s']:.1f} | "
                     f"{r['min_ess_bulk']:,.0f} | {gate} |")
    e = results.get("regression_31k_ess")
    if e:
        lines += ["", "Sampling efficiency on the 31k regression set, one process, "
                  "4 chains x (1000 + 1000): " + "; ".join(
                      f"{k} {v['min_ess_bulk']:,.0f} ESS in {v['sample_s']:.2f} s "
                      f"({v['ess_per_s']:,.0f}/s)" for k, v in e.items() if k != "ratio")
                  + f"; ratio {e['ratio']:.0f}x (goal >= 200x)."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the run
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 10^7-row and crossed cases")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results_mixed.json"))
    args = ap.parse_args()
    from bench_univariate import exam_sizes

    results: dict = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M"),
                              "load": os.getloadavg(), "repeats": args.repeats}}
    with tempfile.TemporaryDirectory(prefix="varcomp-bench-") as tmpdir:
        tmp = Path(tmpdir)
        reg = regression_frame(exam_sizes(), k=1)
        reg.to_csv(tmp / "exam_x.csv", index=False)
        formula = "y ~ x1 + (1|g)"
        results["regression_31k"] = end_to_end(
            [str(tmp / "exam_x.csv"), "--formula", formula], tmp / "o1", args.repeats)
        print("regression 31k", results["regression_31k"], flush=True)
        from varcomp.models.design import from_formula

        data = from_formula(reg, formula)
        results["regression_31k_ess"] = ess_per_second(data, ["sufficient", "centred"])
        r = results["regression_31k_ess"]
        results["regression_31k_ess"]["ratio"] = (r["sufficient"]["ess_per_s"]
                                                  / r["centred"]["ess_per_s"])
        print("ESS/s", r, flush=True)
        nested_frame().to_csv(tmp / "nested.csv", index=False)
        results["nested_31k"] = end_to_end(
            [str(tmp / "nested.csv"), "--formula", "y ~ 1 + (1|area/school)"], tmp / "o2",
            args.repeats)
        print("nested", results["nested_31k"], flush=True)
        if not args.quick:
            write_big_parquet(tmp / "big.parquet", 10_000_000, 100_000, 5)
            results["regression_1e7"] = end_to_end(
                [str(tmp / "big.parquet"), "--formula",
                 "y ~ x1 + x2 + x3 + x4 + x5 + (1|g)"], tmp / "o3", max(1, args.repeats - 2))
            print("1e7", results["regression_1e7"], flush=True)
            crossed_frame().to_csv(tmp / "crossed.csv", index=False)
            for form in ("noncentred", "centred"):
                results[f"crossed_{form}"] = end_to_end(
                    [str(tmp / "crossed.csv"), "--formula", "y ~ 1 + (1|s) + (1|d)",
                     "--model", form], tmp / f"o4{form}", 0)
                print("crossed", form, results[f"crossed_{form}"], flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    Path(args.json).with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.json} and its .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
