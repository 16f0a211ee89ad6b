"""Issue 17, item 5: one-way statistics of 10^8 rows in 100 Parquet files, by four routes.

- ``dask``: what ``varcomp fit 'dir/part-*.parquet' --engine dask`` runs: ``local_client()`` (one
  single-threaded worker per core), ``read_parquet_dask``, ``group_stats_dask`` (one pass
  over the files; the distinct groups counted from the partials, then the merge).
- ``dask-1pass``: the same, the reduction only (``grouped_moments_dask`` given ``n_groups``).
- ``chunked``: ``models.chunked.read_stats`` (it takes one path) on each file in turn in one
  process, each file's statistics merged into a running total as they come.
- ``memory``: ``pd.read_parquet`` of the files, then ``ClusteredData.from_frame(...).stats``. Its
  peak is ~230 B per row (2.2 GB at 10^7): when that exceeds half of MemAvailable it reads only
  the first 10^7 rows' files, checked against the chunked reader on the same files.

Each run is its own subprocess (its VmHWM its own); the first run of each route is cold (files
evicted from the page cache by fsync + posix_fadvise DONTNEED), ``--repeats`` warm runs follow,
routes interleaved. Timed: first footer read to statistics in hand. Peak memory: VmHWM of each
Dask worker (``client.run``) and of the driver (client + scheduler). CPU s: the workers' process
CPU time, robust to other jobs, unlike wall time. The routes' per-cluster n, mean, M2 must agree
before a rate is published. The 10^10-row projection is arithmetic on the measured per-worker
rate and pairwise-merge time. Data: ``bench_univariate.write_parquet`` per file (seed = file
number; int64 ``school``, float64 ``score``; one row group per file; a random cluster per row,
so clusters span files) in a temporary folder under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
from bench_univariate import write_parquet  # noqa: E402

ROUTES = ("dask", "dask-1pass", "chunked", "memory")
GROUP, RESPONSE = "school", "score"
SPLIT_EVERY = 8  # models.distributed.DEFAULT_SPLIT_EVERY
MEMORY_BYTES_PER_ROW = 230  # the memory route's peak, measured with --quick (2.2 GB / 10^7 rows)


def _status(field: str) -> float:
    """A /proc/self/status memory field in MB (VmHWM: peak RSS; VmRSS: now)."""
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith(field))


def chunked_stats(files: list[str]):
    """read_stats of each file into a running total: (total, merge s, first two partials)."""
    from varcomp.models.chunked import read_stats
    from varcomp.models.moments import GroupedMoments

    total, merge_s, pair = None, 0.0, []
    for f in files:
        sd = read_stats(f, group=GROUP, response=RESPONSE)
        part = GroupedMoments(keys=sd.groups, n=sd.stats.n[:, 0], mean=sd.stats.mean,
                              m2=sd.stats.ss[:, :, None], columns=(RESPONSE,))
        pair = pair if len(pair) == 2 else [*pair, part]
        t = time.perf_counter()
        total = part if total is None else GroupedMoments.merge(total, part)
        merge_s += time.perf_counter() - t
    return total, merge_s, pair


def save(out: str, keys, n, mean, m2) -> None:
    np.savez(out, keys=np.asarray(keys, dtype=str), n=n, mean=mean, m2=m2)


def dask_case(route: str, files: list[str], res: dict):
    """The Dask routes on a fresh local_client(); fills ``res``, returns the statistics."""
    from dask.utils import key_split
    from distributed import get_task_stream

    import varcomp.models.distributed as md
    from varcomp.models.dask_clients import local_client

    t0 = time.perf_counter()
    with local_client() as client:
        res["cluster_start_s"] = round(time.perf_counter() - t0, 2)
        res["workers"] = len(client.scheduler_info()["workers"])
        res["worker_start_mb"] = [round(x) for x in client.run(_status, "VmRSS").values()]
        cpu0, dcpu0, t0 = client.run(time.process_time), time.process_time(), time.perf_counter()
        with get_task_stream(client) as stream:
            ddf = md.read_parquet_dask(files, [GROUP, RESPONSE])
            res["partitions"] = ddf.npartitions
            if route == "dask":
                sd = md.group_stats_dask(ddf, group=GROUP, response=RESPONSE, source="bench")
                stats = sd.groups, sd.stats.n[:, 0], sd.stats.mean[:, 0], sd.stats.ss[:, 0]
            else:
                gm = md.grouped_moments_dask(ddf, keys=GROUP, columns=RESPONSE,
                                             n_groups=int(os.environ["BENCH_CLUSTERS"]))
                stats = gm.keys, gm.n, gm.mean[:, 0], gm.m2[:, 0, 0]
        res["wall_s"], res["driver_cpu_s"] = time.perf_counter() - t0, time.process_time() - dcpu0
        res["cpu_s"] = sum(c - cpu0[w] for w, c in client.run(time.process_time).items())
        res["worker_peak_mb"] = sorted(client.run(_status, "VmHWM").values())
    busy: Counter = Counter()  # task compute seconds summed over workers, by task name
    for task, ss in ((t, ss) for t in stream.data for ss in t["startstops"]):
        busy[key_split(task["key"])] += (ss["stop"] - ss["start"]) * (ss["action"] == "compute")
    res["task_busy_s"] = {k: round(v, 2) for k, v in busy.most_common()}
    res["merge_task_s"] = busy["merge_all"] / max(1, res["partitions"] - 1)  # per pairwise merge
    return stats


def run_case(route: str, data: str, out: str) -> dict:
    """Compute the statistics of the files in ``data`` by ``route``; save them to ``out``."""
    files = sorted(glob.glob(os.path.join(data, "part-*.parquet")))
    if route == "memory":
        files = files[:int(os.environ.get("BENCH_MEMORY_FILES") or len(files))]
    res: dict = {"route": route, "files": len(files), "workers": 1}
    if route.startswith("dask"):
        keys, n, mean, m2 = dask_case(route, files, res)
    elif route == "chunked":
        from varcomp.models.moments import GroupedMoments

        cpu0, t0 = time.process_time(), time.perf_counter()
        gm, merge_s, pair = chunked_stats(files)
        res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
        res["merge_s"] = round(merge_s, 3)
        if len(pair) == 2:  # the projection's merge unit: one merge of two files' partials
            ts = timeit.repeat(lambda: GroupedMoments.merge(*pair), number=1, repeat=5)
            res["pair_merge_s"], res["partial_clusters"] = float(np.median(ts)), pair[0].n_groups
        keys, n, mean, m2 = gm.keys, gm.n, gm.mean[:, 0], gm.m2[:, 0, 0]
    else:  # memory
        import pandas as pd

        from varcomp.models.data import ClusteredData

        cpu0, t0 = time.process_time(), time.perf_counter()
        df = pd.read_parquet(files, columns=[GROUP, RESPONSE])
        res["read_s"] = round(time.perf_counter() - t0, 2)
        cd = ClusteredData.from_frame(df, group=GROUP, response=RESPONSE, source=data)
        st = cd.stats
        res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
        res["stats_s"] = round(res["wall_s"] - res["read_s"], 2)
        keys, n, mean, m2 = cd.groups, st.n[:, 0], st.mean[:, 0], st.ss[:, 0]
        del df, cd, st
    res["driver_peak_mb"] = _status("VmHWM")
    res["worker_peak_mb"] = res.get("worker_peak_mb", [res["driver_peak_mb"]])
    res["rows"], res["clusters"] = int(np.sum(n)), len(keys)
    save(out, keys, n, mean, m2)
    if route == "memory":  # its reference: the chunked reader on the same files (untimed)
        gm = chunked_stats(files)[0]
        save(out.replace(".npz", "-ref.npz"), gm.keys, gm.n, gm.mean[:, 0], gm.m2[:, 0, 0])
    return res


def in_subprocess(args: list[str], timeout: float, env: dict) -> dict:
    """Run this script with ``args``; its JSON line, or {'error': ...}."""
    try:
        p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {"error": f"exit {p.returncode}: {p.stderr.strip()[-1500:]}"}
    return json.loads(lines[-1])


def drop_cache(files: list[str]) -> float | None:
    """Evict the files' pages from the page cache; the fraction still cached (fincore)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    try:
        p = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", *files],
                           capture_output=True, text=True, timeout=60, check=True)
        cached = np.array([ln.split() for ln in p.stdout.splitlines()], dtype=float).sum(axis=0)
        return float(cached[0] / cached[1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def compare(a: dict, b: dict) -> dict:
    """Max relative differences of per-cluster n, mean, M2 between two routes (keys aligned)."""
    if not np.array_equal(np.sort(a["keys"]), np.sort(b["keys"])):
        return {"same_keys": False}
    ia, ib = np.argsort(a["keys"]), np.argsort(b["keys"])
    return {"same_keys": True, **{k: float(np.max(np.abs(a[k][ia] - b[k][ib]) / np.maximum(
        np.abs(b[k][ib]).astype(float), 1e-300))) for k in ("n", "mean", "m2")}}


def projection(rate: float, t_pair: float, N: int, rows: float = 1e10,
               part_rows: float = 1e6) -> tuple[float, float]:
    """Arithmetic: (rows / (N x rate), merge s); merge tree level l: ceil(nodes_l / N) x 7 x
    t_pair, nodes_l = ceil(P / 8^l), P = rows / part_rows partials (no network transfer)."""
    merge, nodes = 0.0, math.ceil(rows / part_rows)
    while nodes > 1:
        nodes = math.ceil(nodes / SPLIT_EVERY)
        merge += math.ceil(nodes / N) * (SPLIT_EVERY - 1) * t_pair
    return rows / (N * rate), merge


def _f(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def write_report(res: dict, path: Path) -> None:
    """benchmarks/results_scale.md: the table, the check, details, the projection."""
    m, v = res["meta"], res["verification"]
    lines = [f"# Scale benchmark: {m['rows']:,} rows in {m['files']} Parquet files "
             f"({m['data_mb']:,.0f} MB), {m['clusters']:,} clusters", "",
             f"{m['date']}, {m['cpus']} cores, {m['mem_gb']:.0f} GB RAM shared with other jobs "
             f"(load average {m['load_start']} at start, {m['load_end']} at end); "
             f"`{m['command']}` took {m['total_s']:.0f} s. Cold = each route's first run, files "
             f"evicted from the page cache (fincore then: {_f(m['cached_after_drop'], 3)} of "
             f"their bytes cached); warm = median of the {m['repeats']} later runs (listed), "
             "files cached. Wall = first footer read to statistics in hand (no process start, "
             "imports, cluster start-up). rows/s = rows / warm wall. CPU s = workers' CPU time "
             "(summed), median of the warm runs. Peak RSS = VmHWM per worker process and of "
             "the driver (Dask: client + scheduler), max over runs.", "",
             "| route | rows | files | clusters | workers | cold wall s | warm wall s (runs) | "
             "rows/s | rows/s per worker | CPU s | rows per CPU-s | peak RSS per worker MB | "
             "driver peak MB |", "|---|" + "---:|" * 12]
    for r in res["routes"]:
        lines.append(f"| {r['route']} | failed: {r['error'][:200]} |" + " |" * 11
                     if r.get("error") else
                     f"| {r['route']} | {r['rows']:,} | {r['files']} | {r['clusters']:,} | "
                     f"{r['workers']} | {_f(r['cold_s'])} | {_f(r['warm_s'])} "
                     f"({', '.join(f'{x:.1f}' for x in r['warm_runs'])}) | "
                     f"{_f(r['rows_per_s'], 0)} | {_f(r['rows_per_s_worker'], 0)} | "
                     f"{_f(r['cpu_s'])} | {_f(r['rows_per_cpu_s'], 0)} | "
                     f"{', '.join(f'{x:,.0f}' for x in r['worker_peak_mb'])} | "
                     f"{_f(r['driver_peak_mb'], 0)} |")
    lines += ["", "Checked before any rate is published, max relative difference of per-cluster "
              "n, mean, M2 (clusters aligned by label): " + "; ".join(
                  f"{k} vs {d['against']}: " + (f"n {d['n']:.0e}, mean {d['mean']:.1e}, M2 "
                                                f"{d['m2']:.1e}" if d.get("same_keys") else
                                                "CLUSTER LABELS DIFFER")
                  for k, d in v["diffs"].items()) + f". Verdict: **{v['verdict']}**.", ""]
    for r in res["routes"]:
        extra = {k: r[k] for k in ("cluster_start_s", "partitions", "worker_start_mb",
                                   "driver_cpu_s", "read_s", "stats_s", "merge_s",
                                   "pair_merge_s", "merge_task_s", "task_busy_s") if k in r}
        if extra:
            lines.append(f"- {r['route']}: " + ", ".join(
                f"{k} {round(x, 3) if isinstance(x, float) else x}" for k, x in extra.items()))
    if p := res.get("projection"):
        lines += ["", "## 10^10 rows on N workers (arithmetic, not a measurement)", "", p["text"],
                  "", "| workers N | merge s | " + " | ".join(f"total, {k}" for k in p["rates"])
                  + " |", "|---:" * 5 + "|"]
        lines += [f"| {row['N']} | {row['merge_s']:.1f} | " + " | ".join(
            f"{t:,.0f} s ({t / 60:,.1f} min)" for t in row["total_s"]) + " |" for row in p["rows"]]
    path.write_text("\n".join(lines) + "\n")


def summarise(route: str, runs: list[dict], ok: bool) -> dict:
    """One table row: cold run, warm median, peaks over all runs; no rate unless ``ok``."""
    if not runs or any("error" in r for r in runs):
        return {"route": route, "error": next((r["error"] for r in runs if "error" in r), "?")}
    warm = [r["wall_s"] for r in runs[1:]] or [runs[0]["wall_s"]]
    s = {k: v for k, v in runs[-1].items() if k != "wall_s"}
    s["worker_peak_mb"] = [max(x) for x in zip(*(r["worker_peak_mb"] for r in runs), strict=True)]
    s["driver_peak_mb"] = max(r["driver_peak_mb"] for r in runs)
    for k in ("cpu_s", "driver_cpu_s", "merge_task_s", "pair_merge_s"):  # medians, as wall
        if k in s:
            s[k] = float(np.median([r[k] for r in runs[1:] or runs]))
    s.update(cold_s=runs[0]["wall_s"], warm_runs=warm, warm_s=float(np.median(warm)))
    s["rows_per_s"] = s["rows"] / s["warm_s"] if ok else None
    s["rows_per_s_worker"] = s["rows_per_s"] / s["workers"] if ok else None
    s["rows_per_cpu_s"] = s["rows"] / s["cpu_s"] if ok else None
    return s


def project(by: dict, meta: dict) -> dict:
    """The 10^10-row arithmetic from the measured per-worker rates and pairwise merge."""
    t_pair, pc = by["dask-1pass"]["merge_task_s"], by["chunked"]["partial_clusters"]
    rates = {"CLI path, wall rate": by["dask"]["rows_per_s_worker"],
             "one pass, wall rate": by["dask-1pass"]["rows_per_s_worker"],
             "one pass, CPU-time rate": by["dask-1pass"]["rows_per_cpu_s"]}
    rows = []
    for N in (2, 16, 64, 256):
        parts = [projection(r, t_pair, N) for r in rates.values()]
        rows.append({"N": N, "merge_s": parts[0][1], "total_s": [a + b for a, b in parts]})
    bpr = meta["data_mb"] * 2**20 / meta["rows"]
    busy = by["dask-1pass"]["task_busy_s"]
    share = busy.get("merge_all", 0.0) / sum(busy.values())
    lo, hi = min(rates.values()) * bpr / 1e6, max(rates.values()) * bpr / 1e6
    text = (
        "time(N) ~ 10^10 / (N x r) + merge(N), r a per-worker rate measured here: "
        + "; ".join(f"{k} {x:,.0f} rows/s" for k, x in rates.items()) + ". Wall rates carry "
        "this machine's contention (2 workers, the scheduler and other jobs on 2 cores); the "
        "CPU-time rate (rows / the workers' summed CPU seconds) leaves out time spent waiting "
        "for a core but keeps the workers' own overhead (communication, serialisation). "
        f"merge(N): 10^4 partials of 10^6 rows holding ~{pc:,} clusters each, merged in a tree "
        f"of fan-in {SPLIT_EVERY} ({math.ceil(math.log(1e4, SPLIT_EVERY))} levels); one "
        f"pairwise merge took {t_pair * 1e3:.0f} ms inside the Dask workers (merge_all tasks' "
        f"compute time / (partitions - 1); in a single process "
        f"{by['chunked']['pair_merge_s'] * 1e3:.0f} ms); level l costs ceil(nodes_l / N) x "
        f"{SPLIT_EVERY - 1} of them. Assumed: the per-worker rate holds on N machines and "
        f"storage feeds each worker {lo:.0f}-{hi:.0f} MB/s ({bpr:.1f} Parquet bytes per row). "
        f"Left out: moving partials between machines (~100 B per cluster, ~{pc * 1e-4:.0f} MB "
        f"each) and the scheduler's cost for 10^4+ tasks. r already includes merging the "
        f"measured run's partials ({share:.0%} of the workers' task time), so that share of the "
        "merge work is counted twice: the totals are upper estimates. Peak memory per worker "
        "does not grow with the rows (one partition and a few partials).")
    return {"text": text, "rates": rates, "rows": rows, "pair_merge_s": t_pair}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^7 rows in 10 files")
    for flag in ("--rows", "--files", "--memory-files"):  # the last: files the memory route reads
        ap.add_argument(flag, type=int)
    ap.add_argument("--clusters", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3, help="warm runs per route (after 1 cold)")
    ap.add_argument("--routes", default=",".join(ROUTES))
    ap.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # route data-dir out.npz
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case)))
        return 0
    rows = args.rows or (10_000_000 if args.quick else 100_000_000)
    n_files = args.files or (10 if args.quick else 100)
    routes = [r for r in args.routes.split(",") if r]
    avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    mem_files = args.memory_files or (n_files if rows * MEMORY_BYTES_PER_ROW < avail / 2
                                      else max(1, n_files * 10_000_000 // rows))
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", flush=True)

    meta = {"rows": rows, "files": n_files, "clusters": args.clusters, "repeats": args.repeats,
            "cpus": os.cpu_count(), "mem_gb": os.sysconf("SC_PAGE_SIZE")
            * os.sysconf("SC_PHYS_PAGES") / 2**30, "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": " ".join([".venv/bin/python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
            "load_start": ", ".join(f"{x:.2f}" for x in os.getloadavg()), "memory_files": mem_files}
    log(f"load average {meta['load_start']}; the memory route reads {mem_files} file(s)")
    tmp = Path(tempfile.mkdtemp(prefix="varcomp-scale-"))
    (data := tmp / "data").mkdir()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "BENCH_CLUSTERS": str(args.clusters),
           "BENCH_MEMORY_FILES": str(mem_files)}
    runs: dict[str, list[dict]] = {r: [] for r in routes}
    try:
        for i in range(n_files):
            write_parquet(data / f"part-{i:04d}.parquet", rows // n_files + (i < rows % n_files),
                          args.clusters, seed=i)
        files = sorted(map(str, data.glob("part-*.parquet")))
        meta["data_mb"] = sum(os.path.getsize(f) for f in files) / 2**20
        log(f"wrote {rows:,} rows in {n_files} files ({meta['data_mb']:,.0f} MB)")
        for rep in range(args.repeats + 1):  # routes interleaved: load drifts hit all alike
            for route in routes:
                if rep == 0:
                    meta["cached_after_drop"] = drop_cache(files)
                out = in_subprocess(["--case", route, str(data), str(tmp / f"{route}.npz")],
                                    3600, env)
                runs[route].append(out)
                log(f"{route:<10} {'cold' if rep == 0 else 'warm'}: " + (
                    out["error"][-300:] if "error" in out else
                    f"{out['wall_s']:.1f} s, CPU {out['cpu_s']:.1f} s, worker peaks "
                    f"{[round(x) for x in out['worker_peak_mb']]} MB, "
                    f"driver {out['driver_peak_mb']:.0f} MB"))
        stats = {p.stem: dict(np.load(p)) for p in tmp.glob("*.npz")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    diffs = {}  # every route against dask (memory on fewer files: against chunked on those)
    for r in routes:
        against = "memory-ref" if r == "memory" and mem_files < n_files else "dask"
        if r != against and r in stats and against in stats:
            diffs[r] = {"against": against, **compare(stats[r], stats[against])}
    ok = all(r in stats for r in routes) and len(diffs) == len(routes) - ("dask" in routes) \
        and all(d.get("same_keys") and d["n"] == 0 and max(d["mean"], d["m2"]) < 1e-9
                for d in diffs.values()) \
        and all(stats[r]["n"].sum() == rows for r in routes if r != "memory" or mem_files
                == n_files)
    log(f"verification: {diffs} -> {'OK' if ok else 'MISMATCH'}")
    summary = [summarise(r, runs[r], ok) for r in routes]
    res = {"meta": meta, "routes": summary, "runs": runs, "verification": {
        "diffs": diffs, "verdict": "OK" if ok else "MISMATCH: rates withheld"}}
    by = {s["route"]: s for s in summary if not s.get("error")}
    if ok and {"dask", "dask-1pass", "chunked"} <= set(by) and "pair_merge_s" in by["chunked"] \
            and by["dask-1pass"]["merge_task_s"] > 0:  # not after a shuffle: no merge tree
        res["projection"] = project(by, meta)
    meta["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["total_s"] = time.perf_counter() - t_start
    suffix = "_quick" * args.quick + f"_{args.clusters}c" * (args.clusters != 100_000)
    (HERE / f"results_scale{suffix}.json").write_text(json.dumps(res, indent=1, default=str))
    write_report(res, HERE / f"results_scale{suffix}.md")
    log(f"load average {meta['load_end']}; wrote {HERE / f'results_scale{suffix}.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
