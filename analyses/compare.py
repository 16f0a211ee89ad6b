r"""``varcomp compare``: models ranked by leave-one-cluster-out predictive accuracy.

Each model (a formula) is fitted in its family's default form, and so is the **pooled** model:
the first formula's fixed effects with no random effect (tau = 0), the Bayesian answer to "do I
need the random effect at all?". Every fit carries each top-level cluster's log-likelihood with
the cluster's effects integrated out (:mod:`models.pointwise`), so PSIS-LOO over those values
(``arviz.loo``) estimates the elpd of predicting a whole new cluster. A cluster whose Pareto k
exceeds :data:`K_THRESHOLD` (PSIS unreliable) is refitted exactly without it, cheaply in the
sufficient form, and its elpd replaced by log mean_s p(y_i | theta_s^{(-i)}); the table says
which entries are exact. Differences and their standard errors are computed from the pointwise
values (as ``arviz.compare`` does): dse = sqrt(L var(elpd_a,i - elpd_b,i)).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from varcomp.models.data import ClusteredData, DataError

__all__ = ["K_THRESHOLD", "CompareResult", "compare", "pooled_data", "write_compare"]

K_THRESHOLD = 0.7
"""Pareto k above which PSIS-LOO is unreliable (Vehtari et al. 2024) and the cluster is refitted."""
MAX_EXACT = 50
"""At most this many clusters of one model are refitted exactly, those of the highest k first;
the rest keep their PSIS estimates and are listed as unreliable (compare.json, compare.html)."""


@dataclass
class ModelEntry:
    """One compared model: name, formula, its fit, pointwise elpd, Pareto k, exact clusters."""

    name: str
    formula: str
    data: ClusteredData
    fit: object
    elpd_i: np.ndarray
    pareto_k: np.ndarray
    exact: list[str] = field(default_factory=list)
    unreliable: list[str] = field(default_factory=list)

    @property
    def k_used(self) -> float:
        """The largest Pareto k among the PSIS estimates kept (-inf if every cluster was refitted).

        Exact refits replaced the other clusters' estimates, so their k no longer applies.
        """
        used = np.ones(self.pareto_k.size, dtype=bool)
        exact = set(self.exact)
        used[[i for i, g in enumerate(self.data.groups) if str(g) in exact]] = False
        return float(np.max(self.pareto_k[used])) if used.any() else -math.inf

    @property
    def elpd(self) -> float:
        """Sum of the pointwise elpd."""
        return float(self.elpd_i.sum())

    @property
    def se(self) -> float:
        """Standard error of the elpd: sqrt(L) x the pointwise sd."""
        return float(math.sqrt(self.elpd_i.size * np.var(self.elpd_i, ddof=1)))


@dataclass
class CompareResult:
    """The comparison: models (best first) and the compare.json contract (:meth:`as_dict`)."""

    models: list[ModelEntry]
    clusters: list[str]
    group: str

    def as_dict(self) -> dict:
        """``{"models": [...], "ranking": [...], ...}`` (docs/report.md)."""
        best = self.models[0]
        rows = []
        for m in self.models:
            diff = m.elpd_i - best.elpd_i
            dse = float(math.sqrt(diff.size * np.var(diff, ddof=1))) if m is not best else 0.0
            k_used = m.k_used
            rows.append({"name": m.name, "formula": m.formula, "elpd": m.elpd, "se": m.se,
                         "elpd_diff": float(diff.sum()), "dse": dse,
                         "pareto_k_max": k_used if math.isfinite(k_used) or k_used > 0
                         else None,
                         "n_high_k": len(m.exact) + len(m.unreliable),
                         "exact_clusters": list(m.exact),
                         "unreliable_clusters": list(m.unreliable),
                         "pareto_k": dict(zip(self.clusters, map(float, m.pareto_k),
                                              strict=True)),
                         "family": m.fit.family.name,
                         "diagnostics_ok": bool(next(iter(m.fit.fits.values())).ok)})
        return {"models": rows, "ranking": [m.name for m in self.models],
                "group": self.group, "n_clusters": len(self.clusters),
                "k_threshold": K_THRESHOLD, "max_exact": MAX_EXACT,
                "note": "elpd of leave-one-cluster-out (each cluster's rows predicted with its "
                        "effects integrated out); clusters listed in exact_clusters were "
                        "refitted without that cluster; clusters in unreliable_clusters had "
                        f"Pareto k above {K_THRESHOLD} but were not refitted (at most "
                        f"{MAX_EXACT} refits per model) and keep their unreliable PSIS "
                        "estimate; pareto_k_max is the largest k among the PSIS estimates "
                        "used (null when every cluster was refitted)"}


def pooled_data(data: ClusteredData) -> ClusteredData:
    """The same rows with the same fixed effects and one factor (the top-level one)."""
    from varcomp.models.design import Design, Factor

    d = data.design
    if d is None:
        X, terms = np.ones((data.n_obs, 1)), ("Intercept",)
        top = Factor(data.group_name, data.codes, data.groups)
        formula = f"{data.responses[0]} ~ 1"
    else:
        X, terms, top, formula = d.X, d.terms, d.factors[0], d.formula.split("+ (")[0].strip()
    return replace(data, design=Design(formula, X, terms, (top,), True, (top,)))


def _fit_pooled(data: ClusteredData, *, draws, tune, chains, seed):
    """The pooled model (tau = 0) in the compiled sufficient form; a FitResult-like record."""
    from varcomp.analyses.fit import FitResult
    from varcomp.models.compiled import lmm
    from varcomp.models.lmm import LmmPriors
    from varcomp.models.sampling import Fit, diagnose, sample_model

    pdata = pooled_data(data)
    priors = replace(LmmPriors.default(pdata), tau=(), factors=())
    idata, sec = sample_model(lmm.compile_nested(pdata, priors), draws=draws, tune=tune,
                              chains=chains, seed=seed)
    post = idata.posterior
    S = post.sizes["chain"] * post.sizes["draw"]
    from varcomp.models.forms import family_named

    pooled = family_named("regression")  # tau fixed at 0, whatever the formula's terms
    ll = _unit_loglik(pdata, post, pooled.likelihood, tau=np.zeros((S, 1)))
    fit = Fit("sufficient", idata, sec, {"draws": draws, "chains": chains, "seed": seed},
              diagnose(idata, ("beta", *pooled.likelihood.params)))
    return FitResult(pdata, pooled, {"sufficient": fit}), ll, priors


def _unit_loglik(data, post, likelihood, tau=None) -> np.ndarray:
    """(S, L) unit log densities (:func:`models.lmm.unit_loglik`).

    The likelihood's own parameters (Gaussian: sigma) are read through its record.
    """
    from varcomp.models.lmm import unit_loglik

    beta = post["beta"].values.reshape(-1, post["beta"].shape[-1])
    own = [post[p].values.reshape(-1) for p in likelihood.params]
    if tau is None:
        tau = post["tau"].values.reshape(beta.shape[0], -1)
    return unit_loglik(data, beta, tau, *own)


def _loo(ll: np.ndarray, chains: int) -> tuple[np.ndarray, np.ndarray]:
    """PSIS-LOO pointwise elpd and Pareto k from (S, L) cluster log-likelihoods (arviz.loo)."""
    import arviz as az
    import xarray as xr

    S, L = ll.shape
    ds = xr.Dataset({"y": (("chain", "draw", "group"), ll.reshape(chains, S // chains, L))})
    idata = az.InferenceData(log_likelihood=ds, posterior=xr.Dataset(
        {"x": (("chain", "draw"), np.zeros((chains, S // chains)))}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # high Pareto k: handled by exact refits, reported
        res = az.loo(idata, pointwise=True)
    return np.asarray(res.loo_i.values, dtype=np.float64), np.asarray(res.pareto_k.values)


def _logmeanexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    return m + math.log(float(np.mean(np.exp(x - m))))


def _without(data: ClusteredData, cluster: int) -> ClusteredData:
    """``data`` without one top-level cluster (labels and codes recomputed)."""
    import pandas as pd

    from varcomp.models.design import Design, Factor

    keep = data.codes != cluster

    def refactor(codes, labels):
        new, levels = pd.factorize(pd.Series(labels[codes[keep]], dtype=object), sort=False)
        return new.astype(np.int64), np.asarray(levels, dtype=object)

    codes, groups = refactor(data.codes, data.groups)
    d = data.design
    design = None
    if d is not None:
        factors = tuple(Factor(f.name, *refactor(f.codes, f.levels)) for f in d.factors)
        variables = tuple(Factor(v.name, *refactor(v.codes, v.levels)) for v in d.variables)
        design = Design(d.formula, d.X[keep], d.terms, factors, d.nested, variables)
    rows = None if data.rows is None else data.rows[keep]
    return replace(data, y=data.y[keep], codes=codes, groups=groups, design=design, rows=rows)


def compare(spec: str, formulas: list[str], *, draws: int = 1000, tune: int = 1000,
            chains: int = 4, seed: int = 0, progress: bool = False) -> CompareResult:
    """Fit each formula and the pooled model to the data ``spec``; rank them by elpd (LOCO).

    Every model must be fitted to the same rows with the same top-level clusters (the first
    factor of each formula): leave-one-cluster-out predictions are comparable only then.
    Crossed designs have no per-cluster density and are refused.
    """
    from varcomp.analyses.fit import fit as fit_model
    from varcomp.analyses.source import resolve
    from varcomp.models.forms import family_of

    if not formulas:
        raise DataError("give at least one --formula to compare")
    loaded = []
    for formula in formulas:  # every model's data first: a mismatch is refused before sampling
        data = resolve(spec, formula)  # a path, a shipped name or a frame
        if family_of(data).likelihood.residual_sd is None:  # binomial / Poisson
            raise DataError(f"{formula!r}: varcomp compare's pooled model and exact refits "
                            f"are Gaussian; for a binomial or Poisson fit use varcomp fit, whose "
                            f"NetCDF holds each cluster's integrated log-likelihood (PSIS-LOO)")
        if family_of(data).cluster_loglik is None:
            raise DataError(f"{formula!r} has crossed factors: leave-one-cluster-out is not "
                            f"defined for them (a cluster shares the other factors' levels "
                            f"with other clusters); compare nested or one-factor models")
        if loaded:
            _same_rows(formulas[0], loaded[0], formula, data)
        loaded.append(data)
    ref = loaded[0]
    entries: list[ModelEntry] = []
    for i, (formula, data) in enumerate(zip(formulas, loaded, strict=True)):
        result = fit_model(data, draws=draws, tune=tune, chains=chains, seed=seed,
                           progress=progress)
        idata = next(iter(result.idata.values()))
        if "log_likelihood" not in idata.groups():
            raise DataError(f"{formula!r}: no per-cluster log-likelihood (too many clusters x "
                            f"draws to store); use fewer --draws")
        ll = idata.log_likelihood["y"].values.reshape(-1, data.n_groups)
        elpd_i, k = _loo(ll, chains)
        entries.append(ModelEntry(f"m{i + 1}", formula, data, result, elpd_i, k))
    pooled_fit, ll, pooled_priors = _fit_pooled(ref, draws=draws, tune=tune, chains=chains,
                                                seed=seed)
    elpd_i, k = _loo(ll, chains)
    entries.append(ModelEntry("pooled", pooled_fit.data.design.formula + " (no random effect)",
                              pooled_fit.data, pooled_fit, elpd_i, k))
    for e in entries:
        _replace_bad_clusters(e, pooled_priors, draws=draws, tune=tune, chains=chains,
                              seed=seed)
    entries.sort(key=lambda e: -e.elpd)
    return CompareResult(entries, [str(g) for g in ref.groups], ref.group_name)


def _response(formula: str) -> str:
    """The left-hand side of a formula as written (spaces removed): column and transform."""
    return "".join(formula.split("~", 1)[0].split())


def _same_rows(first: str, ref: ClusteredData, formula: str, data: ClusteredData) -> None:
    """Refuse (one line) a model whose response, rows or clusters differ from the first one's.

    Their elpd would not be comparable.
    """
    if _response(formula) != _response(first):
        raise DataError(f"{formula!r} predicts {_response(formula)!r} but the first model "
                        f"predicts {_response(first)!r}: the elpd of different responses are "
                        f"not comparable; compare models of one response")
    if ref.rows is not None and data.rows is not None and not np.array_equal(ref.rows,
                                                                             data.rows):
        only_a = np.setdiff1d(ref.rows, data.rows)[:5] + 1
        only_b = np.setdiff1d(data.rows, ref.rows)[:5] + 1
        raise DataError(f"{formula!r} is fitted to other rows than the first model (data rows "
                        f"{only_a.tolist()} only in the first, {only_b.tolist()} only in this "
                        f"one: a missing value in a column one model uses): remove the rows "
                        f"any model drops so every model sees the same rows")
    if (data.n_obs != ref.n_obs or data.group_name != ref.group_name
            or not np.array_equal(data.groups, ref.groups)):
        raise DataError(f"{formula!r} is fitted to other rows or top-level clusters "
                        f"({data.n_obs} rows by '{data.group_name}') than the first model "
                        f"({ref.n_obs} rows by '{ref.group_name}'): compare models of the "
                        f"same rows and clusters")


def _replace_bad_clusters(entry: ModelEntry, pooled_priors, *, draws, tune, chains,
                          seed) -> None:
    """Exact refits without each cluster whose Pareto k exceeds :data:`K_THRESHOLD`.

    The refit keeps the model's prior (the full data's, not rescaled to the smaller data), and
    the cluster's elpd is log mean_s p(y_i | theta_s) over the refit's draws.
    """
    from varcomp.analyses.fit import fit as fit_model
    from varcomp.models.compiled import lmm
    from varcomp.models.sampling import sample_model

    high = np.flatnonzero(~(entry.pareto_k <= K_THRESHOLD))  # NaN k counts as unreliable
    high = high[np.argsort(-np.nan_to_num(entry.pareto_k[high], nan=np.inf), kind="stable")]
    bad = [int(i) for i in high[:MAX_EXACT]]  # the worst first
    entry.unreliable = [str(entry.data.groups[i]) for i in sorted(high[MAX_EXACT:])]
    family = entry.fit.family
    priors = pooled_priors if entry.name == "pooled" else family.default_priors(entry.data)
    for i in bad:
        sub = _without(entry.data, i)
        if entry.name == "pooled":
            idata, _ = sample_model(lmm.compile_nested(sub, priors), draws=draws, tune=tune,
                                    chains=chains, seed=seed)
            post = idata.posterior
            S = post.sizes["chain"] * post.sizes["draw"]
            ll = _unit_loglik(entry.data, post, family.likelihood, tau=np.zeros((S, 1)))
        else:
            res = fit_model(sub, draws=draws, tune=tune, chains=chains, seed=seed,
                            priors=priors)
            ll = family.cluster_loglik(entry.data, next(iter(res.idata.values())).posterior,
                                       likelihood=family.likelihood)
        entry.elpd_i[i] = _logmeanexp(ll[:, i])
    entry.exact = [str(entry.data.groups[i]) for i in sorted(bad)]


def write_compare(result: CompareResult, out: Path) -> Path:
    """compare.json and compare.html into ``out``, atomically."""
    from varcomp.analyses.outputs import dump_json, write_atomically
    from varcomp.analyses.report.render import render_compare

    def writer(tmp: Path) -> None:
        dump_json(result.as_dict(), tmp / "compare.json")
        (tmp / "compare.html").write_text(render_compare(result.as_dict()), encoding="utf-8")

    return write_atomically(out, writer)
