r"""The numbers the report shows, as plain data (dicts, lists, arrays): no HTML, no figures.

Everything is computed from a :class:`analyses.fit.FitResult`. What a family has (outcomes,
matrices, parameter names, estimates) is asked of ``result.family``; the parameter table is
``result.summary["fits"][name]["params"]`` (ArviZ's ``az.summary``, the one behind
summary.json), never recomputed. Intervals that are not in that table come from ``az.hdi``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import islice

import numpy as np

from varcomp.models import shares
from varcomp.models.likelihoods import GAUSSIAN, Likelihood
from varcomp.models.sampling import HDI_PROB  # the parameter table's, defined once

__all__ = ["BOUNDARY_ICC", "BOUNDARY_MASS", "HDI_PROB", "icc_panels"]

BOUNDARY_ICC = 0.01  # report P(icc < BOUNDARY_ICC) when posterior mass piles up at tau = 0
BOUNDARY_MASS = 0.05  # ... when that probability exceeds this (or ML/REML sit on the boundary)
SCATTER_DRAWS = 1000  # tau-sigma draws in the pair plot (evenly thinned; divergences all drawn)
PPC_DRAWS, PPC_MIN_DRAWS, PPC_VALUES = 400, 50, 5_000_000  # predictive replicates: draws x L cap
PPC_SHOWN = 60  # replicate ECDFs drawn
ECDF_POINTS = 2000  # ranks through which an ECDF over clusters is drawn
CATERPILLAR_MAX = 2000  # groups drawn in the caterpillar plot (evenly spaced in rank above that)
RANK_BINS = 20  # bins of the rank histograms
RANK_PANELS = 12  # at most this many rank panels in all ...
RANK_PER_VAR = 3  # ... and this many elements of a vector (beta[...], tau[...], mu[...])
PAIR_PANELS = 3  # tau-sigma pair plots (elements of tau)


# ---------------------------------------------------------------------------- small helpers
def flat(da) -> np.ndarray:
    """Draws of a (chain, draw) DataArray, flattened to float64."""
    return np.asarray(da.values, dtype=np.float64).reshape(-1)


def pick(da, outcome: object):
    """``da`` for one outcome; as is for the one response (outcome None)."""
    return da if outcome is None else da.sel(outcome=outcome)


def label(var: str, outcome: object) -> str:
    """The parameter table's name of ``var`` for ``outcome``: ``icc`` or ``icc[written]``."""
    return var if outcome is None else f"{var}[{outcome}]"


def elements(da, first: int | None = None) -> list[dict]:
    """The scalar elements of a posterior variable (the first ``first`` of them).

    Each: its label (``beta[basement]``, ``icc``), its coordinates as text (``keys``), the
    selection (dim -> index) and the (chain, draw) DataArray.
    """
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    out = []
    for idx in islice(np.ndindex(*(da.sizes[d] for d in dims)), first):
        sel = dict(zip(dims, idx, strict=True))
        keys = [str(da[d].values[i]) for d, i in sel.items()]
        out.append({"label": f"{da.name}[{','.join(keys)}]" if dims else str(da.name),
                    "keys": keys, "sel": sel, "da": da.isel(sel) if sel else da})
    return out


def estimate_dicts(estimates: Mapping) -> dict[str, dict]:
    """The ML/REML estimates as plain dicts (``as_dict``).

    The one-way ``PointEstimate`` and the mixed models' ``MixedEstimate`` alike.
    """
    return {k: dict(e.as_dict()) for k, e in (estimates or {}).items()}


def on_boundary(d: Mapping) -> bool:
    """Whether an estimate (as a dict) has some variance at 0 (``boundary``: bool or by factor)."""
    b = d.get("boundary", False)
    return any(b.values()) if isinstance(b, Mapping) else bool(b)


def icc_marks(estimates: Mapping) -> list[dict]:
    """The estimates that have an ICC, as marks for the ICC figures: key, icc, boundary."""
    return [{"key": k, "icc": float(d["icc"]), "boundary": on_boundary(d)}
            for k, d in estimate_dicts(estimates).items() if d.get("icc") is not None]


def estimates_table(estimates: Mapping) -> dict | None:
    """ML/REML side by side: one row per parameter, one column per method.

    Rows: ``beta[term]``, ``tau`` or ``tau[factor]``, ``sigma``, ``icc`` or ``vpc[...]``, then
    ``criterion`` and ``boundary`` (by factor where there are several).
    """
    ests = estimate_dicts(estimates)
    if not ests:
        return None
    rows: dict[str, dict] = {}
    for key, d in ests.items():
        for var, value in d.items():
            if var == "method":
                continue
            items = value.items() if isinstance(value, Mapping) else [(None, value)]
            for sub, x in items:
                name = var if sub is None else f"{var}[{sub}]"
                rows.setdefault(name, {"label": name, "flag": var == "boundary", "values": {}})
                rows[name]["values"][key] = x
    order = sorted(rows.values(), key=lambda r: (r["flag"], r["label"] == "criterion"))
    return {"methods": list(ests), "rows": order}


def thin_index(n_total: int, n_max: int) -> np.ndarray:
    """Evenly spaced indices of at most ``n_max`` out of ``n_total`` (first and last kept)."""
    if n_total <= n_max:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_max).round().astype(np.int64))


def hdi(x) -> tuple[float, float]:
    """The 94% highest-density interval of 1-D draws (``az.hdi``)."""
    import arviz as az

    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan, math.nan
    lo, hi = az.hdi(x, hdi_prob=HDI_PROB)
    return float(lo), float(hi)


def hdi_array(da, dim: str = "hdi") -> np.ndarray:
    """``az.hdi`` of a DataArray over (chain, draw): array (..., 2) of lower and upper ends."""
    import arviz as az

    out = az.hdi(da.rename("x"), hdi_prob=HDI_PROB)["x"]
    return np.asarray(out.transpose(..., dim).values, dtype=np.float64)


def params_of(result, name: str) -> dict[str, dict]:
    """The parameter table of fit ``name`` from summary.json's contents (empty if absent)."""
    fits = (result.summary or {}).get("fits", {})
    return dict((fits.get(name) or {}).get("params") or {})


# ---------------------------------------------------------------------------- data
def data_summary(data, family) -> dict:
    """Sizes, singletons, balance, warnings, a formula's design and the one-way ANOVA.

    The design is :func:`design_summary`'s; the ANOVA of each response is computed for the
    one-way families only.
    """
    sizes = np.asarray(data.sizes)
    L, N = int(sizes.size), int(sizes.sum())
    singletons = int((sizes == 1).sum())
    balanced = bool(sizes.min() == sizes.max())
    warns = list(data.warnings)
    if L < 3 and not any(f"only {L} cluster" in w.lower() for w in warns):
        warns.append(f"Only {L} cluster{'s' if L != 1 else ''}: the between-cluster sd tau "
                     f"rests on {L - 1} degree of freedom, so its posterior mostly reflects the "
                     f"prior. Treat tau and the ICC as poorly determined.")
    if singletons and family.likelihood.residual_sd is not None:
        warns.append(f"{singletons} cluster(s) have a single observation: they inform tau and "
                     f"the mean but not the within-cluster sd sigma.")
    values, counts = np.unique(sizes, return_counts=True)
    return {
        "source": data.source, "name": data.name, "group": data.group_name,
        "responses": list(data.responses), "n_obs": N, "n_groups": L,
        "dropped": int(data.dropped_rows), "sizes": sizes,
        "size_min": int(sizes.min()), "size_median": float(np.median(sizes)),
        "size_mean": N / L, "size_max": int(sizes.max()), "singletons": singletons,
        "balanced": balanced, "size_values": values.tolist(), "size_counts": counts.tolist(),
        "warnings": warns, "design": design_summary(data),
        "anova": ([anova(data, k) for k in range(len(data.responses))]
                  if family.anova else []),
    }


def design_summary(data) -> dict | None:
    """A formula's design: the formula, fixed-effect columns, each factor's levels, the layout.

    None for a family without one (:attr:`~models.forms.base.Family.design`).
    """
    from varcomp.models.forms import family_of

    if not family_of(data).design:
        return None
    design = data.design
    factors = [{"name": f.name, "levels": f.m, "rows_per_level": data.n_obs / f.m}
               for f in design.factors]
    names = [f["name"] for f in factors]
    if len(names) == 1:
        layout = f"one grouping factor ({names[0]})"
    elif design.nested:
        layout = "nested: " + " ⊃ ".join(names) + " (each level inside one level of the previous)"
    else:
        layout = "crossed: " + " × ".join(names) + " (the factors do not nest)"
    return {"formula": design.formula, "terms": list(design.terms), "factors": factors,
            "nested": bool(design.nested), "layout": layout}


def anova(data, k: int) -> dict:
    """One-way ANOVA of response ``k`` with its F test and the moment estimates."""
    from scipy import stats

    response = data.responses[k]
    try:
        a = dict(data.anova(k))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return {"response": response, "available": False}
    dfb, dfw = int(round(a["df_between"])), int(round(a["df_within"]))
    ok = dfb > 0 and dfw > 0 and math.isfinite(a["F"])
    a.update(response=response, available=True, df_between=dfb, df_within=dfw,
             p_value=float(stats.f.sf(a["F"], dfb, dfw)) if ok else math.nan)
    return a


# ---------------------------------------------------------------------------- ICC, boundary
def icc_panels(post, outcomes: list, params: Mapping[str, dict] | None = None) -> list[dict]:
    """Per outcome: the ICC draws, posterior mean, 94% HDI (the table's when given), P(ICC < 0.01).

    The HDI of tau is read the same way for the boundary paragraph.
    """
    params = params or {}
    panels = []
    for o in outcomes:
        x = flat(pick(post["icc"], o))
        row = params.get(label("icc", o))
        lo, hi = (row["hdi_low"], row["hdi_high"]) if row else hdi(x)
        trow = params.get(label("tau", o))
        tau_hdi = (trow["hdi_low"], trow["hdi_high"]) if trow else hdi(flat(pick(post["tau"], o)))
        panels.append({"outcome": o, "label": label("icc", o), "draws": x,
                       "mean": float(x.mean()), "hdi": (lo, hi), "tau_hdi": tau_hdi,
                       "p_low": float(np.mean(x < BOUNDARY_ICC)) if x.size else math.nan})
    return panels


def boundary(panel: dict, estimates: Mapping) -> dict:
    """Whether to show the boundary paragraph: estimates at tau = 0 or P(ICC < 0.01) > 0.05."""
    on = [k.upper() for k, d in estimate_dicts(estimates).items() if on_boundary(d)]
    p = panel["p_low"]
    return {"on_boundary": on, "estimated": bool(estimates),
            "show": bool(on) or (math.isfinite(p) and p > BOUNDARY_MASS)}


def design_effects(post, data, outcomes: list) -> dict:
    """Kish's design effect and the reliability of cluster means, with 94% HDIs.

    A non-Gaussian response (a posterior with ``icc_data``) uses the data-scale ICC, the
    correlation of two 0/1 trials (or counts) of one cluster, and, for binomial rows, each
    cluster's trials as its size: the design effect of a cluster's proportion.
    """
    rows, notes = [], []
    glm = "icc_data" in post
    for k, o in enumerate(outcomes):
        n = data.stats.n[:, k]
        if glm and data.trials is not None:
            n = np.bincount(data.codes, weights=data.trials, minlength=data.n_groups)
        n = n[n > 0].astype(np.float64)
        nbar, nw = shares.mean_size(n), shares.weighted_size(n)
        icc = flat(pick(post["icc_data" if glm else "icc"], o))
        deff = shares.deff(icc, nbar)  # design effect 1 + (n_bar - 1) ICC
        rel = shares.reliability(icc, nbar)  # reliability of a mean of n_bar draws
        suffix = "" if o is None else f" [{o}]"
        suffix += " (data-scale ICC)" if glm else ""
        rows.append({"quantity": f"design effect 1 + (n̄ − 1) ICC{suffix}", "nbar": nbar,
                     "mean": float(deff.mean()), "hdi": hdi(deff)})
        rows.append({"quantity": f"reliability of cluster means n̄ ICC / (1 + (n̄ − 1) ICC)"
                                 f"{suffix}", "nbar": nbar, "mean": float(rel.mean()),
                     "hdi": hdi(rel)})
        dw = shares.deff(icc, nw)  # the same with the size-weighted mean cluster size
        notes.append({"suffix": suffix, "nbar": nbar, "balanced": bool(n.min() == n.max()),
                      "n_min": int(n.min()), "n_max": int(n.max()), "n_weighted": nw,
                      "deff_weighted": float(dw.mean()), "deff_weighted_hdi": hdi(dw)})
    return {"rows": rows, "notes": notes}


def matrices(post, names: tuple[str, ...]) -> list[dict]:
    """Posterior mean and 94% HDI of each cell of the family's (outcome, outcome_bis) matrices."""
    out = []
    for var in names:
        da = post[var]
        a, b = [d for d in da.dims if d not in ("chain", "draw")]
        mean = da.mean(("chain", "draw")).transpose(a, b).values
        ends = hdi_array(da.transpose("chain", "draw", a, b))
        rows = [{"label": str(ra),
                 "cells": [(float(mean[i, j]), (float(ends[i, j, 0]), float(ends[i, j, 1])))
                           for j in range(mean.shape[1])]}
                for i, ra in enumerate(da[a].values)]
        out.append({"var": var, "columns": [str(x) for x in da[b].values], "rows": rows})
    return out


# ---------------------------------------------------------------------------- sampler
def scalar_picks(post, names: list[str], *, per_var: int, limit: int) -> list[dict]:
    """Scalar elements to plot: the first ``per_var`` of each variable, ``limit`` in all.

    The first element of every variable comes before the second of any; constant ones are left
    out (e.g. R^2 marginal without covariates).
    """
    picks = []
    for order, var in enumerate(v for v in names if v in post):
        varying = [e for e in elements(post[var], per_var)
                   if np.ptp(np.asarray(e["da"].values, dtype=np.float64)) > 0]
        picks += [(j, order, e) for j, e in enumerate(varying)]
    picks = sorted(picks, key=lambda t: (t[0], t[1]))[:limit]
    return [e for _, _, e in sorted(picks, key=lambda t: (t[1], t[0]))]


def ranks(post, names: list[str]) -> list[dict]:
    """Rank histograms: the draws of all chains ranked together, counted per chain in 20 bins.

    Uniform counts (draws / 20 per bin) mean well-mixed chains; ``band`` is the central 99% of a
    bin's count for independent draws (normal approximation of Binomial(draws, 1/20)). One panel
    per scalar element (:func:`scalar_picks`: ``beta[basement]``, ``tau[batch]``, ...).
    """
    from scipy.stats import rankdata

    out = []
    for e in scalar_picks(post, names, per_var=RANK_PER_VAR, limit=RANK_PANELS):
        x = np.asarray(e["da"].transpose("chain", "draw").values, dtype=np.float64)
        chains, draws = x.shape
        r = rankdata(x, axis=None).reshape(chains, draws)
        edges = np.linspace(0.5, x.size + 0.5, RANK_BINS + 1)
        counts = np.stack([np.histogram(rc, bins=edges)[0] for rc in r])
        expect = draws / RANK_BINS
        half = 2.576 * math.sqrt(draws * (1 / RANK_BINS) * (1 - 1 / RANK_BINS))
        out.append({"label": e["label"], "counts": counts, "edges": edges,
                    "expect": expect, "band": (expect - half, expect + half)})
    return out


def sampler(idata, post, likelihood: Likelihood = GAUSSIAN) -> dict:
    """Energy, E-BFMI per chain (``az.bfmi``), divergences and thinned tau-sigma draws.

    One pair plot per scalar element of tau (the first :data:`PAIR_PANELS`: per outcome, or per
    factor), against sigma's element with the same coordinates (sigma itself if it has none).
    """
    import arviz as az

    stats = getattr(idata, "sample_stats", None)
    energy = None
    if stats is not None and "energy" in stats:
        e = np.asarray(stats["energy"].transpose("chain", "draw").values, dtype=np.float64)
        # Betancourt (2016): the marginal energy (centred per chain) and the energy transitions
        energy = {"marginal": az.kde((e - e.mean(axis=1, keepdims=True)).ravel()),
                  "transition": az.kde(np.diff(e, axis=1).ravel()),
                  "bfmi": [float(b) for b in az.bfmi(idata)]}
    div = np.zeros(post.sizes["chain"] * post.sizes["draw"], dtype=bool)
    if stats is not None and "diverging" in stats:
        d = np.asarray(stats["diverging"].transpose("chain", "draw").values, dtype=bool)
        div = d.reshape(-1) if d.size == div.size else div
    pairs = []
    name = likelihood.residual_sd  # the residual's sd (Gaussian: sigma); none: no pair plots
    sigma = post[name] if name is not None else None
    for t in elements(post["tau"], PAIR_PANELS) if name is not None else ():
        sel = {d: i for d, i in t["sel"].items() if d in sigma.dims}
        coords = ",".join(str(sigma[d].values[i]) for d, i in sel.items())
        s_label = f"{name}[{coords}]" if sel else name
        tau, sig = flat(t["da"]), flat(sigma.isel(sel) if sel else sigma)
        idx = thin_index(tau.size, SCATTER_DRAWS)
        pairs.append({"x_label": t["label"], "y_label": s_label, "tau": tau[idx],
                      "sigma": sig[idx], "tau_div": tau[div], "sigma_div": sig[div]})
    return {"energy": energy, "divergences": int(div.sum()), "pairs": pairs,
            "shown": int(pairs[0]["tau"].size) if pairs else 0}


# ---------------------------------------------------------------------------- comparison
def ess_per_s(fit) -> float:
    """Smallest bulk ESS of the parameter table's variables per second of sampling."""
    sec = float((fit.seconds or {}).get("sample", math.nan))
    ess = float((fit.diagnostics or {}).get("ess_bulk", math.nan))
    return ess / sec if sec > 0 else math.nan


def agreement(comparison, name: str, fit) -> str:
    """The comparison's verdict on one form (agrees / unreliable here / DISAGREES)."""
    if comparison is None:
        return "–"
    verdicts = getattr(comparison, "verdicts", None) or {}
    if name in verdicts:
        return str(verdicts[name])
    if not fit.ok:
        return "unreliable here"
    return "agrees" if comparison.passed else "see comparison"


def recommendation(fits: Mapping, comparison) -> dict:
    """Which forms to trust: those passing the gate that the comparison does not reject.

    The most efficient (largest ESS bulk per second) of them is ``best``; ``bad`` names the
    others with their problems; with no trusted form, ``advice`` says what to change.
    """
    verdicts = (getattr(comparison, "verdicts", None) or {}) if comparison is not None else {}
    good = [n for n, f in fits.items()
            if f.ok and not str(verdicts.get(n, "agrees")).upper().startswith("DISAGREE")]
    bad = [(n, ", ".join(fits[n].diagnostics.get("problems", [])) or verdicts.get(n, "fails"))
           for n in fits if n not in good]
    advice = []
    if not good:
        if any(f.diagnostics.get("divergences", 0) for f in fits.values()):
            advice.append("for divergences, raise target_accept (e.g. 0.95) or use a form "
                          "without latent group effects (marginal, sufficient)")
        if any(not f.diagnostics.get("divergences", 0) for f in fits.values()):
            advice.append("for low ESS or high r_hat alone, run more draws and tuning")
    best = max(good, key=lambda n: np.nan_to_num(ess_per_s(fits[n]), nan=-1.0)) if good else None
    return {"good": good, "bad": bad, "best": best, "advice": advice,
            "best_ess_per_s": ess_per_s(fits[best]) if best else math.nan,
            "compared": comparison is not None and len(good) > 1,
            "passed": bool(getattr(comparison, "passed", False))}


def comparison_view(result) -> dict:
    """The comparison table (one row per form), the recommendation and the check's result."""
    fits, comparison = result.fits, result.comparison
    rows = []
    for name, f in fits.items():
        d = f.diagnostics or {}
        rows.append({"name": name, "seconds": dict(f.seconds or {}),
                     "ess_bulk": d.get("ess_bulk"), "ess_per_s": ess_per_s(f),
                     "divergences": int(d.get("divergences", 0)), "r_hat": d.get("r_hat"),
                     "ok": f.ok, "agreement": agreement(comparison, name, f)})
    check = None
    if comparison is not None:
        table = comparison.table
        check = {"name": comparison.name, "passed": bool(comparison.passed),
                 "text": comparison.text, "columns": [str(c) for c in table.columns],
                 "rows": table.to_dict(orient="records")}
    return {"rows": rows, "recommendation": recommendation(fits, comparison), "check": check}


def headline(post, family, icc: list[dict]) -> list[dict]:
    """The shares each fit is summed up by (the overlay of fits).

    The ICC per outcome or, with several factors, each factor's VPC (``vpc[batch]``, ...; the
    residual's is the rest).
    """
    if icc:
        return [{"label": p["label"], "draws": p["draws"]} for p in icc]
    if "vpc" not in family.summary_vars:
        var = family.headline  # one share per draw (the random slopes' mean-variance VPC)
        scalar = var in post and post[var].dims == ("chain", "draw")
        return [{"label": var, "draws": flat(post[var])}] if scalar else []
    return [{"label": e["label"], "draws": flat(e["da"])} for e in elements(post["vpc"])
            if e["label"] != "vpc[residual]"]


def overlay(views: list[dict]) -> list[dict]:
    """Per headline share (ICC or VPC), each fit's posterior density (``az.kde``, reflected)."""
    import arviz as az

    panels = []
    for j, first in enumerate(views[0]["headline"] if views else []):
        curves = []
        for v in views:
            x = v["headline"][j]["draws"]
            grid, pdf = az.kde(x, custom_lims=(0.0, 1.0))
            curves.append({"name": v["name"], "ok": v["ok"], "grid": grid, "pdf": pdf})
        top = max(float(np.quantile(v["headline"][j]["draws"], 0.995)) for v in views)
        panels.append({"label": first["label"], "curves": curves,
                       "icc": first["label"] == "icc",
                       "top": min(1.0, max(top * 1.05, 0.02))})
    return panels
