"""The Python API at the top of the namespace: ``varcomp.fit``, ``compare``, ``describe``, ...

Each call takes data as a DataFrame, a pyarrow Table, a path or a shipped dataset's name
(:func:`analyses.source.resolve`, the one place that decides), validates its arguments as the
command line does (one-line :class:`DataError`; :class:`TypeError` for an argument of the wrong
kind) and returns an object with tables, figures and a rich display (:mod:`analyses.result`).
Nothing is written to disk unless asked (``Result.report(path)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from varcomp.models.errors import DataError

__all__ = ["FAMILIES", "check", "compare", "datasets", "describe", "fit", "load_dataset", "plan",
           "reliability"]

FAMILIES = ("gaussian", "bernoulli", "binomial", "poisson")
"""Response families that can be fitted (normal responses; others come with a later issue)."""


def _seed(seed) -> int:
    """``seed``, checked as ``--seed`` is; a fresh one (recorded in the settings) for None."""
    from varcomp.analyses.cli import SEED_MAX

    if seed is None:
        import secrets

        return secrets.randbelow(SEED_MAX + 1)
    if isinstance(seed, bool) or not isinstance(seed, int) and not _is_integer(seed):
        raise TypeError(f"seed must be a whole number or None, got {type(seed).__name__}")
    if not 0 <= int(seed) <= SEED_MAX:
        raise DataError(f"seed must be between 0 and {SEED_MAX}, got {seed}")
    return int(seed)


def _is_integer(x) -> bool:
    import numbers

    return isinstance(x, numbers.Integral)


def _positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not _is_integer(value) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")


def _prior_specs(priors) -> list[str] | None:
    """``priors`` as ``NAME=FAMILY:SCALE`` strings (the CLI's ``--prior``), or None."""
    if priors is None:
        return None
    if isinstance(priors, str):
        return [priors]
    if isinstance(priors, dict):
        specs = []
        for name, spec in priors.items():
            if not isinstance(name, str) or not isinstance(spec, str):
                raise TypeError(f"priors as a dict map names to 'FAMILY:SCALE' text, e.g. "
                                f"{{'tau': 'halfnormal:10'}}; got {name!r}: {spec!r}")
            specs.append(f"{name}={spec}")
        return specs
    if isinstance(priors, Sequence) and all(isinstance(p, str) for p in priors):
        return list(priors)
    raise TypeError(f"priors must be a dict such as {{'tau': 'halfnormal:10'}} or a list such "
                    f"as ['tau=halfnormal:10'], got {type(priors).__name__}")


def fit(data, formula: str | None = None, *, group: str | None = None,
        response: str | Sequence[str] | None = None, family: str | None = None,
        model: str | Sequence[str] | None = None, draws: int = 1000, tune: int = 1000,
        chains: int = 4, seed: int | None = None, priors=None, progress: bool = True,
        link: str | None = None, event: str | None = None):
    """Fit a variance-components model; returns a :class:`varcomp.Result`.

    ``data``: a pandas DataFrame, a pyarrow Table, a CSV/Parquet path or a shipped dataset's
    name (``varcomp.datasets()``). The model is ``formula`` (``"y ~ x + (1|g)"``, nested
    ``(1|a/b)``, crossed ``(1|a) + (1|b)``) or ``group``/``response`` (several responses: the
    multivariate model). ``model``: a form (``centred``, ``noncentred``, ``marginal``,
    ``sufficient``), a list of them or ``"all"`` (default: the family's). ``priors``: the CLI's
    ``--prior`` overrides as ``{"tau": "halfnormal:10"}`` or ``["tau=halfnormal:10"]``.
    ``family``: ``gaussian`` (default), ``bernoulli``, ``binomial`` (``p(successes, trials)``
    implies it) or ``poisson``; ``link``: ``logit``/``probit`` (binomial kinds), ``log``;
    ``event``: a two-level text response's event level (default: the level sorting last).
    ``seed`` None draws a fresh seed (recorded in ``summary_dict``'s settings). Nothing is
    written; ``Result.report(path)`` writes what ``varcomp fit --out`` writes.
    """
    from varcomp.analyses.fit import fit as fit_forms
    from varcomp.analyses.result import Result
    from varcomp.analyses.source import resolve
    from varcomp.models.forms import family_of

    if family is not None and family not in FAMILIES:
        raise DataError(f"family={family!r} is not supported: varcomp fits "
                        f"{', '.join(repr(f) for f in FAMILIES)} responses for now")
    _positive(draws=draws, tune=tune, chains=chains)
    seed = _seed(seed)
    specs = _prior_specs(priors)
    loaded = resolve(data, formula, group=group, response=response, family=family, link=link,
                     event=event)
    fam = family_of(loaded)
    built = fam.parse_priors(loaded, specs) if specs else None
    for w in loaded.warnings:
        warnings.warn(w, UserWarning, stacklevel=2)
    if model == "all":
        for name, why in fam.skipped(loaded).items():
            warnings.warn(f"model='all' skips {name}: {why}", UserWarning, stacklevel=2)
    result = fit_forms(loaded, model, draws=int(draws), tune=int(tune), chains=int(chains),
                       seed=seed, priors=built, progress=bool(progress))
    return Result(result)


def compare(data, formulas: Sequence[str], *, draws: int = 1000, tune: int = 1000,
            chains: int = 4, seed: int | None = None, progress: bool = True):
    """Rank ``formulas`` and the pooled model by leave-one-cluster-out elpd (``varcomp compare``).

    ``data`` as for :func:`fit`. Returns a :class:`varcomp.Comparison` (``.table()``).
    """
    from varcomp.analyses.compare import compare as compare_models
    from varcomp.analyses.result import Comparison
    from varcomp.analyses.source import as_frame

    if isinstance(formulas, str) or not isinstance(formulas, Sequence) or \
            not all(isinstance(f, str) for f in formulas):
        raise TypeError("formulas must be a list of formulas, e.g. ['y ~ 1 + (1|g)', "
                        "'y ~ x + (1|g)']")
    _positive(draws=draws, tune=tune, chains=chains)
    frame = as_frame(data)
    result = compare_models(data if frame is None else frame, list(formulas), draws=int(draws),
                            tune=int(tune), chains=int(chains), seed=_seed(seed),
                            progress=bool(progress))
    return Comparison(result)


def describe(data, formula: str | None = None, *, group: str | None = None,
             response: str | Sequence[str] | None = None):
    """Sizes, one-way ANOVA and moment estimates (``varcomp describe``); data as for :func:`fit`.

    Returns an :class:`analyses.describe.Description`: its repr is the command's text,
    ``.info`` the numbers, ``.anova`` a DataFrame.
    """
    from varcomp.analyses.describe import Description
    from varcomp.analyses.describe import describe as describe_data
    from varcomp.analyses.source import resolve

    return Description(describe_data(resolve(data, formula, group=group, response=response)))


def datasets():
    """The shipped datasets: name (index), group, response(s), description (a DataFrame)."""
    import pandas as pd

    from varcomp.models.data import DATASETS

    frame = pd.DataFrame([{"name": d.name, "group": d.group, "response": ", ".join(d.response),
                           "description": d.description} for d in DATASETS.values()])
    return frame.set_index("name")


def load_dataset(name: str):
    """A shipped dataset as a pandas DataFrame (its grouping column read as text)."""
    from varcomp.models.data import DATASETS, data_dir
    from varcomp.models.io import read_frame

    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset's name, got {type(name).__name__}")
    ds = DATASETS.get(name.lower())
    if ds is None:
        raise DataError(f"unknown dataset {name!r}: shipped are {', '.join(DATASETS)}")
    return read_frame(data_dir() / ds.file, text_columns=[ds.group])


def check(*, quick: bool = False, sims: int | None = None, seed: int = 0, out=None) -> bool:
    """Show that every form gives one posterior on simulated data (``varcomp check``).

    Prints the tables as the command does; ``out`` a folder for checks.json and the plots.
    Returns True iff the checks passed. ``quick``: fewer settings and draws (a few minutes).
    """
    from pathlib import Path

    from varcomp.analyses.checks_run import run_checks

    if sims is not None:
        _positive(sims=sims)
    if out is not None:
        from varcomp.analyses.outputs import resolve_out

        resolve_out(out)
    return run_checks(quick=bool(quick), sims=sims, out=None if out is None else Path(out),
                      seed=_seed(seed)) == 0


def reliability(data, *, target: str, rater: str, response: str, occasion: str | None = None,
                d_study: Sequence[int] = (1, 2, 4, 8), goal: float = 0.8, goal_prob: float = 0.8,
                draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int | None = None,
                progress: bool = True):
    """Rater ICCs, G and D studies (``varcomp reliability``); data as for :func:`fit`.

    Returns an :class:`analyses.reliability.Reliability`: ``coefficients()``, ``g_table()``,
    ``d_table()``, ``reach()``, ``as_dict()``; ``twoway``/``oneway`` are the two fits'
    :class:`varcomp.Result`. Nothing is written.
    """
    from varcomp.analyses.reliability import reliability as run

    _positive(draws=draws, tune=tune, chains=chains)
    return run(data, target=target, rater=rater, response=response, occasion=occasion,
               d_values=d_study, goal=goal, goal_prob=goal_prob, draws=int(draws),
               tune=int(tune), chains=int(chains), seed=_seed(seed), progress=bool(progress))


def plan(*, size: float, cv: float = 0.0, effect: float | None = None, alpha: float = 0.05,
         power: float = 0.8, se: float | None = None, sd: float = 1.0, assurance: float = 0.8,
         icc: float | None = None, icc_prior: str | None = None, source=None, seed: int = 0):
    """Clusters needed for a cluster trial, with assurance (``varcomp plan``); a dict.

    One ICC source: ``icc`` (fixed), ``icc_prior`` (``"beta:A:B"``) or ``source`` (a one-way
    fit's output folder). One target: ``effect`` (two arms; clusters per arm) or ``se``.
    """
    from varcomp.analyses.plan import plan as run

    return run(size=size, cv=cv, effect=effect, alpha=alpha, power=power, se=se, sd=sd,
               level=assurance, icc=icc, icc_prior=icc_prior, source=source, seed=_seed(seed))
