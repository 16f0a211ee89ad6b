"""The ``varcomp`` command line: datasets, describe, fit, check, figures.

Any bad input ends with one line on stderr naming the problem and the fix, exit code 2, and
nothing written. ``fit --strict`` exits 3 when a fit fails the diagnostics gate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from varcomp.analyses import process
from varcomp.models.errors import DataError

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_UNTRUSTED = 3


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


SEED_MAX = 2**32 - 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SEED_MAX}, got {value}")
    return value


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got '{text}'") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    from varcomp.models.forms import FORM_NAMES

    p = _Parser(prog="varcomp", description="Bayesian variance components with PyMC and "
                "ArviZ: one-way and multivariate random effects, and formulas with covariates, "
                "nested and crossed factors (y ~ x + (1|a/b)).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("datasets", help="list the shipped datasets")

    d = sub.add_parser("describe", help="cluster sizes, one-way ANOVA and moment estimates")
    d.add_argument("data", help="CSV/Parquet path or shipped dataset name")
    d.add_argument("--group", help="grouping column")
    d.add_argument("--response", action="append", help="response column (repeat for several)")

    f = sub.add_parser("fit", help="fit the model(s), write summary.json, report.html, *.nc")
    f.add_argument("data", help="CSV/Parquet path or shipped dataset name")
    f.add_argument("--group", help="grouping column")
    f.add_argument("--response", action="append", help="response column (repeat for several)")
    f.add_argument("--formula", help="a mixed-model formula, e.g. 'y ~ x + C(z) + (1|g)' or "
                   "'y ~ x + (1|a/b)' (instead of --group/--response)")
    f.add_argument("--family", choices=["gaussian", "bernoulli", "binomial", "poisson"],
                   help="the response distribution (default gaussian; p(successes, trials) in "
                        "the formula implies binomial)")
    f.add_argument("--link", choices=["logit", "probit", "log"],
                   help="link of a non-Gaussian response (default logit; log for poisson)")
    f.add_argument("--event", metavar="LEVEL",
                   help="a two-level text response's event (default: the level sorting last)")
    f.add_argument("--model", default=None, choices=[*FORM_NAMES, "all"],
                   help="parameterisation (default: the family's, sufficient) or all")
    f.add_argument("--draws", type=_positive_int, default=1000)
    f.add_argument("--tune", type=_positive_int, default=1000)
    f.add_argument("--chains", type=_positive_int, default=4)
    f.add_argument("--seed", type=_seed, default=0)
    f.add_argument("--sampler", default="nutpie", choices=["nutpie", "pymc"])
    f.add_argument("--target-accept", type=_unit_interval, default=0.8)
    f.add_argument("--prior", action="append", metavar="NAME=FAMILY:SCALE",
                   help="override a prior, e.g. tau=halfnormal:10 or mu=normal:0:100")
    f.add_argument("--variance-prior", choices=["sd", "partition"], default="sd",
                   help="priors on the sds (default) or on the variance partition: the total "
                   "sd and the ICC (Beta), see docs/guide/models.md")
    f.add_argument("--out", help="output directory (default reports/<data name>)")
    f.add_argument("--strict", action="store_true",
                   help="exit 3 if any fit fails the diagnostics gate")
    f.add_argument("--engine", choices=["memory", "dask"], default="memory",
                   help="where the rows are reduced to statistics: in this process (files of "
                   "64 MB or more in chunks), or on Dask (DATA may be a glob of Parquet files, "
                   "e.g. 'data/part-*.parquet'; sufficient form only)")
    f.add_argument("--scheduler", help="a running Dask scheduler's address (tcp://host:8786); "
                   "default: a local cluster, one worker per core")

    m = sub.add_parser("compare", help="rank models by leave-one-cluster-out elpd (PSIS-LOO, "
                       "exact refits where Pareto k > 0.7), the pooled model included")
    m.add_argument("data", help="CSV/Parquet path or shipped dataset name")
    m.add_argument("--formula", action="append", required=True,
                   help="a model (repeat: --formula A --formula B ...)")
    m.add_argument("--draws", type=_positive_int, default=1000)
    m.add_argument("--tune", type=_positive_int, default=1000)
    m.add_argument("--chains", type=_positive_int, default=4)
    m.add_argument("--seed", type=_seed, default=0)
    m.add_argument("--out", help="output folder (default reports/<data name>-compare)")

    c = sub.add_parser("check", help="show that every parameterisation gives one posterior")
    c.add_argument("--quick", action="store_true", help="fewer settings and draws (<= 5 min)")
    c.add_argument("--sims", type=_positive_int, help="SBC simulations per form")
    c.add_argument("--seed", type=_seed, default=0)
    c.add_argument("--out", help="write checks.json and plots here")

    s = sub.add_parser("simulate", help="simulate the notes' model or a one-way GLMM into a file")
    s.add_argument("--clusters", type=_positive_int, required=True, help="number of clusters L")
    s.add_argument("--size", type=_positive_int, action="append", required=True,
                   help="cluster size (once for all, or once per cluster)")
    s.add_argument("--mu", default="0", help="grand mean (comma-separated for p > 1)")
    s.add_argument("--tau", type=float, help="between-cluster sd (univariate)")
    s.add_argument("--sigma", type=float, help="within-cluster sd (univariate)")
    s.add_argument("--family", choices=["bernoulli", "binomial", "poisson"],
                   help="a one-way GLMM (logit / log link) with --mu, --tau on the link scale")
    s.add_argument("--trials", type=float, help="trials per row (--family binomial)")
    s.add_argument("--V", help="between-cluster covariance, rows split by ';', e.g. '4,3;3,4'")
    s.add_argument("--Sigma", help="within-cluster covariance, e.g. '0.25,-0.24;-0.24,0.36'")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", required=True,
                   help="file to write: .csv, .csv.gz or .parquet (the suffix picks the format)")

    r = sub.add_parser("reliability", help="rater ICCs (Shrout-Fleiss), G and D studies")
    r.add_argument("data", help="CSV/Parquet path or shipped dataset name, one row per rating")
    for col in ("target", "rater", "response"):
        r.add_argument(f"--{col}", required=True, help=f"the {col} column")
    r.add_argument("--occasion", help="an occasion column (a third facet)")
    r.add_argument("--d-study", default="1,2,4,8", help="numbers of raters n' for the D study")
    r.add_argument("--goal", type=_unit_interval, default=0.8, help="a reliability to reach")
    r.add_argument("--goal-prob", type=_unit_interval, default=0.8,
                   help="the posterior probability with which --goal must be reached")
    for name, default in (("--draws", 1000), ("--tune", 1000), ("--chains", 4)):
        r.add_argument(name, type=_positive_int, default=default)
    r.add_argument("--seed", type=_seed, default=0)
    r.add_argument("--out", help="output folder (default reports/<data name>-reliability)")

    n = sub.add_parser("plan", help="clusters needed for a cluster trial, with assurance")
    src = n.add_mutually_exclusive_group(required=True)
    src.add_argument("--icc", type=float, help="a fixed ICC (the textbook formula)")
    src.add_argument("--icc-prior", metavar="beta:A:B", help="a Beta prior for the ICC")
    src.add_argument("--from", dest="source", metavar="FOLDER", help="a one-way fit's output")
    n.add_argument("--size", type=float, required=True, help="mean cluster size m")
    n.add_argument("--cv", type=float, default=0.0, help="coefficient of variation of sizes")
    goal = n.add_mutually_exclusive_group(required=True)
    goal.add_argument("--effect", type=float, help="standardised difference d of two arms")
    goal.add_argument("--se", type=float, help="standard error of a mean to reach")
    n.add_argument("--sd", type=float, default=1.0, help="the outcome's sd (with --se)")
    n.add_argument("--alpha", type=_unit_interval, default=0.05)
    n.add_argument("--power", type=_unit_interval, default=0.8)
    n.add_argument("--assurance", type=_unit_interval, default=0.8,
                   help="the assurance the recommended number of clusters reaches")
    n.add_argument("--seed", type=_seed, default=0)
    n.add_argument("--out", help="write plan.csv, plan.json and plan.html here")

    g = sub.add_parser("figures", help="the notes' three simulations as PNG figures")
    g.add_argument("--out", default="reports/figures")
    g.add_argument("--seed", type=_seed, default=23984)
    return p


# Files at least this large are reduced to per-group statistics while being read (pyarrow, in
# chunks: models.chunked) when the fit needs nothing else, i.e. --model sufficient with one
# --response and an explicit --group: the rows never sit in memory (10^7 rows: 0.6 GB, not 3 GB).
CHUNKED_BYTES = 64 << 20


def _load(args, *, stats_only: bool = False):
    from varcomp.models import load
    from varcomp.models.responses import not_gaussian

    formula = getattr(args, "formula", None)
    if formula and (args.group or args.response):
        raise DataError("give either --formula or --group/--response, not both")
    glm = {k: getattr(args, k, None) for k in ("family", "link", "event")}
    if not_gaussian(formula, **glm):  # in memory, by the formula (or response ~ 1 + (1|group))
        if getattr(args, "engine", "memory") == "dask":
            raise DataError("--engine dask reads Gaussian responses only: fit in memory")
        one = args.response[0] if args.response and len(args.response) == 1 else args.response
        return load(args.data, formula=formula, group=args.group, response=one, **glm)
    if getattr(args, "engine", "memory") == "dask":
        return _load_dask(args, stats_only=stats_only)
    if getattr(args, "scheduler", None):
        raise DataError("--scheduler names a Dask scheduler, which only --engine dask uses: add "
                        "--engine dask, or drop --scheduler")
    if formula:
        path = Path(args.data)
        if stats_only and path.is_file() and path.stat().st_size >= CHUNKED_BYTES:
            from varcomp.models.formula_stats import read_formula_stats

            return read_formula_stats(path, formula)
        return load(args.data, formula=formula)
    response = args.response
    if response and len(response) == 1:
        response = response[0]
    path = Path(args.data)
    if (stats_only and args.group and isinstance(response, str) and path.is_file()
            and path.stat().st_size >= CHUNKED_BYTES):
        from varcomp.models.chunked import read_stats

        return read_stats(path, group=args.group, response=response)
    return load(args.data, group=args.group, response=response)


def _load_dask(args, *, stats_only: bool):
    """The data's statistics computed on Dask: a local cluster, or ``--scheduler``'s."""
    import glob

    from varcomp.analyses.fit import is_terminal
    from varcomp.models.dask_clients import client_for, local_client
    from varcomp.models.distributed import formula_stats_dask, group_stats_dask, read_parquet_dask

    if not stats_only:
        raise DataError("--engine dask reduces the rows to statistics: only the sufficient "
                        "form fits them (drop --model, or use --engine memory)")
    formula = getattr(args, "formula", None)
    response = args.response[0] if args.response and len(args.response) == 1 else None
    if not formula and not (args.group and response):
        raise DataError("--engine dask needs --formula, or --group and one --response")
    files = sorted(glob.glob(args.data)) if any(ch in args.data for ch in "*?[") else \
        [args.data]
    if not files or not all(Path(f).is_file() for f in files):
        raise DataError(f"no data files match {args.data}")
    if not all(f.lower().endswith((".parquet", ".pq")) for f in files):
        raise DataError("--engine dask reads Parquet files (e.g. 'data/part-*.parquet'): "
                        "convert CSV with `varcomp simulate`-style tools or pandas first")
    if formula:
        from varcomp.models.design import group_variables, parse

        columns, labels = list(parse(formula).variables), group_variables(formula)
    else:
        columns, labels = [args.group, response], [args.group]
    ddf = read_parquet_dask(files, columns, labels=labels)  # footers only: refused before a cluster
    client = client_for(args.scheduler) if args.scheduler else local_client()
    with client:
        if formula:
            return formula_stats_dask(ddf, formula, source=args.data, progress=is_terminal())
        return group_stats_dask(ddf, group=args.group, response=response, source=args.data,
                                progress=is_terminal())


def cmd_datasets(args) -> int:
    """List the shipped datasets."""
    from varcomp.models.data import DATASETS

    for ds in DATASETS.values():
        resp = ",".join(ds.response)
        print(f"{ds.name:<10} group={ds.group:<7} response={resp:<15} {ds.description}")
    return 0


def cmd_describe(args) -> int:
    """Print N, L, cluster sizes, the one-way ANOVA and moment estimates."""
    from varcomp.analyses.describe import describe, text

    print(text(describe(_load(args))))
    return 0


def _out_name(name: str) -> str:
    """A default output folder name (a glob's wildcards replaced)."""
    return "".join(ch if ch not in "*?[]" else "_" for ch in name) or "data"


def _inputs(spec: str) -> list[Path]:
    """The files a data argument reads (a path, a glob, or a shipped dataset's CSV)."""
    import glob

    from varcomp.models.data import DATASETS, data_dir

    if any(ch in spec for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(spec))]
    path = Path(spec)
    if path.exists():
        return [path]
    if spec.lower() in DATASETS:
        return [data_dir() / DATASETS[spec.lower()].file]
    return []


def _headline(posterior, var: str) -> str:
    """``icc mean 0.61`` or ``vpc mean batch 0.52, residual 0.48``: the posterior mean share."""
    da = posterior[var].mean(("chain", "draw"))
    if da.ndim == 0:
        return f"{var} mean {float(da):.3f}"
    dim = da.dims[0]
    labels = [str(c) for c in da[dim].values]
    if da.ndim == 1 and len(labels) > 1 and dim != "outcome":
        pairs = zip(labels, da.values, strict=True)
        return f"{var} mean " + ", ".join(f"{c} {float(v):.3f}" for c, v in pairs)
    return f"{var} mean " + ", ".join(f"{float(v):.3f}" for v in da.values.ravel())


def cmd_fit(args) -> int:
    """Fit, write the outputs, print where they are."""
    from varcomp.analyses.fit import check_memory, fit, is_terminal, write_outputs
    from varcomp.analyses.outputs import checkpoint, resolve_out, stop_on_signals
    from varcomp.models.errors import DataError
    from varcomp.models.forms import family_of

    t_start = time.perf_counter()
    inputs = _inputs(args.data)
    if args.out:  # a bad --out is refused before the data are read
        resolve_out(args.out, inputs=inputs)
    data = _load(args, stats_only=args.model in (None, "sufficient"))
    out = Path(args.out) if args.out else Path("reports") / _out_name(data.name)
    resolve_out(out, inputs=inputs)
    family = family_of(data)
    if args.variance_prior == "partition":
        if family.partition_priors is None:
            raise DataError(f"--variance-prior partition is available for the one-way model; "
                            f"the {family.name} family uses sd priors")
        priors = family.partition_priors(data, args.prior)
    else:
        priors = family.parse_priors(data, args.prior) if args.prior else None
    names = list(family.forms) if args.model == "all" else [args.model or family.default(data)]
    check_memory(family, data, names, args.draws, args.chains)
    data.require_identifiable()
    for w in data.warnings:
        print(f"varcomp: warning: {w}", file=sys.stderr)
    if args.model == "all":
        for name, why in family.skipped(data).items():
            print(f"varcomp: warning: --model all skips {name}: {why}", file=sys.stderr)
    process.settle_heap()
    with stop_on_signals():
        result = fit(data, args.model, draws=args.draws, tune=args.tune, chains=args.chains,
                     seed=args.seed, sampler=args.sampler, priors=priors,
                     target_accept=args.target_accept, progress=is_terminal())
        checkpoint()
        out = write_outputs(result, out, inputs=inputs)
    for name, f in result.fits.items():
        dg = f.diagnostics
        verdict = "ok" if dg["ok"] else "NOT TRUSTED: " + "; ".join(dg["problems"])
        share = _headline(f.idata.posterior, family.headline)
        print(f"{name:<11} {share}   {f.seconds['total']:.1f} s   diagnostics {verdict}")
    if result.comparison is not None:
        print(f"comparison: {'forms agree' if result.comparison.passed else 'see report'}")
    print(f"report: {out / 'report.html'}")
    print(f"summary: {out / 'summary.json'}   ({time.perf_counter() - t_start:.1f} s)")
    if args.strict and not all(f.ok for f in result.fits.values()):
        print("varcomp: error: a fit failed the diagnostics gate (--strict)", file=sys.stderr)
        return EXIT_UNTRUSTED
    return 0


def cmd_compare(args) -> int:
    """Fit the formulas and the pooled model; write compare.json and compare.html."""
    from varcomp.analyses.compare import compare, write_compare
    from varcomp.analyses.outputs import checkpoint, resolve_out, stop_on_signals

    inputs = _inputs(args.data)
    out = Path(args.out) if args.out else Path("reports") / f"{Path(args.data).stem}-compare"
    resolve_out(out, inputs=inputs)
    process.settle_heap()
    with stop_on_signals():
        result = compare(args.data, args.formula, draws=args.draws, tune=args.tune,
                         chains=args.chains, seed=args.seed)
        checkpoint()
        out = write_compare(result, out)
    table = result.as_dict()
    print(f"{'model':<8} {'elpd':>10} {'se':>7} {'diff':>9} {'dse':>7} {'k max':>6}  formula")
    for m in table["models"]:
        exact = ""
        if m["n_high_k"]:
            shown = ", ".join(m["exact_clusters"][:10]) + (", ..." if len(
                m["exact_clusters"]) > 10 else "")
            exact = f"  (k > {table['k_threshold']}: {m['n_high_k']}, refitted exactly: " \
                    f"{len(m['exact_clusters'])}{': ' + shown if shown else ''})"
        k = m["pareto_k_max"]
        print(f"{m['name']:<8} {m['elpd']:>10.2f} {m['se']:>7.2f} {m['elpd_diff']:>9.2f} "
              f"{m['dse']:>7.2f} {f'{k:.2f}' if k is not None else '-':>6}  "
              f"{m['formula']}{exact}")
        if m["unreliable_clusters"]:
            print(f"varcomp: warning: {m['name']}: {len(m['unreliable_clusters'])} cluster(s) "
                  f"with Pareto k > {table['k_threshold']} were not refitted (at most "
                  f"{table['max_exact']} per model); their PSIS estimates are unreliable "
                  f"(compare.json: unreliable_clusters)", file=sys.stderr)
    print(f"compare: {out / 'compare.html'}   {out / 'compare.json'}")
    return 0


def cmd_check(args) -> int:
    """Run the checks module on simulated data."""
    from varcomp.analyses.checks_run import run_checks

    out = Path(args.out) if args.out else None
    if out is not None:
        from varcomp.analyses.outputs import resolve_out

        resolve_out(out)
    process.settle_heap()
    return run_checks(quick=args.quick, sims=args.sims, out=out, seed=args.seed)


def cmd_simulate(args) -> int:
    """Simulate a model into a table file (:mod:`analyses.simulate_cmd`)."""
    from varcomp.analyses.simulate_cmd import run_simulate

    return run_simulate(args)


def cmd_figures(args) -> int:
    """Write the notes' figures."""
    from varcomp.analyses.figures import make_figures
    from varcomp.analyses.outputs import resolve_out, write_atomically

    resolve_out(args.out)
    process.settle_heap(arviz=False)  # the notes' figures need numpy and matplotlib only
    names: list[str] = []

    def writer(tmp: Path) -> None:
        names.extend(p.name for p in make_figures(tmp, seed=args.seed))

    out = write_atomically(Path(args.out), writer)
    for name in names:
        print(out / name)
    return 0


def cmd_reliability(args) -> int:
    """ICCs, G and D studies (analyses.reliability)."""
    from varcomp.analyses.reliability import run_cli

    return run_cli(args, inputs=_inputs(args.data), name=_out_name(Path(args.data).stem))


def cmd_plan(args) -> int:
    """Clusters needed and assurance (analyses.plan)."""
    from varcomp.analyses.plan import run_cli

    return run_cli(args)


COMMANDS = {"datasets": cmd_datasets, "describe": cmd_describe, "fit": cmd_fit,
            "compare": cmd_compare, "check": cmd_check, "simulate": cmd_simulate,
            "figures": cmd_figures, "reliability": cmd_reliability, "plan": cmd_plan}


def _log_internal_error(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a log file; return its path."""
    import tempfile
    import traceback
    from datetime import datetime

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    text = "".join(traceback.format_exception(exc))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (Path(base) / "varcomp" / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"varcomp-error-{stamp}-{os.getpid()}.log"
            path.write_text(f"varcomp {' '.join(sys.argv[1:])}\n{text}", encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def main(argv: list[str] | None = None, *, whole_process: bool = False) -> int:
    """Entry point of the ``varcomp`` console script.

    ``whole_process``: this interpreter exists for this one command (:func:`console`), so
    process-wide settings may be made (:mod:`analyses.process`).

    Exit codes: 0 done; 2 bad input (one line on stderr, nothing written); 3 ``fit --strict``
    and a fit failed the diagnostics gate; 1 an error that is our bug (one line pointing to a
    log file with the traceback); 130 interrupted.
    """
    from varcomp.models.errors import DataError

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # numpy's overflow chatter
    warnings.filterwarnings("ignore", category=UserWarning, module="arviz")
    # pytensor's advice to install BLAS through conda: nothing a user of varcomp can act on
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS",
                            category=UserWarning)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    try:
        args = build_parser().parse_args(argv)  # inside: Ctrl-C while importing is handled too
        if whole_process:  # parsing imported nothing heavy: now the process-wide settings
            process.settle_for(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        from varcomp.analyses.outputs import COMMITTED

        if COMMITTED:
            print(f"varcomp: interrupted after the output was complete: {COMMITTED[-1]}",
                  file=sys.stderr)
        else:
            print("varcomp: interrupted; no output was written (earlier output untouched)",
                  file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `varcomp describe x | head -1`: the reader stopped
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (DataError, OSError) as exc:  # bad input, or a file that cannot be read/written
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"varcomp: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # our bug: one line, the traceback in a log file
        log = _log_internal_error(exc)
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        where = f"; the traceback is in {log}" if log else ""
        print(f"varcomp: internal error ({type(exc).__name__}: {msg}){where}; please report it",
              file=sys.stderr)
        return EXIT_BUG


def console() -> None:
    """The ``varcomp`` console script: :func:`main`, then exit without tearing down Python.

    Measured: after a Dyestuff fit, the interpreter's own finalisation (freeing the modules of
    numba, ArviZ, matplotlib, ...) took 0.9 s of a 4.7 s run; nothing varcomp writes is
    pending by then (every output file is closed and renamed into place, a Dask cluster is
    closed by its ``with``), so the process flushes its streams and ends at once.
    """
    code = main(whole_process=True)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader is gone; nothing left to say
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
