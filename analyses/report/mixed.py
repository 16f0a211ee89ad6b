r"""The numbers of the mixed-model families' sections (formula data), as plain data (no HTML).

What a section shows is asked of the family's summary variables and the posterior: the fixed
effects where it reports ``beta``; the variance box of one factor where it reports
``icc_unadjusted`` (adjusted and unadjusted ICC, marginal and conditional R^2, Nakagawa &
Schielzeth 2013); the variance components where it reports ``vpc`` (each factor and the
residual: sd, variance, share); the correlations of rows sharing levels where it reports
``corr``; and, for a crossed design of two factors and their interaction, the gauge R&R reading.
Posterior means and intervals come from summary.json's parameter table where it has the row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace

import numpy as np

from varcomp.analyses.report.compute import (
    BOUNDARY_ICC,
    BOUNDARY_MASS,
    elements,
    estimate_dicts,
    flat,
    hdi,
    on_boundary,
)
from varcomp.models import shares
from varcomp.models.likelihoods import GAUSSIAN, Likelihood

__all__ = ["components", "correlations", "fixed_effects", "gauge", "sections", "variance_box"]

VARIANCE_BOX = (
    ("icc", "ICC (adjusted)", "tau² / (tau² + sigma²): the between-cluster share of the variance "
     "left after the fixed effects."),
    ("icc_unadjusted", "ICC (unadjusted)", "tau² / (sigma_f² + tau² + sigma²), with sigma_f² = "
     "Var(X beta) over the rows: the between-cluster share of the whole variance, fixed "
     "effects included (Nakagawa & Schielzeth 2013)."),
    ("r2_marginal", "R² marginal", "sigma_f² / (sigma_f² + tau² + sigma²): the share of the "
     "variance the fixed effects explain."),
    ("r2_conditional", "R² conditional", "(sigma_f² + tau²) / (sigma_f² + tau² + sigma²): the "
     "share the fixed and the group effects explain together."),
)


def _row(params: Mapping, name: str, draws=None) -> dict:
    """Posterior mean, sd and 94% HDI of ``name``: the parameter table's, else from ``draws``."""
    r = params.get(name)
    if r:
        return {"mean": r["mean"], "sd": r["sd"], "hdi": (r["hdi_low"], r["hdi_high"])}
    if draws is None:
        return {"mean": math.nan, "sd": math.nan, "hdi": (math.nan, math.nan)}
    x = np.asarray(draws, dtype=np.float64)
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)), "hdi": hdi(x)}


def _value(d: Mapping, var: str, key: str | None = None):
    """An estimate's ``var`` (a number, or ``key``'s entry when it is by term/factor)."""
    v = d.get(var)
    if isinstance(v, Mapping):
        return v.get(key)
    return v


# ---------------------------------------------------------------------------- fixed effects
def fixed_effects(post, params: Mapping, ests: Mapping[str, dict]) -> dict:
    """Per term of ``beta``: posterior mean, sd, 94% HDI and the ML/REML estimates beside."""
    rows = []
    for e in elements(post["beta"]):
        term = e["keys"][0]
        rows.append({"term": term, "label": e["label"], **_row(params, e["label"], flat(e["da"])),
                     "est": {k: _value(d, "beta", term) for k, d in ests.items()}})
    slopes = [r for r in rows if r["term"] != "Intercept"]
    return {"rows": rows, "methods": list(ests), "plotted": slopes,
            "intercept_left_out": len(slopes) < len(rows)}


# ---------------------------------------------------------------------------- one factor
def variance_box(result, post, params: Mapping, ests: Mapping[str, dict]) -> dict:
    """Adjusted/unadjusted ICC and marginal/conditional R^2 with intervals and REML values.

    REML's come from its beta, tau, sigma and Var(X beta) over the rows.
    """
    from varcomp.models.lmm import fixed_variance

    reml = ests.get("reml")
    at_reml = {}
    if reml and reml.get("beta") and getattr(result.data, "design", None) is not None:
        terms = [e["keys"][0] for e in elements(post["beta"])]
        b = np.array([reml["beta"].get(t, math.nan) for t in terms])
        sf2 = float(shares.fixed_variance(b, fixed_variance(result.data)))
        t2 = float(reml["tau"]) ** 2
        s2 = float(result.family.likelihood.residual_variance(reml))
        at_reml = {"icc": shares.icc(t2, s2), "icc_unadjusted": shares.icc_unadjusted(t2, s2, sf2),
                   "r2_marginal": shares.r2_marginal(t2, s2, sf2),
                   "r2_conditional": shares.r2_conditional(t2, s2, sf2)}
    rows = [{"var": var, "title": title, "meaning": meaning,
             **_row(params, var, flat(post[var])), "reml": at_reml.get(var)}
            for var, title, meaning in VARIANCE_BOX if var in result.family.summary_vars]
    return {"rows": rows}


# ---------------------------------------------------------------------------- several factors
def components(post, params: Mapping, ests: Mapping[str, dict],
               likelihood: Likelihood = GAUSSIAN) -> dict:
    """Per factor and the residual: sd, variance and VPC with 94% HDIs, and REML's beside.

    The sd is tau[f] (sigma for the residual); also P(VPC < 0.01) and REML's boundary flags.
    """
    parts = [(e, e["keys"][0]) for e in elements(post["tau"])]
    if likelihood.residual_sd is not None:  # the residual's sd (Gaussian: sigma)
        parts.append(({"label": likelihood.residual_sd, "da": post[likelihood.residual_sd]},
                      "residual"))
    reml = ests.get("reml") or {}
    vpc = {e["label"]: e["da"] for e in elements(post["vpc"])}
    rows = []
    for e, name in parts:
        sd = flat(e["da"])
        share = flat(vpc[f"vpc[{name}]"]) if f"vpc[{name}]" in vpc else None
        b = reml.get("boundary")
        rows.append({
            "component": name, "sd_label": e["label"], "sd": _row(params, e["label"], sd),
            "var": _row({}, "", sd * sd), "vpc": _row(params, f"vpc[{name}]", share),
            "p_low": float(np.mean(share < BOUNDARY_ICC)) if share is not None else math.nan,
            "reml_sd": (reml.get(likelihood.residual_sd) if name == "residual"
                        else _value(reml, "tau", name)),
            "reml_vpc": _value(reml, "vpc", name),
            "boundary": bool(b.get(name, False)) if isinstance(b, Mapping) else False})
    return {"rows": rows, "reml": bool(reml),
            "on_boundary": [r["component"] for r in rows if r["boundary"]],
            "near_zero": [(r["component"], r["p_low"]) for r in rows
                          if r["component"] != "residual" and r["p_low"] > BOUNDARY_MASS]}


def correlations(post, params: Mapping, design) -> dict:
    """``corr`` per factor with its HDI and one sentence of what it is.

    Nested (coarsest first): rows in the same level of every factor down to f, different below.
    Crossed: rows at the same level of f and different levels of the others; for an interaction
    (``a:b``) rows of one cell also share a and b, whose shares add up (their correlation is
    shown beside).
    """
    names = [f.name for f in design.factors]
    vpc = {e["label"]: flat(e["da"]) for e in elements(post["vpc"])}
    rows = []
    for i, e in enumerate(elements(post["corr"])):
        f = e["keys"][0]
        r = _row(params, e["label"], flat(e["da"]))
        implied = None
        if design.nested:
            below = names[i + 1] if i + 1 < len(names) else None
            words = (f"two rows in the same {f} but different {below} correlate"
                     if below else f"two rows in the same {f} correlate")
        else:
            others = [n for n in names if n != f]
            own = set(f.split(":"))
            apart = [n for n in others if not own <= set(n.split(":"))]  # a:b differs with b
            words = (f"two rows at the same level of {f} and different levels of "
                     f"{' and '.join(apart)} correlate")
            inside = [n for n in others if set(n.split(":")) <= own]
            if inside:  # the rows of one cell of f share these factors' levels as well
                x = vpc[f"vpc[{f}]"] + sum(vpc[f"vpc[{n}]"] for n in inside)
                implied = {"mean": float(x.mean()), "hdi": hdi(x)}
                words = (f"two rows in the same {f} cell share {' and '.join(inside)} as well "
                         f"and correlate")
        rows.append({"label": e["label"], "factor": f, "words": words, **r,
                     "implied": implied})
    deff = _row(params, "deff", flat(post["deff"])) if "deff" in post else None
    return {"rows": rows, "nested": bool(design.nested), "deff": deff}


def gauge(post, design) -> dict | None:
    """The gauge R&R reading of ``(1|part) + (1|operator) + (1|part:operator)``.

    Part-to-part, repeatability (residual), reproducibility (operator and operator:part) and
    gauge R&R as % of the total variance, with 94% HDIs.

    The part is the first single-variable factor of the formula. None for other designs.
    """
    if design.nested:
        return None
    single = [f.name for f in design.factors if ":" not in f.name]
    pairs = [f.name for f in design.factors if ":" in f.name]
    if len(single) != 2 or len(pairs) != 1 or set(pairs[0].split(":")) != set(single):
        return None
    part, operator = single
    vpc = {e["label"]: flat(e["da"]) for e in elements(post["vpc"])}
    shares = {"part": vpc[f"vpc[{part}]"], "repeat": vpc["vpc[residual]"],
              "reprod": vpc[f"vpc[{operator}]"] + vpc[f"vpc[{pairs[0]}]"]}
    shares["grr"] = shares["repeat"] + shares["reprod"]
    rows = []
    for key, title in (("part", f"part-to-part ({part})"),
                       ("grr", "gauge R&R (repeatability + reproducibility)"),
                       ("repeat", "repeatability (residual)"),
                       ("reprod", f"reproducibility ({operator} and {pairs[0]})")):
        x = 100.0 * shares[key]
        lo, hi = hdi(x)
        rows.append({"key": key, "title": title, "mean": float(x.mean()), "hdi": (lo, hi)})
    with np.errstate(all="ignore"):
        ndc = 1.41 * np.sqrt(shares["part"] / shares["grr"])
    return {"part": part, "operator": operator, "interaction": pairs[0], "rows": rows,
            "ndc": {"mean": float(np.mean(ndc)), "hdi": hdi(ndc)},
            "grr_sv": float(np.mean(100.0 * np.sqrt(shares["grr"])))}


def sections(result, post, params: Mapping) -> dict | None:
    """Every mixed-family section of one fit (None where the family does not report them)."""
    have = set(result.family.summary_vars)
    if "beta" not in have:
        return None
    ests = estimate_dicts(result.estimates)
    design = getattr(result.data, "design", None)
    several = "vpc" in have
    return {
        "fixed": fixed_effects(post, params, ests),
        "box": variance_box(result, post, params, ests) if "icc_unadjusted" in have else None,
        "components": (components(post, params, ests, result.family.likelihood) if several
                       else None),
        "corr": (correlations(post, params, design)
                 if "corr" in have and design is not None else None),
        "gauge": gauge(post, design) if several and design is not None else None,
        "boundary": {k.upper(): on_boundary(d) for k, d in ests.items()},
        "curve": icc_curve(post, result),
    }


def icc_curve(post, result) -> dict | None:
    """The ICC as a function of the slope column (posterior ``icc_curve``, dim ``x``), if any.

    Per grid point the posterior mean and the 3% and 97% quantiles (the 94% band); ``table``:
    the family's rows at the column's min, quartiles and max (summary.json's ``icc_curve``).
    """
    if "icc_curve" not in post:
        return None
    da = post["icc_curve"]
    x = np.asarray(da["x"].values, dtype=np.float64)
    G = np.asarray(da.values, dtype=np.float64).reshape(-1, x.size)
    lo, hi = np.quantile(G, [0.03, 0.97], axis=0)
    design = result.data.design
    column = next(c for t in design.random for c in t.columns if c != "Intercept")
    tables = result.family.fit_tables
    rows = (tables(SimpleNamespace(posterior=post), result.data).get("icc_curve", [])
            if tables is not None else [])
    return {"x": x, "mean": G.mean(axis=0), "lo": lo, "hi": hi, "column": column,
            "rows": rows}
