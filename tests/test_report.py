"""The HTML report on fake posteriors and the notes' figures (fast tier: no MCMC)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import arviz as az
import numpy as np
import pandas as pd
import pytest

from analyses.report import render_report, write_report
from models import fit_ml, fit_reml, load
from models.data import ClusteredData
from models.sampling import Fit, diagnose

IMG = '<img alt="'
DATA_URI = 'src="data:image/png;base64,'
SECTIONS = ("At a glance", "Data", "One-way ANOVA", "ML and REML estimates", "Parameters",
            "Intra-class correlation", "Design effect and reliability of cluster means",
            "Sampler diagnostics", "Posterior predictive check", "Group effects")


def fake_fit(data: ClusteredData, name: str = "sufficient", *, tau: float = 25.0,
             sigma: float = 50.0, chains: int = 2, draws: int = 300, divergent: int = 0,
             seed: int = 0) -> Fit:
    """A Fit whose posterior is drawn from a rough normal approximation (no sampling)."""
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
    return Fit(name, idata, seconds, settings, diagnose(idata))


def fake_mv_fit(data: ClusteredData, *, chains: int = 2, draws: int = 200, seed: int = 1) -> Fit:
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
    return Fit("sufficient", idata, {"build": 0.1, "compile": 20.0, "sample": 3.0, "total": 23.1},
               {"sampler": "fake", "chains": chains, "draws": draws},
               diagnose(idata, ("mu", "tau", "sigma", "icc", "corr_between", "corr_within")))


def fake_comparison(fits: dict[str, Fit], passed: bool = True):
    """A check result shaped like the checks module's: name, passed, table, text."""
    table = pd.DataFrame({"form": list(fits), "verdict": ["agrees" if f.ok else
                                                          "unreliable here" for f in fits.values()],
                          "max_abs_z": np.linspace(0.5, 2.0, len(fits))})
    return SimpleNamespace(name="compare_posteriors", passed=passed, table=table,
                           text="every reliable pair agrees within 4 MCSE")


def external_refs(page: str) -> list[str]:
    """Every src/href that leaves the page (http(s), protocol-relative, file, ...)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    return [r for r in refs if not (r.startswith("#") or r.startswith("data:image/png;base64,"))]


@pytest.fixture(scope="module")
def dyestuff() -> ClusteredData:
    return load("dyestuff")


@pytest.fixture(scope="module")
def estimates(dyestuff):
    return {"ml": fit_ml(dyestuff), "reml": fit_reml(dyestuff)}


@pytest.fixture(scope="module")
def four_fit_page(dyestuff, estimates) -> str:
    fits = {"centred": fake_fit(dyestuff, "centred", divergent=7, seed=1),
            "noncentred": fake_fit(dyestuff, "noncentred", seed=2),
            "marginal": fake_fit(dyestuff, "marginal", seed=3),
            "sufficient": fake_fit(dyestuff, "sufficient", seed=4)}
    return render_report(data=dyestuff, fits=fits, estimates=estimates,
                         comparison=fake_comparison(fits))


def test_single_fit_is_self_contained_and_complete(dyestuff, estimates):
    """One fit gives a page with every section, only embedded PNGs and no external links."""
    page = render_report(data=dyestuff, fits={"sufficient": fake_fit(dyestuff)},
                         estimates=estimates)
    assert page.startswith("<!DOCTYPE html>")
    assert external_refs(page) == []
    assert "http://" not in page and "https://" not in page
    for heading in SECTIONS:
        assert heading in page, heading
    assert page.count(IMG) == page.count(DATA_URI) >= 5
    assert "Parameterisation comparison" not in page


def test_external_reference_detector_catches_links():
    """The self-containment check itself can fail: it flags http(s), protocol-relative and file
    references and a non-PNG data URI, and lets anchors and embedded PNGs through."""
    page = ('<img src="http://x/a.png"><link href="https://cdn/x.css"><script src="//cdn/x.js">'
            '<a href="file:///tmp/a">a</a><img src="data:image/svg+xml;base64,AA">'
            '<a href="#data">ok</a><img src="data:image/png;base64,AAAA">')
    assert len(external_refs(page)) == 5


def test_summary_numbers_are_shown_when_given(dyestuff, estimates):
    """With summary.json's params the page shows those numbers, so the two outputs agree."""
    fit = fake_fit(dyestuff)
    summary = {"fits": {"sufficient": {"params": {"mu": {
        "mean": 1234.5678, "sd": 1.0, "hdi_low": 1200.0, "hdi_high": 1300.0, "ess_bulk": 999.0,
        "ess_tail": 888.0, "r_hat": 1.0, "mcse_mean": 0.1}}}}}
    page = render_report(data=dyestuff, fits={"sufficient": fit}, estimates=estimates,
                         summary=summary)
    assert "<td>mu</td><td>1,235</td>" in page.replace(' class="l"', "")


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
    for heading in SECTIONS:
        assert heading in page, heading


def test_boundary_case_reports_p_icc_below_001():
    """Dyestuff2 has its ML/REML estimate at tau = 0: the page states P(ICC < 0.01) and the
    boundary in words, without lme4's 'singular fit' wording."""
    data = load("dyestuff2")
    est = {"ml": fit_ml(data), "reml": fit_reml(data)}
    assert est["reml"].boundary
    fit = fake_fit(data, tau=0.3, sigma=3.7)
    page = render_report(data=data, fits={"sufficient": fit}, estimates=est)
    icc = fit.idata.posterior["icc"].values.ravel()
    p = float(np.mean(icc < 0.01))
    assert p > 0.05
    assert f"P(ICC &lt; 0.01) = <b>{p:.3f}</b>" in page
    assert "on the boundary tau = 0" in page
    assert "singular" not in page.lower()


def test_interior_case_does_not_raise_the_boundary_alarm(dyestuff, estimates):
    """Dyestuff's REML estimate is interior and the fake posterior sits far from ICC = 0: no
    boundary banner, just the (small) probability."""
    assert not estimates["reml"].boundary
    page = render_report(data=dyestuff, fits={"sufficient": fake_fit(dyestuff, tau=40.0)},
                         estimates=estimates)
    assert "on the boundary tau = 0" not in page
    assert "keeps away from the boundary" in page


def test_multivariate_fake_shows_matrices_per_outcome():
    """A bivariate posterior (dims outcome, outcome_bis) renders per-outcome ICCs and the V,
    Sigma and correlation matrices, and skips nothing fatally."""
    data = load("gcsemv")
    page = render_report(data=data, fits={"sufficient": fake_mv_fit(data)}, estimates=None)
    assert external_refs(page) == []
    for text in ("V: between-cluster covariance", "Sigma: within-cluster covariance",
                 "between-cluster correlation", "within-cluster correlation",
                 "icc[written]", "icc[course]", "One-way ANOVA: written",
                 "One-way ANOVA: course"):
        assert text in page, text
    assert page.count(DATA_URI) >= 5


def test_failed_fit_gets_a_red_banner(dyestuff, estimates):
    """A fit with divergences is flagged in red with its problem listed."""
    page = render_report(data=dyestuff, fits={"centred": fake_fit(dyestuff, divergent=3)},
                         estimates=estimates)
    assert 'class="banner bad"' in page
    assert "3 divergent transitions" in page


def test_write_report_leaves_no_pyplot_figures(tmp_path, dyestuff, estimates):
    """write_report writes the page and draws without pyplot (no figure left open)."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = write_report(tmp_path / "r" / "report.html", data=dyestuff,
                        fits={"marginal": fake_fit(dyestuff)}, estimates=estimates)
    assert path.read_text(encoding="utf-8").count(DATA_URI) >= 5
    assert plt.get_fignums() == before


def test_make_figures_writes_pngs_and_correlations_match_theory(tmp_path):
    """The pairs simulation's 15 sample correlations lie within 4 Monte Carlo standard errors,
    (1 - rho^2)/sqrt(1000), of theory (0.8 within a cluster, 0 between): by Bonferroni over 15
    near-normal z-scores this fails with probability about 1e-3 when the model is right."""
    from analyses.figures import make_figures

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
    from analyses.figures import BIVARIATE
    from models.simulate_mv import check_pd

    check_pd(BIVARIATE["V"], "V")
    with pytest.raises(ValueError, match="not positive definite"):
        check_pd([[2, 3], [3, 4]], "V")
