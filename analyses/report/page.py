r"""The report page's data: the glance, one view per fit and the whole page, as plain data.

It assembles what :mod:`analyses.report.compute` (numbers of the data, estimates, comparison and
posterior), :mod:`analyses.report.effects` (predictive checks, group effects) and
:mod:`analyses.report.mixed` (the mixed families' sections) compute; those import nothing of it.
"""

from __future__ import annotations

import numpy as np

from varcomp.analyses.report import effects, mixed
from varcomp.analyses.report.compute import (
    BOUNDARY_ICC,
    HDI_PROB,
    boundary,
    comparison_view,
    data_summary,
    design_effects,
    estimate_dicts,
    estimates_table,
    hdi,
    headline,
    icc_marks,
    icc_panels,
    matrices,
    on_boundary,
    overlay,
    params_of,
    ranks,
    sampler,
)
from varcomp.models.sampling import GATE

__all__ = ["fit_view", "glance", "report"]

GLANCE = (("icc", "ICC", ""), ("vpc", "VPC", " (share of variance)"),
          ("tau", "tau", " (between sd)"), ("sigma", "sigma", " (within sd)"))


GLM_SHARES = (
    ("icc", "ICC (latent scale)", "sum tau² / (sum tau² + v), v the distribution-specific "
     "variance on the link scale: π²/3 (logit), 1 (probit), ln(1 + 1/λ) (Poisson, log-normal; "
     "λ = exp(mean linear predictor + sum tau²/2); Nakagawa, Johnson & Schielzeth 2017)."),
    ("icc_trigamma", "ICC (latent, trigamma)", "the same with v = ψ₁(λ), the trigamma "
     "approximation of the Poisson variance."),
    ("icc_data", "ICC (data scale)", "the correlation of two 0/1 trials (or two counts) of one "
     "cluster at the mean linear predictor: Var(p) / (Var(p) + E[p(1 − p)]) over the random "
     "effects (Poisson: Var(λ) / (Var(λ) + E λ))."),
    ("r2_marginal", "R² marginal", "sigma_f² / (sigma_f² + sum tau² + v), sigma_f² = "
     "Var(X beta)."),
    ("r2_conditional", "R² conditional", "(sigma_f² + sum tau²) / (sigma_f² + sum tau² + v)."),
)
"""The shares of a binomial or Poisson fit, each defined in one sentence (link scale)."""


def glm_shares(post, family) -> list[dict]:
    """Posterior mean and 94% HDI of each GLMM share in the posterior, with its definition."""
    out = []
    for var, title, text in GLM_SHARES:
        if var in post and var in family.summary_vars:
            x = post[var].values.reshape(-1)
            out.append({"title": title, "text": text, "mean": float(x.mean()), "hdi": hdi(x)})
    return out


def glance(result, name: str | None) -> dict | None:
    """Headline numbers of fit ``name`` from its parameter table, and the REML ICC."""
    if name is None:
        return None
    params = params_of(result, name)
    cards = []
    for var, title, words in GLANCE:
        if var not in result.family.summary_vars:
            continue
        for row_name, row in params.items():
            if row_name == var or row_name.startswith(var + "["):
                if var == "icc" and "icc_unadjusted" in result.family.summary_vars:
                    words = " (adjusted for the fixed effects)"
                cards.append({"title": title + row_name[len(var):] + words,
                              "mean": row["mean"], "hdi": (row["hdi_low"], row["hdi_high"])})
    reml = estimate_dicts(result.estimates).get("reml") or {}
    card = None
    if reml.get("icc") is not None:
        card = {"icc": float(reml["icc"]), "boundary": on_boundary(reml)}
    return {"name": name, "ok": result.fits[name].ok, "cards": cards, "reml": card}


def fit_view(result, name: str, outcomes: list, *, open_: bool, seed: int = 0) -> dict:
    """Everything one fit's section shows, its figures' data included.

    What is shown follows the family's summary variables: the ICC figure and boundary paragraph
    where it reports ``icc``; the fixed effects, variance shares and correlations of the mixed
    families (:mod:`analyses.report.mixed`) where it reports ``beta``, ``vpc``, ``corr``.
    """
    fit, family = result.fits[name], result.family
    post = fit.idata.posterior
    params = params_of(result, name)
    estimates = result.estimates or {}
    has_icc = "icc" in family.summary_vars
    icc = icc_panels(post, outcomes, params) if has_icc else []
    for p in icc:
        p["boundary"] = boundary(p, estimates if p["outcome"] is None else {})
    scalars = [v for v in family.summary_vars if v not in family.matrices]
    fixed = "beta" in family.summary_vars
    return {
        "name": name, "ok": fit.ok, "open": open_, "diagnostics": dict(fit.diagnostics or {}),
        "seconds": dict(fit.seconds or {}), "settings": dict(fit.settings or {}),
        "params": list(params.items()), "icc": icc,
        "headline": headline(post, family, icc),
        "design": design_effects(post, result.data, outcomes) if has_icc else None,
        "matrices": matrices(post, family.matrices),
        "mixed": mixed.sections(result, post, params),
        "ranks": ranks(post, scalars),
        "sampler": sampler(fit.idata, post, result.family.likelihood),
        "ppc": (effects.ppc_design(post, result.data, family.likelihood, seed) if fixed
                else effects.ppc(post, result.data, outcomes, family.likelihood, seed)),
        "caterpillars": effects.caterpillars(fit.idata, result.data, outcomes),
        "latent": bool(family.form(name).latent) if name in family.forms else True,
        "glm": glm_shares(post, family) if family.likelihood.residual_sd is None else None,
    }


def report(result, reliability: dict | None = None) -> dict:
    """The whole page's data: data summary, estimates, comparison, glance and one view per fit.

    ``reliability``: ``varcomp reliability``'s tables (:meth:`analyses.reliability.Reliability
    .as_dict`), shown as the page's reliability section; None (every other fit) shows none.
    """
    family, fits = result.family, result.fits
    outcomes = list(family.outcomes(result.data))
    comparison = comparison_view(result) if len(fits) > 1 else None
    if comparison is not None:
        best = comparison["recommendation"]["best"]
    else:
        only = next(iter(fits), None)
        best = only if only is not None and fits[only].ok else None
    open_name = best or next(iter(fits), None)
    with np.errstate(all="ignore"):
        views = [fit_view(result, n, outcomes, open_=(n == open_name)) for n in fits]
        if comparison is not None:
            comparison["overlay"] = overlay(views)
        return {
            "family": family, "outcomes": outcomes, "data": data_summary(result.data, family),
            "estimates": dict(result.estimates or {}),
            "estimates_table": estimates_table(result.estimates),
            "marks": icc_marks(result.estimates), "comparison": comparison,
            "glance": glance(result, best or next(iter(fits), None)),
            "fits": views, "skipped": dict(result.skipped or {}), "gate": dict(GATE),
            "reliability": reliability,
            "hdi_prob": HDI_PROB, "hdi_pct": f"{HDI_PROB:.0%}", "boundary_icc": BOUNDARY_ICC,
        }
