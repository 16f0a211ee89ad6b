"""The HTML report on fake posteriors and the notes' figures (fast tier: no MCMC)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from varcomp.analyses.fit import FitResult, summarise
from varcomp.analyses.report import render_report, write_report
from varcomp.models import family_of, load
from varcomp.models.checks.base import AGREES, UNRELIABLE, CheckResult
from varcomp.models.data import ClusteredData
from varcomp.models.sampling import Fit, diagnose

IMG = '<img alt="'
DATA_URI = 'src="data:image/png;base64,'
SECTIONS = ("At a glance", "Data", "One-way ANOVA", "ML and REML estimates", "Parameters",
            "Intra-class correlation", "Design effect and reliability of cluster means",
            "Sampler diagnostics", "Posterior predictive check", "Group effects")
FORMS = ("centred", "noncentred", "marginal", "sufficient")
PAYLOADS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
REPORT = Path(__file__).resolve().parents[1] / "analyses" / "report"


def fake_fit(data: ClusteredData, name: str = "sufficient", *, tau: float = 25.0,
             sigma: float = 50.0, chains: int = 2, draws: int = 300, divergent: int = 0,
             seed: int = 0) -> Fit:
    """A one-way Fit whose posterior is drawn from a rough normal approximation (no sampling)."""
    rng = np.random.default_rng(seed)
    mu0 = float(data.y[:, 0].mean())
    t = np.abs(rng.normal(tau, 0.4 * tau + 1e-9, (chains, draws)))
    s = np.abs(rng.normal(sigma, 0.1 * sigma, (chains, draws)))
    L = data.n_groups
    post = {"mu": rng.normal(mu0, 10.0, (chains, draws)), "tau": t, "sigma": s,
            "icc": t**2 / (t**2 + s**2),
            "group_effect": t[..., None] * rng.standard_normal((chains, draws, L))}
    div = np.zeros((chains, draws), dtype=bool)
    div.flat[rng.choice(div.size, divergent, replace=False)] = True
    stats = {"diverging": div, "energy": rng.normal(0, 1, (chains, draws)),
             "depth": rng.integers(1, 5, (chains, draws))}
    idata = az.from_dict(posterior=post, sample_stats=stats, dims={"group_effect": ["group"]},
                         coords={"group": [str(g) for g in data.groups]})
    seconds = {"build": 0.01, "compile": 2.0, "sample": 0.5, "total": 2.6}
    settings = {"sampler": "fake", "chains": chains, "draws": draws, "tune": 0, "seed": seed}
    return Fit(name, idata, seconds, settings, diagnose(idata, family_of(data).summary_vars))


def fake_mv_fit(data: ClusteredData, name: str = "sufficient", *, chains: int = 2,
                draws: int = 200, seed: int = 1) -> Fit:
    """A multivariate Fit: mu/tau/sigma/icc per outcome, V, Sigma and both correlations."""
    rng = np.random.default_rng(seed)
    out = list(data.responses)
    p, L = len(out), data.n_groups
    shape = (chains, draws)
    tau = np.abs(rng.normal(3.0, 0.3, (*shape, p)))
    sigma = np.abs(rng.normal(6.0, 0.2, (*shape, p)))
    rb = np.clip(rng.normal(0.5, 0.05, shape), -0.99, 0.99)
    rw = np.clip(rng.normal(0.3, 0.03, shape), -0.99, 0.99)

    def corr(r):
        c = np.ones((*shape, p, p))
        c[..., 0, 1] = c[..., 1, 0] = r
        return c

    cb, cw = corr(rb), corr(rw)
    V = cb * tau[..., :, None] * tau[..., None, :]
    Sig = cw * sigma[..., :, None] * sigma[..., None, :]
    post = {"mu": rng.normal(np.nanmean(data.y, axis=0), 0.5, (*shape, p)), "tau": tau,
            "sigma": sigma, "icc": tau**2 / (tau**2 + sigma**2), "V": V, "Sigma": Sig,
            "corr_between": cb, "corr_within": cw,
            "group_effect": tau[..., None, :] * rng.standard_normal((*shape, L, p))}
    mat = ["outcome", "outcome_bis"]
    dims = {"mu": ["outcome"], "tau": ["outcome"], "sigma": ["outcome"], "icc": ["outcome"],
            "V": mat, "Sigma": mat, "corr_between": mat, "corr_within": mat,
            "group_effect": ["group", "outcome"]}
    idata = az.from_dict(
        posterior=post, dims=dims,
        sample_stats={"diverging": np.zeros(shape, dtype=bool),
                      "energy": rng.normal(0, 1, shape)},
        coords={"outcome": out, "outcome_bis": out, "group": [str(g) for g in data.groups]})
    return Fit(name, idata, {"build": 0.1, "compile": 20.0, "sample": 3.0, "total": 23.1},
               {"sampler": "fake", "chains": chains, "draws": draws},
               diagnose(idata, family_of(data).summary_vars))


def fake_comparison(fits: dict[str, Fit], passed: bool = True) -> CheckResult:
    """A check result shaped like ``models.checks.compare_posteriors``'s."""
    status = {n: AGREES if f.ok else UNRELIABLE for n, f in fits.items()}
    table = pd.DataFrame({"a": list(fits), "b": "reference", "param": "icc", "stat": "mean",
                          "z": np.linspace(0.5, 2.0, len(fits)),
                          "verdict": ["ok" if f.ok else "not judged" for f in fits.values()]})
    return CheckResult("compare_posteriors", passed, table,
                       "every reliable pair agrees within 4 MCSE", {"status": status})


def fake_result(data: ClusteredData, fits: dict[str, Fit], *, comparison=None,
                skipped=None) -> FitResult:
    """A FitResult as analyses.fit.fit makes it (family, estimates, summary.json) around fakes."""
    family = family_of(data)
    estimates = family.estimates(data) if family.estimates else {}
    result = FitResult(data, family, fits, estimates, comparison, skipped=dict(skipped or {}))
    result.summary = summarise(result)
    return result


def dyestuff_result(forms=("sufficient",), **kwargs) -> FitResult:
    """Dyestuff with fake fits of the given forms (centred with 7 divergences)."""
    data = load("dyestuff")
    fits = {n: fake_fit(data, n, divergent=7 if n == "centred" else 0, seed=i, **kwargs)
            for i, n in enumerate(forms)}
    return fake_result(data, fits, comparison=fake_comparison(fits) if len(fits) > 1 else None)


def hostile_data(responses: int = 1) -> ClusteredData:
    """Data whose group column, group labels and response names are HTML/JS payloads."""
    rng = np.random.default_rng(3)
    labels = [PAYLOADS[0], PAYLOADS[1], "plain"]
    group = np.repeat(labels, 5)
    names = [PAYLOADS[1], PAYLOADS[0] + " 2"][:responses]
    frame = pd.DataFrame({PAYLOADS[0]: group})
    for r in names:
        frame[r] = rng.normal(size=group.size) + np.repeat([0.0, 1.0, 2.0], 5)
    return ClusteredData.from_frame(frame, group=PAYLOADS[0], response=names,
                                    source="<b>hostile</b>.csv")


def external_refs(page: str) -> list[str]:
    """Every src/href that leaves the page (http(s), protocol-relative, file, ...)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    return [r for r in refs if not (r.startswith("#") or r.startswith("data:image/png;base64,"))]


@pytest.fixture(scope="module")
def one_fit_page() -> str:
    return render_report(dyestuff_result())


@pytest.fixture(scope="module")
def four_fit_page() -> str:
    return render_report(dyestuff_result(FORMS))


@pytest.fixture(scope="module")
def mv_page() -> str:
    data = load("gcsemv")
    return render_report(fake_result(data, {"sufficient": fake_mv_fit(data)},
                                     skipped={"marginal": "68 blocks"}))


def test_single_fit_is_self_contained_and_complete(one_fit_page):
    """One fit gives a page with every section, only embedded PNGs and no external links."""
    page = one_fit_page
    assert page.startswith("<!DOCTYPE html>")
    assert external_refs(page) == []
    assert "http://" not in page and "https://" not in page
    for heading in SECTIONS:
        assert heading in page, heading
    assert page.count(IMG) == page.count(DATA_URI) >= 5
    assert "Parameterisation comparison" not in page
    assert '<style>/*' in page and '"Segoe UI"' in page  # our style sheet, inlined unescaped


def test_external_reference_detector_catches_links():
    """The self-containment check itself can fail: it flags http(s), protocol-relative and file
    references and a non-PNG data URI, and lets anchors and embedded PNGs through."""
    page = ('<img src="http://x/a.png"><link href="https://cdn/x.css"><script src="//cdn/x.js">'
            '<a href="file:///tmp/a">a</a><img src="data:image/svg+xml;base64,AA">'
            '<a href="#data">ok</a><img src="data:image/png;base64,AAAA">')
    assert len(external_refs(page)) == 5


def test_the_parameter_table_is_summary_json_s():
    """The page shows summary.json's parameter numbers, not a second computation: a number
    planted in the summary appears, formatted, in the table's row."""
    result = dyestuff_result()
    result.summary["fits"]["sufficient"]["params"]["mu"] = {
        "mean": 1234.5678, "sd": 1.0, "hdi_low": 1200.0, "hdi_high": 1300.0, "ess_bulk": 999.0,
        "ess_tail": 888.0, "r_hat": 1.0, "mcse_mean": 0.1}
    page = render_report(result)
    assert "<td>mu</td><td>1,235</td>" in page.replace(' class="l"', "")
    assert "[1,200, 1,300]" in page


def test_four_fits_have_comparison_and_many_images(four_fit_page):
    """Four fits: >= 8 embedded images, the comparison table and a sentence naming what to trust."""
    page = four_fit_page
    assert external_refs(page) == []
    assert "http://" not in page and "https://" not in page
    assert page.count(DATA_URI) >= 8
    assert page.count(IMG) == page.count(DATA_URI)
    assert "Parameterisation comparison" in page
    assert "ESS bulk / s" in page
    # the fake centred fit has 7 divergences: it must be named as not to be used
    assert "Trust noncentred, marginal, sufficient" in page
    assert "Do not use centred (7 divergent transitions" in page
    assert "every reliable pair agrees within 4 MCSE" in page
    assert "All 4 comparisons" in page
    for heading in SECTIONS:
        assert heading in page, heading
    # one section per fit, the recommended (most efficient passing) one open
    assert len(re.findall(r"<details id=\"fit-\w+\" open>", page)) == 1


def test_no_trusted_form_says_so_and_gives_advice():
    """When every form fails the gate the page trusts none and names the remedy."""
    data = load("dyestuff")
    fits = {n: fake_fit(data, n, divergent=2, seed=i) for i, n in enumerate(FORMS[:2])}
    page = render_report(fake_result(data, fits, comparison=fake_comparison(fits, False)))
    assert "No form passed the diagnostics gate" in page
    assert "raise target_accept" in page
    assert "Trust " not in page


def test_boundary_case_reports_p_icc_below_001():
    """Dyestuff2 has its ML/REML estimate at tau = 0: the page states P(ICC < 0.01) and the
    boundary in words, without lme4's 'singular fit' wording."""
    data = load("dyestuff2")
    fit = fake_fit(data, tau=0.3, sigma=3.7)
    result = fake_result(data, {"sufficient": fit})
    assert result.estimates["reml"].boundary
    page = render_report(result)
    icc = fit.idata.posterior["icc"].values.ravel()
    p = float(np.mean(icc < 0.01))
    assert p > 0.05
    assert f"P(ICC &lt; 0.01) = <b>{p:.3f}</b>" in page
    assert "on the boundary tau = 0" in page
    assert "The ML and REML estimates are on the boundary" in page
    assert "singular" not in page.lower()


def test_interior_case_does_not_raise_the_boundary_alarm():
    """Dyestuff's REML estimate is interior and the fake posterior sits far from ICC = 0: no
    boundary banner, just the (small) probability."""
    result = dyestuff_result(tau=40.0)
    assert not result.estimates["reml"].boundary
    page = render_report(result)
    assert "on the boundary tau = 0" not in page
    assert "keeps away from the boundary" in page


def test_design_effect_matches_kish_formula(one_fit_page):
    """Dyestuff is balanced (n = 5): the design effect's posterior mean is 1 + 4 E[ICC]."""
    result = dyestuff_result()
    icc = result.fits["sufficient"].idata.posterior["icc"].values.ravel()
    assert f"<td>{1 + 4 * icc.mean():.3f}</td>" in one_fit_page  # 4 significant digits


def test_multivariate_fake_shows_matrices_per_outcome(mv_page):
    """A bivariate posterior renders per-outcome ICCs, the family's V, Sigma and correlation
    matrices, both ANOVAs and the skipped form; the one-way-only parts (ML/REML) are absent."""
    page = mv_page
    assert external_refs(page) == []
    for text in ("V: between-cluster covariance", "Sigma: within-cluster covariance",
                 "between-cluster correlation", "within-cluster correlation",
                 "icc[written]", "icc[course]", "corr_between[written,course]",
                 "One-way ANOVA: written", "One-way ANOVA: course",
                 "Not fitted: marginal, because 68 blocks", "multivariate one-way"):
        assert text in page, text
    assert "ML and REML estimates" not in page
    assert page.count(DATA_URI) >= 5


def test_failed_fit_gets_a_red_banner():
    """A fit with divergences is flagged in red with its problem listed."""
    data = load("dyestuff")
    page = render_report(fake_result(data, {"centred": fake_fit(data, "centred", divergent=3)}))
    assert 'class="banner bad"' in page
    assert "3 divergent transitions" in page


def test_many_groups_use_the_rao_blackwellised_effects():
    """Without group_effect draws (many groups) the caterpillar plot uses models.effects'
    posterior means and sds, with intervals mean -/+ 1.88 sd, and says so."""
    import xarray as xr

    from varcomp.models.effects import SUMMARY_GROUP

    data = load("dyestuff")
    fit = fake_fit(data)
    post = fit.idata.posterior
    mean, sd = post["group_effect"].mean(("chain", "draw")), post["group_effect"].std(
        ("chain", "draw"))
    fit.idata.posterior = post.drop_vars("group_effect")
    fit.idata.add_groups({SUMMARY_GROUP: xr.Dataset({"mean": mean, "sd": sd})})
    page = render_report(fake_result(data, {"sufficient": fit}))
    assert "with intervals mean ± 1.88 sd" in page
    assert "Rao-Blackwellised" in page
    assert page.count(IMG) == page.count(DATA_URI) >= 5


def test_no_fits_still_renders_and_names_skipped_forms():
    """A result without fits (every form skipped) gives a page that says so."""
    data = load("gcsemv")
    page = render_report(fake_result(data, {}, skipped={"marginal": "68 blocks"}))
    assert "Not fitted: marginal" in page and "No fits." in page


@pytest.mark.parametrize("responses", [1, 2])
def test_user_text_is_escaped(responses):
    """Column names, group labels, response names and the file name holding markup appear only
    escaped: the page contains no raw payload, and the escaped forms are there."""
    data = hostile_data(responses)
    fits = {"sufficient": (fake_fit(data, sigma=1.0, tau=1.0) if responses == 1
                           else fake_mv_fit(data))}
    page = render_report(fake_result(data, fits))
    for raw in (*PAYLOADS, "<b>hostile</b>"):
        assert raw not in page, raw
    assert escape(PAYLOADS[0]) in page  # the group column
    assert escape(PAYLOADS[1]) in page  # the response
    assert "&lt;b&gt;hostile&lt;/b&gt;" in page
    assert "onerror=alert(1)>" not in page and "<script" not in page


def test_write_report_leaves_no_pyplot_figures(tmp_path):
    """write_report writes the page and draws without pyplot (no figure left open)."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = write_report(tmp_path / "r" / "report.html", dyestuff_result(("marginal",)))
    assert path.read_text(encoding="utf-8").count(DATA_URI) >= 5
    assert plt.get_fignums() == before


def test_icc_figure_for_the_docs():
    """docs/make_icc_figure.py's entry point: a Figure with one panel per outcome."""
    from matplotlib.figure import Figure

    from varcomp.analyses.report import icc_figure

    result = dyestuff_result()
    fig = icc_figure(result.fits["sufficient"], result.estimates, width=6.4)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    gcsemv = load("gcsemv")
    mv = icc_figure(fake_mv_fit(gcsemv), outcomes=family_of(gcsemv).outcomes(gcsemv))
    assert len(mv.axes) == 2


def test_report_asks_the_family_and_keeps_one_table():
    """The report tests nothing about the kind of data (no `.p ==`, no `"V" in`, no dims of the
    ICC), has no HDI routine of its own and does not call az.summary (summary.json's table is
    the one table); its HDI level is the table's."""
    from varcomp.analyses import fit
    from varcomp.analyses.report import compute

    assert compute.HDI_PROB == fit.HDI_PROB
    family = re.compile(r"\.p\s*(==|!=|>=|<=|>|<)\s*\d|[\"']V[\"']\s+in\s|\.ndim\b|\"icc\"\]\.dims")
    for path in REPORT.glob("*.py"):
        text = path.read_text()
        assert not family.search(text), path.name
        assert not re.search(r"az\.summary\(|np\.argmin", text), path.name
        names = {n.name for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef)}
        assert not {"_hdi", "_hdi_columns"} & names, path.name
        assert sum(1 for _ in path.open()) < 600, path.name


def test_make_figures_writes_pngs_and_correlations_match_theory(tmp_path):
    """The pairs simulation's 15 sample correlations lie within 4 Monte Carlo standard errors,
    (1 - rho^2)/sqrt(1000), of theory (0.8 within a cluster, 0 between): by Bonferroni over 15
    near-normal z-scores this fails with probability about 1e-3 when the model is right."""
    from varcomp.analyses.figures import make_figures

    paths = make_figures(tmp_path)
    names = {p.name for p in paths}
    for png in ("histogram.png", "bivariate.png", "pairs.png"):
        assert png in names
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((tmp_path / "pairs_correlation.json").read_text())
    corr, theory, se = (np.asarray(res[k]) for k in ("correlation", "theory", "mc_se"))
    off = ~np.eye(6, dtype=bool)
    assert np.allclose(theory[off][theory[off] > 0], 0.8)
    assert np.allclose(se[theory == 0.8], (1 - 0.64) / np.sqrt(1000))
    assert np.all(np.abs(corr[off] - theory[off]) <= 4 * se[off])
    # power: the same check rejects a wrong theory, tau / (sigma + tau) = 2/3 within clusters
    wrong = np.where(theory == 0.8, 2.0 / 3.0, theory)
    assert np.any(np.abs(corr[off] - wrong[off]) > 4 * se[off])


def test_bivariate_figure_uses_the_positive_definite_v():
    """ERRATA item 1: the figure uses V = [[4, 3], [3, 4]]; the printed [[2, 3], [3, 4]]
    (determinant -1) is refused by the simulator's check."""
    from varcomp.analyses.figures import BIVARIATE
    from varcomp.models.simulate_mv import check_pd

    check_pd(BIVARIATE["V"], "V")
    with pytest.raises(ValueError, match="not positive definite"):
        check_pd([[2, 3], [3, 4]], "V")


# ---------------------------------------------------------------------------- mixed families
HOSTILE_X, HOSTILE_PART = "<b>x</b>", "<i>part</i>"


def fake_mixed_fit(data: ClusteredData, name: str = "sufficient", *, chains: int = 2,
                   draws: int = 150, seed: int = 0) -> Fit:
    """A Fit of a formula's family drawn around REML (no sampling), completed as
    ``analyses.fit.fit`` completes a sampled one: group effects (``u_<factor>`` draws for the
    latent forms, the family's ``add_effects`` otherwise) and the family's derived quantities."""
    from varcomp.models.forms.mixed import effect_names

    family = family_of(data)
    rng = np.random.default_rng(seed)
    reml = family.estimates(data)["reml"].as_dict()
    design = data.design
    terms, factors = list(design.terms), [f.name for f in design.factors]
    shape = (chains, draws)
    b0 = np.array([reml["beta"][t] for t in terms])
    tau0 = np.atleast_1d([reml["tau"]] if len(factors) == 1 else
                         [reml["tau"][f] for f in factors]).astype(float)
    tau = np.abs(rng.normal(tau0 + 0.05, 0.2 * tau0 + 0.05, (*shape, tau0.size)))
    post = {"beta": rng.normal(b0, 0.05 * np.abs(b0) + 0.01, (*shape, b0.size)),
            "tau": tau[..., 0] if len(factors) == 1 else tau,
            "sigma": np.abs(rng.normal(reml["sigma"], 0.05 * reml["sigma"], shape))}
    dims = {"beta": ["term"], "tau": [] if len(factors) == 1 else ["factor"]}
    coords = {"term": terms, "factor": factors}
    latent = family.form(name).latent
    if latent:
        for d, (var, dim) in enumerate(effect_names(data)):
            f = design.factors[d]
            post[var] = tau[..., d, None] * rng.standard_normal((*shape, f.m))
            dims[var] = [dim]
            coords[dim] = [str(x) for x in f.levels]
    stats = {"diverging": np.zeros(shape, dtype=bool), "energy": rng.normal(0, 1, shape)}
    idata = az.from_dict(posterior=post, sample_stats=stats, dims=dims, coords=coords)
    if not latent:
        family.add_effects(idata, data, seed)
    family.derive(idata, data, family.likelihood)
    return Fit(name, idata, {"build": 0.01, "compile": 1.0, "sample": 0.2, "total": 1.3},
               {"sampler": "fake", "chains": chains, "draws": draws},
               diagnose(idata, family.summary_vars))


def hostile_regression_data() -> ClusteredData:
    """A covariate named ``<b>x</b>`` and cluster labels that are HTML/JS payloads."""
    from varcomp.models.design import from_formula

    rng = np.random.default_rng(5)
    g = np.repeat([PAYLOADS[0], PAYLOADS[1], "plain", "four", "five"], 8)
    x = rng.normal(size=g.size)
    y = 0.7 * x + np.repeat(rng.normal(0, 1.0, 5), 8) + rng.normal(0, 0.5, g.size)
    frame = pd.DataFrame({"y": y, HOSTILE_X: x, "g": g})
    return from_formula(frame, f"y ~ `{HOSTILE_X}` + (1|g)", source="<b>hostile</b>.csv")


def gauge_data() -> ClusteredData:
    """A balanced gauge study: 10 parts x 3 operators x 2 repeats, the part column named in
    markup, ``y ~ 1 + (1|part) + (1|op) + (1|part:op)``."""
    from varcomp.models.design import from_formula

    rng = np.random.default_rng(6)
    part = np.repeat(np.arange(10), 6)
    op = np.tile(np.repeat(["A", "B", "C"], 2), 10)
    y = (np.repeat(rng.normal(0, 2.0, 10), 6) + np.tile(np.repeat(rng.normal(0, 0.5, 3), 2), 10)
         + rng.normal(0, 0.4, 60))
    frame = pd.DataFrame({"y": y, HOSTILE_PART: part.astype(str), "op": op})
    p = f"`{HOSTILE_PART}`"
    return from_formula(frame, f"y ~ 1 + (1|{p}) + (1|op) + (1|{p}:op)", source="gauge.csv")


def mixed_result(data: ClusteredData, forms=("sufficient",)) -> FitResult:
    fits = {n: fake_mixed_fit(data, n, seed=i) for i, n in enumerate(forms)}
    return fake_result(data, fits, comparison=fake_comparison(fits) if len(fits) > 1 else None)


@pytest.fixture(scope="module")
def radon_result() -> FitResult:
    return mixed_result(load("radon", formula="log.radon ~ basement + uranium + (1|county)"))


@pytest.fixture(scope="module")
def pastes_page() -> str:
    return render_report(mixed_result(load("pastes", formula="strength ~ 1 + (1|batch/cask)"),
                                      ("centred", "sufficient")))


@pytest.fixture(scope="module")
def penicillin_page() -> str:
    data = load("penicillin", formula="diameter ~ 1 + (1|plate) + (1|sample)")
    return render_report(mixed_result(data, ("noncentred", "sufficient")))


def test_vectors_give_scalar_panels_not_a_crash(radon_result):
    """beta has a `term` dim: the rank and pair plots take its elements by name (beta[basement]),
    at most 3 per vector and 12 in all, the first element of every variable first."""
    from varcomp.analyses.report import compute

    post = radon_result.fits["sufficient"].idata.posterior
    labels = [p["label"] for p in compute.ranks(post, list(radon_result.family.summary_vars))]
    assert labels[:3] == ["beta[Intercept]", "beta[basement]", "beta[uranium]"]
    assert {"tau", "sigma", "icc", "icc_unadjusted", "r2_marginal"} <= set(labels)
    many = compute.scalar_picks(post, ["beta", "tau", "sigma"], per_var=2, limit=3)
    assert [e["label"] for e in many] == ["beta[Intercept]", "tau", "sigma"]
    pairs = compute.sampler(radon_result.fits["sufficient"].idata, post)["pairs"]
    assert [(p["x_label"], p["y_label"]) for p in pairs] == [("tau", "sigma")]


def test_regression_report_has_fixed_effects_and_the_variance_box(radon_result):
    """A random-intercept regression: the formula in the data section (no one-way ANOVA), the
    fixed-effects table with REML and ML beside the posterior, the coefficient plot, the box of
    adjusted/unadjusted ICC and R^2 with their definitions, and the ICC figure (adjusted)."""
    page = render_report(radon_result)
    assert external_refs(page) == []
    for text in ("log.radon ~ basement + uranium + (1|county)", "one grouping factor (county)",
                 "Fixed effects", "<td>basement</td>", "<td>uranium</td>",
                 "fixed effects, sufficient", "Intra-class correlation and R²",
                 "ICC (unadjusted)", "R² marginal", "R² conditional", "Nakagawa &amp; Schielzeth",
                 "tau² / (tau² + sigma²)", "<h3>Intra-class correlation</h3>", "ICC posterior",
                 "beta[uranium]", "caterpillar plot of the county effects",
                 "ML and REML estimates"):
        assert text in page.replace(' class="l"', ""), text
    assert "One-way ANOVA" not in page
    assert "ICC without covariates" not in page
    assert page.count(IMG) == page.count(DATA_URI) >= 6


def test_regression_variance_box_matches_its_definitions(radon_result):
    """Per draw, R^2 conditional - R^2 marginal = tau^2 / total = the unadjusted ICC; at REML the
    box's adjusted ICC is MixedEstimate's tau^2 / (tau^2 + sigma^2); the fixed-effects table
    shows summary.json's beta and REML's."""
    from varcomp.analyses.report import compute, mixed

    post = radon_result.fits["sufficient"].idata.posterior
    params = compute.params_of(radon_result, "sufficient")
    ests = compute.estimate_dicts(radon_result.estimates)
    np.testing.assert_allclose(post["r2_conditional"] - post["r2_marginal"],
                               post["icc_unadjusted"], rtol=1e-12)
    box = {r["var"]: r for r in mixed.variance_box(radon_result, post, params, ests)["rows"]}
    assert box["icc"]["reml"] == pytest.approx(ests["reml"]["icc"], rel=1e-12)
    assert box["r2_conditional"]["reml"] - box["r2_marginal"]["reml"] == pytest.approx(
        box["icc_unadjusted"]["reml"], rel=1e-9)
    assert box["icc"]["mean"] == params["icc"]["mean"]
    fixed = mixed.fixed_effects(post, params, ests)
    row = next(r for r in fixed["rows"] if r["term"] == "uranium")
    assert row["mean"] == params["beta[uranium]"]["mean"]
    assert row["est"]["reml"] == ests["reml"]["beta"]["uranium"]
    assert [r["term"] for r in fixed["plotted"]] == ["basement", "uranium"]


def test_nested_report_has_components_vpc_and_correlations(pastes_page):
    """Nested (batch/cask): components table with REML beside, the VPC figure in place of the
    ICC figure, the correlations with their meaning, the design in the data section; the
    sufficient form's top-level effects and the latent form's effects of both factors."""
    page = pastes_page
    assert external_refs(page) == []
    for text in ("strength ~ 1 + (1|batch/cask)", "nested: batch ⊃ batch:cask",
                 "Variance components", "REML VPC", "variance shares, sufficient",
                 "Correlation of rows sharing levels",
                 "Two rows in the same batch but different batch:cask correlate r =",
                 "Two rows in the same batch:cask correlate r =", "vpc[residual]",
                 "caterpillar plot of the batch effects, sufficient",
                 "caterpillar plot of the batch:cask effects, centred",
                 "variance share (VPC) posteriors of all parameterisations"):
        assert text in page, text
    assert "<h3>Intra-class correlation</h3>" not in page
    assert "<h3>Design effect and reliability" not in page and "One-way ANOVA" not in page
    assert "Design effect of a mean over all rows" in page  # the several-factor one
    assert "Measurement system" not in page


def test_components_shares_sum_to_one_and_match_reml():
    """The VPC column of the components table sums to 1 (posterior means, and REML's), and its
    REML entries are MixedEstimate's vpc."""
    from varcomp.analyses.report import compute, mixed

    result = mixed_result(load("pastes", formula="strength ~ 1 + (1|batch/cask)"))
    post = result.fits["sufficient"].idata.posterior
    ests = compute.estimate_dicts(result.estimates)
    comp = mixed.components(post, compute.params_of(result, "sufficient"), ests)
    assert [r["component"] for r in comp["rows"]] == ["batch", "batch:cask", "residual"]
    assert sum(r["vpc"]["mean"] for r in comp["rows"]) == pytest.approx(1.0, abs=1e-9)
    assert [r["reml_vpc"] for r in comp["rows"]] == [ests["reml"]["vpc"][c] for c in
                                                     ("batch", "batch:cask", "residual")]


def test_crossed_report_without_group_effects_says_so(penicillin_page):
    """Crossed (plate x sample): the closed form has no group effects and the page says so;
    the latent form has one caterpillar per factor; no gauge reading without an interaction."""
    page = penicillin_page
    for text in ("crossed: plate × sample", "No group effects for this form",
                 "caterpillar plot of the plate effects, noncentred",
                 "caterpillar plot of the sample effects, noncentred",
                 "Two rows at the same level of plate and different levels of sample correlate",
                 "boundary[plate]"):
        assert text in page, text
    assert "Measurement system" not in page


def test_gauge_reading_and_escaping_of_factor_names():
    """part x operator with interaction: the gauge R&R reading names the first factor as the
    part, its shares (part + gauge R&R) add up to 100% of the variance; the factor named in
    markup appears only escaped."""
    from varcomp.analyses.report import mixed

    data = gauge_data()
    result = mixed_result(data, ("noncentred",))
    g = mixed.gauge(result.fits["noncentred"].idata.posterior, data.design)
    share = {r["key"]: r["mean"] for r in g["rows"]}
    assert g["part"] == HOSTILE_PART and g["operator"] == "op"
    assert share["part"] + share["grr"] == pytest.approx(100.0, abs=1e-9)
    assert share["grr"] == pytest.approx(share["repeat"] + share["reprod"], abs=1e-9)
    page = render_report(result)
    assert "Measurement system (gauge R&amp;R)" in page and "% of total variance" in page
    assert f"<b>{escape(HOSTILE_PART)}</b>, the first factor of the formula" in page
    assert HOSTILE_PART not in page and "<i>" not in page
    assert "shares op as well" not in page  # no interaction sentence for single factors
    assert f"{escape(HOSTILE_PART)}:op cell share {escape(HOSTILE_PART)} and op" in page


def test_hostile_covariate_and_labels_are_escaped():
    """A covariate column `<b>x</b>` (through formulae, backquoted) and cluster labels holding
    markup reach the page only escaped."""
    data = hostile_regression_data()
    assert HOSTILE_X in data.design.terms
    page = render_report(mixed_result(data, ("centred",)))
    for raw in (*PAYLOADS, HOSTILE_X, "<b>hostile</b>"):
        assert raw not in page, raw
    assert f"<td>{escape(HOSTILE_X)}</td>" in page.replace(' class="l"', "")
    assert "onerror=alert(1)>" not in page and "<script" not in page
