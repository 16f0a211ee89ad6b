"""The mixed-model families: formulas, exact densities, estimates, fits and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses.cli import main
from varcomp.models import load
from varcomp.models.checks import compare_compiled, compare_logp
from varcomp.models.checks.broken import BROKEN
from varcomp.models.data import DataError, data_dir
from varcomp.models.design import from_formula
from varcomp.models.forms import family_of

SMALL = ["--draws", "300", "--tune", "300", "--chains", "2"]


def _frame(sizes, seed: int = 0, offset: float = 0.0) -> pd.DataFrame:
    """Unbalanced clusters (singletons allowed), a row covariate, a cluster covariate, a factor."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    w = rng.normal(size=len(sizes))
    df = pd.DataFrame({"g": g.astype(str), "x": rng.normal(size=g.size) + offset / 1e2,
                       "w": w[g], "c": rng.choice(["a", "b", "c"], g.size)})
    df["y"] = (offset + 1.0 + 0.5 * df.x + 0.3 * df.w + rng.normal(size=len(sizes))[g]
               + rng.normal(size=g.size))
    return df


def _nested_frame(seed: int = 0) -> pd.DataFrame:
    """Three levels, unbalanced: schools in areas, classes in schools, cells of size 1 to 4."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(3):
        for s in range(rng.integers(2, 4)):
            for c in range(rng.integers(1, 3)):
                for _ in range(rng.integers(1, 5)):
                    rows.append((f"A{a}", f"S{s}", f"C{c}"))
    df = pd.DataFrame(rows, columns=["area", "school", "klass"])
    df["x"] = rng.normal(size=len(df))
    df["y"] = 2.0 + df.x + rng.normal(size=len(df))
    return df


def _crossed_frame(n_rep: int, drop: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = np.meshgrid(np.arange(5), np.arange(4), indexing="ij")
    df = pd.DataFrame({"a": np.repeat(a.ravel(), n_rep).astype(str),
                       "b": np.repeat(b.ravel(), n_rep).astype(str)})
    df = df.iloc[drop:].reset_index(drop=True)
    df["x"] = rng.normal(size=len(df))
    df["y"] = df.x + rng.normal(size=len(df))
    return df


# ----------------------------------------------------------------------------- formulas
def test_formula_names_terms_and_decides_the_family():
    """formulae's column names; one factor with covariates is the regression family, an
    intercept-only formula is the one-way model with today's names (its data carry the design;
    family_of alone decides)."""
    d = load("radon", formula="log.radon ~ basement + uranium + (1|county)")
    assert d.design.terms == ("Intercept", "basement", "uranium")
    assert family_of(d).name == "regression"
    one = load("dyestuff", formula="Yield ~ 1 + (1|Batch)")
    assert one.design.terms == ("Intercept",) and family_of(one).name == "oneway"
    assert np.array_equal(one.y, load("dyestuff").y)
    cat = from_formula(_frame([3, 4, 2, 5]), "y ~ x + C(c) + (1|g)")
    assert cat.design.terms == ("Intercept", "x", "C(c)[b]", "C(c)[c]")


def test_nesting_is_read_from_the_data():
    """(1|a/b) gives factors a and a:b, coarsest first; (1|plate) + (1|sample) crossing each
    other is crossed; labels of b reused across a are fitted as written (a:b) with a warning."""
    p = load("pastes", formula="strength ~ 1 + (1|batch/cask)")
    assert [f.name for f in p.design.factors] == ["batch", "batch:cask"] and p.design.nested
    assert family_of(p).name == "nested"
    assert any("recur" in w for w in p.warnings)
    q = load("penicillin", formula="diameter ~ 1 + (1|plate) + (1|sample)")
    assert not q.design.nested and family_of(q).name == "crossed"


BAD_FORMULAS = [
    ("log.radon ~ nope + (1|county)", "not found"),
    ("log.radon ~ county.name + (1|county)", "wrap it in C("),
    ("log.radon ~ basement + I(2 * basement) + (1|county)", "linear combination"),
    ("log.radon ~ C(county) + (1|county)", "no between-cluster variation"),
    ("log.radon ~ basement", "no group term"),
    ("log.radon ~ basement + (C(basement)|county)", "a random slope is a numeric column"),
    ("log.radon ~ basement + (1|county) + (1|county.name)", "identically"),
    ("log.radon ~ basement + (1|", "cannot parse"),
]


@pytest.mark.parametrize(("formula", "words"), BAD_FORMULAS)
def test_bad_formulas_are_one_line_errors(formula, words):
    with pytest.raises(DataError) as info:
        load("radon", formula=formula)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_constant_covariate_one_level_factor_and_row_index_factor_are_refused():
    df = _frame([3, 4, 2, 5])
    df["k"] = 7.0
    with pytest.raises(DataError, match="linear combination"):
        from_formula(df, "y ~ x + k + (1|g)")
    df["one"] = "z"
    with pytest.raises(DataError, match="one level"):
        from_formula(df, "y ~ x + (1|g) + (1|one)")
    df["row"] = np.arange(len(df)).astype(str)
    with pytest.raises(DataError, match="a level for every row"):
        from_formula(df, "y ~ x + (1|g) + (1|row)")


def test_missing_covariates_are_dropped_and_counted():
    df = _frame([3, 4, 2, 5])
    df.loc[[0, 4], "x"] = np.nan
    df.loc[6, "x"] = np.inf
    d = from_formula(df, "y ~ x + (1|g)")
    assert d.dropped_rows == 3 and d.n_obs == len(df) - 3
    assert any("3 row(s)" in w for w in d.warnings)


# ----------------------------------------------------------------------------- exact densities
@pytest.mark.parametrize(("frame", "formula"), [
    (lambda: _frame([1, 2, 3, 5, 4, 1, 6]), "y ~ x + w + C(c) + (1|g)"),
    (lambda: _frame([4, 4, 4, 4, 4]), "y ~ x + (1|g)"),
    (lambda: _nested_frame(), "y ~ x + (1|area/school/klass)"),
    (lambda: _crossed_frame(1), "y ~ x + (1|a) + (1|b)"),
    (lambda: _crossed_frame(2), "y ~ x + (1|a) + (1|b) + (1|a:b)"),
    (lambda: _crossed_frame(2, drop=3), "y ~ x + (1|a) + (1|b)"),
    (lambda: _frame([2, 3, 4, 3], offset=1e6), "y ~ x + (1|g)"),
])
def test_every_form_equals_scipys_stacked_mvnormal(frame, formula):
    """Integrating every latent effect out (exact Gaussian identity), the literal MvNormal and
    the closed forms all equal scipy's MvNormal of the stacked rows to 1e-9 at tau/sigma from
    1e-4 to 1e2 (one factor, three nested levels, crossed with and without an interaction,
    an offset of 1e6); an unbalanced crossed design has no closed form and says so."""
    d = from_formula(frame(), formula)
    res = compare_logp(d, n_points=6, seed=2)
    assert res.passed, res.text
    checked = set(res.details["max_rel_err"])
    skipped = set(res.details["skipped"])
    assert checked | skipped == set(family_of(d).forms)
    assert {"centred", "noncentred", "marginal", "sufficient"} <= checked | skipped
    assert skipped <= {"sufficient"} and (not skipped or "unbalanced" in res.details[
        "skipped"]["sufficient"])


@pytest.mark.parametrize(("frame", "formula"), [
    (lambda: _frame([2, 3, 4, 3]), "y ~ x + (1|g)"),
    (lambda: _nested_frame(), "y ~ x + (1|area/school/klass)"),
    (lambda: _crossed_frame(2), "y ~ x + (1|a) + (1|b) + (1|a:b)"),
])
def test_broken_mixed_model_fails_and_compiled_equals_pymc(frame, formula):
    """The deliberately wrong closed form (tau for tau^2) fails the exact check; the compiled
    sufficient posterior's gradient equals the PyMC model's and its log density differs by one
    constant."""
    d = from_formula(frame(), formula)
    fam = family_of(d).name
    res = compare_logp(d, names=["sufficient"], n_points=4,
                       builders={"broken": BROKEN[fam].build})
    assert not res.passed and res.details["max_rel_err"]["broken"] > 1e-3
    assert res.details["max_rel_err"]["sufficient"] <= 1e-9
    comp = compare_compiled(d, n_points=8)
    assert comp.passed, comp.text


# ----------------------------------------------------------------------------- estimates and fits
def test_reml_with_covariates_equals_statsmodels():
    """REML beta, tau and sigma of radon with basement, and with basement + uranium, equal
    statsmodels MixedLM's optimum (Powell, tight tolerances) to 1e-5 relative."""
    import statsmodels.formula.api as smf

    df = pd.read_csv(data_dir() / "radon.csv").rename(columns={"log.radon": "lr"})
    for rhs in ("basement", "basement + uranium"):
        d = load("radon", formula=f"log.radon ~ {rhs} + (1|county)")
        est = family_of(d).estimates(d)["reml"].as_dict()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sm = smf.mixedlm(f"lr ~ {rhs}", df, groups=df["county"]).fit(
                reml=True, method=["powell"], xtol=1e-12, ftol=1e-14)
        for term, value in est["beta"].items():
            assert value == pytest.approx(sm.fe_params[term], rel=1e-5)
        assert est["tau"] == pytest.approx(np.sqrt(sm.cov_re.iloc[0, 0]), rel=1e-5)
        assert est["sigma"] == pytest.approx(np.sqrt(sm.scale), rel=1e-5)


def test_nested_and_crossed_reml_equal_lme4():
    """lme4's published REML sds: Pastes 2.9041 (batch:cask), 1.2874 (batch), 0.8234, intercept
    60.0533; Penicillin 0.8467 (plate), 1.9316 (sample), 0.5499 (to the printed digits)."""
    p = load("pastes", formula="strength ~ 1 + (1|batch/cask)")
    e = family_of(p).estimates(p)["reml"].as_dict()
    assert e["tau"] == pytest.approx({"batch": 1.2874, "batch:cask": 2.9041}, abs=6e-5)
    assert e["sigma"] == pytest.approx(0.8234, abs=6e-5)
    assert e["beta"]["Intercept"] == pytest.approx(60.0533, abs=6e-5)
    assert sum(e["vpc"].values()) == pytest.approx(1.0, abs=1e-12)
    q = load("penicillin", formula="diameter ~ 1 + (1|plate) + (1|sample)")
    e = family_of(q).estimates(q)["reml"].as_dict()
    assert e["tau"] == pytest.approx({"plate": 0.8467, "sample": 1.9316}, abs=6e-5)
    assert e["sigma"] == pytest.approx(0.5499, abs=6e-5)


def test_fit_formula_writes_the_contract(tmp_path):
    """varcomp fit --formula: summary.json names beta[<term>], tau, sigma, icc, icc_unadjusted,
    r2_marginal, r2_conditional; estimates carry beta by term; derived quantities lie in [0, 1]."""
    out = tmp_path / "radon"
    assert main(["fit", "radon", "--formula", "log.radon ~ basement + (1|county)", *SMALL,
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["family"] == "regression"
    params = s["fits"]["sufficient"]["params"]
    assert set(params) >= {"beta[Intercept]", "beta[basement]", "tau", "sigma", "icc",
                           "icc_unadjusted", "r2_marginal", "r2_conditional"}
    for name in ("icc", "icc_unadjusted", "r2_marginal", "r2_conditional"):
        assert 0.0 <= params[name]["hdi_low"] <= params[name]["hdi_high"] <= 1.0
    assert params["icc_unadjusted"]["mean"] < params["icc"]["mean"]
    reml = s["estimates"]["reml"]
    assert set(reml) >= {"beta", "tau", "sigma", "icc", "criterion", "boundary"}
    assert set(reml["beta"]) == {"Intercept", "basement"}


@pytest.mark.parametrize("formula, frame", [
    ("y ~ x + (1|area/school/klass)", lambda: _nested_frame(seed=3)),
    ("y ~ x + (1|a) + (1|b) + (1|a:b)", lambda: _crossed_frame(2, drop=3, seed=1)),
])
def test_design_effect_is_the_variance_of_the_mean_over_its_srs_value(formula, frame):
    """deff per draw = Var(mean of y | X) under the model's covariance of all rows, divided by
    its value for independent rows, total / N: both from the dense N x N matrix built from the
    rows' labels (no statistic shared with models.cells)."""
    import arviz as az
    import xarray as xr

    from varcomp.models.likelihoods import GAUSSIAN
    from varcomp.models.lmm import add_derived

    df = frame()
    data = from_formula(df, formula)
    factors = [f.name for f in data.design.factors]
    rng = np.random.default_rng(0)
    tau = rng.uniform(0.2, 2.0, size=(1, 4, len(factors)))
    sigma = rng.uniform(0.5, 1.5, size=(1, 4))
    beta = np.zeros((1, 4, data.design.k))
    idata = az.from_dict(posterior={"tau": tau, "sigma": sigma, "beta": beta},
                         dims={"tau": ["factor"]}, coords={"factor": factors})
    add_derived(idata, data, GAUSSIAN)
    got = idata.posterior["deff"].values[0]
    N = len(df)
    for d in range(4):
        V = sigma[0, d] ** 2 * np.eye(N)
        for f, name in enumerate(factors):
            label = df[name.split(":")].astype(str).agg(":".join, axis=1).to_numpy()
            V += tau[0, d, f] ** 2 * (label[:, None] == label[None, :])
        total = sigma[0, d] ** 2 + (tau[0, d] ** 2).sum()
        want = (V.sum() / N**2) / (total / N)
        assert abs(got[d] - want) < 1e-12 * want
    assert xr.DataArray(got).min() > 1.0


def test_nested_fit_vpc_sums_to_one_per_draw(tmp_path, capsys):
    """varcomp fit of a nested formula: the variance partition of every draw sums to 1, the
    correlations of rows sharing levels rise toward the bottom, the CLI prints the vpc by
    component and summary.json names them."""
    import arviz as az

    out = tmp_path / "pastes"
    assert main(["fit", "pastes", "--formula", "strength ~ 1 + (1|batch/cask)", "--draws",
                 "200", "--tune", "300", "--chains", "2", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vpc mean batch " in printed and "batch:cask " in printed and "residual " in printed
    post = az.from_netcdf(out / "sufficient.nc").posterior
    total = post["vpc"].sum("component").values
    assert np.abs(total - 1.0).max() < 1e-12
    corr = post["corr"].values
    assert (corr[..., 1] >= corr[..., 0]).all()
    s = json.loads((out / "summary.json").read_text())
    assert set(s["fits"]["sufficient"]["params"]) >= {
        "tau[batch]", "tau[batch:cask]", "vpc[batch]", "vpc[batch:cask]", "vpc[residual]"}


def test_crossed_fit_through_the_cli(tmp_path, capsys):
    """varcomp fit of a crossed formula (Penicillin) prints the vpc of plate, sample and the
    residual, each in [0, 1] and summing to 1 in the posterior mean."""
    out = tmp_path / "pen"
    assert main(["fit", "penicillin", "--formula", "diameter ~ 1 + (1|plate) + (1|sample)",
                 *SMALL, "--seed", "2", "--out", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "vpc mean" in x)
    shares = dict(p.rsplit(" ", 1) for p in line.split("vpc mean ")[1].split("   ")[0].split(", "))
    assert set(shares) == {"plate", "sample", "residual"}
    assert sum(float(v) for v in shares.values()) == pytest.approx(1.0, abs=2e-3)


def test_formula_and_group_together_are_refused(capsys):
    code = main(["fit", "radon", "--formula", "log.radon ~ basement + (1|county)", "--group",
                 "county"])
    assert code == 2 and "either --formula" in capsys.readouterr().err


# ----------------------------------------------------------------------------- slow tier
@pytest.mark.slow
def test_sbc_of_the_compiled_regression_and_nested_forms():
    """SBC (50 simulations) of what varcomp fit samples: uniform ranks for every beta, tau,
    sigma and the log-likelihood at alpha 0.05 family-wise; the broken kernel fails."""
    from varcomp.models.checks import MixedSBC, sbc

    reg = from_formula(_frame([2, 3, 4, 5, 3, 2, 6, 4], seed=1), "y ~ x + w + (1|g)")
    res = sbc(MixedSBC(reg), n_sims=50, seed=1)
    assert res.passed, res.text
    nested = from_formula(_nested_frame(seed=2), "y ~ x + (1|area/school)")
    res = sbc(MixedSBC(nested), n_sims=50, seed=2)
    assert res.passed, res.text
    broken = sbc(MixedSBC(reg, broken=True), n_sims=30, seed=1)
    assert not broken.passed, broken.text


@pytest.mark.slow
def test_sufficient_agrees_with_noncentred_on_radon_and_the_gate_flags_centred():
    """The adjusted ICC and beta posteriors of sufficient agree with noncentred (|z| <= 4).

    Centred is radon's funnel (85 counties, many with 1-5 homes, tau small once uranium is in):
    E-BFMI 0.08 and ESS_tail 90 at these settings, so the gate must call it unreliable and
    leave it out of the comparison rather than report a disagreement.
    """
    from varcomp.analyses.fit import fit

    d = load("radon", formula="log.radon ~ basement + uranium + (1|county)")
    r = fit(d, ["sufficient", "noncentred", "centred"], draws=1500, tune=1500, seed=3,
            target_accept=0.95)
    assert r.comparison.passed, r.comparison.text
    status = r.comparison.details["status"]
    assert status["sufficient"] == "agrees" and status["noncentred"] == "agrees", r.comparison.text
    assert status["centred"].startswith("unreliable"), r.comparison.text
