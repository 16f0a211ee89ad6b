"""``varcomp simulate``: the notes' models and one-way GLMMs, written to a table file.

The univariate and multivariate models (:mod:`models.simulate`, :mod:`models.simulate_mv`) and
the one-way GLMMs (:mod:`models.simulate_glmm`) go to .csv, .csv.gz or .parquet.
"""

from __future__ import annotations

from pathlib import Path

from varcomp.models.errors import DataError

__all__ = ["run_simulate"]


def _glmm(args, mu: list[float]):
    """The one-way GLMM of ``--family``: --mu and --tau on the link scale, --trials."""
    from varcomp.models.simulate_glmm import simulate_glmm

    if args.tau is None:
        raise DataError(f"the {args.family} simulator needs --tau (the between-cluster sd on "
                        f"the link scale)")
    for flag in ("sigma", "V", "Sigma"):
        if getattr(args, flag) is not None:
            raise DataError(f"the {args.family} simulator takes no --{flag} (a GLMM has no "
                            f"residual sd; --V/--Sigma are for the multivariate model)")
    if len(mu) != 1:
        raise DataError(f"the {args.family} simulator takes one --mu, got {len(mu)}")
    return simulate_glmm(args.family, args.clusters, args.size[0] if len(args.size) == 1
                         else args.size, mu=mu[0], tau=args.tau, trials=args.trials,
                         rng=args.seed)


def _matrix(text: str, name: str):
    import numpy as np

    try:
        return np.array([[float(x) for x in row.split(",")] for row in text.split(";")])
    except ValueError:
        raise DataError(f"--{name} must be numbers, rows separated by ';' and entries by ',' "
                         f"(e.g. '4,3;3,4'), got '{text}'") from None


def run_simulate(args) -> int:
    """Simulate the univariate, multivariate or GLMM model into a file; say how to fit it.

    The file (.csv, .csv.gz or .parquet) is written atomically.
    """
    import numpy as np

    from varcomp.analyses.outputs import resolve_out_file, write_file_atomically
    from varcomp.models.data import TABLE_SUFFIXES, memory_budget, write_table

    resolve_out_file(args.out, suffixes=TABLE_SUFFIXES)
    try:
        mu = [float(x) for x in args.mu.split(",")]
    except ValueError:
        raise DataError(f"--mu must be numbers separated by ',', got '{args.mu}'") from None
    if not all(np.isfinite(mu)):
        raise DataError(f"--mu must be finite numbers, got '{args.mu}'")
    sizes = args.size[0] if len(args.size) == 1 else args.size
    n_rows = args.clusters * sizes if len(args.size) == 1 else sum(args.size)
    width = len(mu) if args.V is not None else 1
    need = int(n_rows) * (8 * width + 16) * 3  # values, labels and the writer's copies
    if need > memory_budget():
        raise DataError(f"{n_rows:,} rows would need about {need / 2**30:.1f} GiB in memory, "
                         f"more than the {memory_budget() / 2**30:.1f} GiB budget (half of this "
                         f"machine's memory): simulate fewer rows, or several files")
    if args.family is not None:
        sim = _glmm(args, mu)
    elif args.trials is not None:
        raise DataError("--trials needs --family binomial")
    elif args.V is not None or args.Sigma is not None:
        from varcomp.models.simulate_mv import simulate_multivariate

        if args.V is None or args.Sigma is None:
            raise DataError("the multivariate simulator needs both --V and --Sigma")
        sim = simulate_multivariate(args.clusters, sizes, np.array(mu), _matrix(args.V, "V"),
                                    _matrix(args.Sigma, "Sigma"), rng=args.seed)
    else:
        from varcomp.models.simulate import simulate_univariate

        if args.tau is None or args.sigma is None:
            raise DataError("the univariate simulator needs --tau and --sigma "
                             "(or --V and --Sigma for the multivariate model)")
        sim = simulate_univariate(args.clusters, sizes, mu=mu[0], tau=args.tau,
                                  sigma=args.sigma, rng=args.seed)
    out = write_file_atomically(Path(args.out), lambda tmp: write_table(sim.frame, tmp,
                                                                        like=args.out),
                                suffixes=TABLE_SUFFIXES)
    if sim.formula is not None:
        how = f"--formula '{sim.formula}' --family {sim.family}"
    else:
        how = "--group group " + " ".join(f"--response {c}" for c in sim.frame.columns
                                          if c != "group")
    print(f"{out}: {len(sim.frame)} rows in {args.clusters} clusters (columns "
          f"{', '.join(map(str, sim.frame.columns))}); fit it with: varcomp fit {out} {how}")
    return 0
