"""The Python API at the top of the namespace (issue 25): ``varcomp.fit`` on a DataFrame gives a
Result whose tables hold the README's names and ArviZ's numbers, whose display shows the
at-a-glance card and the gate's verdict, and whose ``report(path)`` writes what the CLI writes;
bad input is one line (DataError, or TypeError for an argument of the wrong kind)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import varcomp
from varcomp.analyses.cli import main
from varcomp.models import load
from varcomp.models.errors import DataError

FORMULA = "y ~ x + (1|g)"
SMALL = {"draws": 200, "tune": 200, "chains": 2, "progress": False}
REGRESSION_NAMES = ["beta[Intercept]", "beta[x]", "tau", "sigma", "icc", "icc_unadjusted",
                    "r2_marginal", "r2_conditional"]  # the README's names (summary.json)
ARVIZ_COLUMNS = ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Held-out data: 16 clusters of 6 rows, a covariate, ICC 0.5 (not a shipped dataset)."""
    rng = np.random.default_rng(2025)
    g = np.repeat([f"c{k:02d}" for k in range(16)], 6)
    x = rng.normal(size=g.size)
    u = rng.normal(0.0, 1.0, 16)
    y = 2.0 + 0.5 * x + np.repeat(u, 6) + rng.normal(0.0, 1.0, g.size)
    return pd.DataFrame({"g": g, "x": x, "y": y})


@pytest.fixture(scope="module")
def result(frame):
    return varcomp.fit(frame, FORMULA, seed=7, **SMALL)


# ---------------------------------------------------------------------------- the namespace
def test_import_is_light_and_names_resolve_on_use():
    code = ("import sys, varcomp; heavy = [m for m in ('numpy', 'pandas', 'pymc', 'arviz') "
            "if m in sys.modules]; names = dir(varcomp); "
            "print(heavy, all(n in names for n in varcomp.__all__), "
            "varcomp.fit.__module__, varcomp.Result.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["[]", "True", "varcomp.analyses.api", "varcomp.analyses.result"]
    assert varcomp.DataError is DataError and issubclass(DataError, ValueError)
    with pytest.raises(AttributeError):
        varcomp.no_such_name  # noqa: B018


# ---------------------------------------------------------------------------- Result tables
def test_summary_is_arviz_table_with_the_readmes_names(result):
    import arviz as az

    table = result.summary()
    assert list(table.index) == REGRESSION_NAMES
    assert list(table.columns) == ARVIZ_COLUMNS
    # the oracle: ArviZ's own table of the posterior, unrounded, and numpy's mean of the draws
    ref = az.summary(result.idata, var_names=["tau", "sigma", "icc"], hdi_prob=0.94,
                     round_to="none")
    for name in ("tau", "sigma", "icc"):
        for col in ARVIZ_COLUMNS:
            assert table.loc[name, col] == pytest.approx(ref.loc[name, col], rel=1e-12)
        draws = result.idata.posterior[name].values
        assert table.loc[name, "mean"] == pytest.approx(draws.mean(), rel=1e-12)
    beta = result.idata.posterior["beta"].sel(term="x").values
    assert table.loc["beta[x]", "mean"] == pytest.approx(beta.mean(), rel=1e-12)
    assert result.summary("sufficient").equals(table)
    with pytest.raises(DataError, match="no fit of form 'marginal'"):
        result.summary("marginal")


def test_shares_hold_the_icc_with_its_hdi_and_reml(result):
    import arviz as az

    shares = result.shares()
    assert list(shares.index) == ["icc", "icc_unadjusted", "r2_marginal", "r2_conditional"]
    assert list(shares.columns) == ["mean", "sd", "hdi_3%", "hdi_97%", "reml"]
    icc = result.idata.posterior["icc"].values.ravel()
    lo, hi = az.hdi(icc, hdi_prob=0.94)
    assert (shares.loc["icc", "hdi_3%"], shares.loc["icc", "hdi_97%"]) == \
        pytest.approx((lo, hi), rel=1e-12)
    assert lo < shares.loc["icc", "mean"] < hi
    reml = result.fit_result.estimates["reml"].as_dict()
    assert shares.loc["icc", "reml"] == reml["icc"]
    assert np.isnan(shares.loc["r2_marginal", "reml"])


def test_shares_hold_the_glmm_and_slopes_headlines(frame):
    """The data-scale and trigamma ICCs of a count model and the mean-variance VPC of a slopes
    model are shares too: each row is the posterior's own mean, and the VPC carries REML's."""
    rng = np.random.default_rng(7)
    counts = frame.assign(k=rng.poisson(np.exp(0.3 * frame["y"])))
    pois = varcomp.fit(counts, "k ~ 1 + (1|g)", family="poisson", seed=3, **SMALL)
    shares = pois.shares()
    assert list(shares.index) == ["icc", "icc_data", "icc_trigamma"]
    for name in shares.index:
        draws = pois.idata.posterior[name].values
        assert shares.loc[name, "mean"] == pytest.approx(draws.mean(), rel=1e-12)
    slopes = varcomp.fit(frame, "y ~ x + (x|g)", seed=3, **SMALL)
    shares = slopes.shares()
    assert list(shares.index) == ["vpc_mean_variance"]
    vpc = slopes.idata.posterior["vpc_mean_variance"].values
    assert shares.loc["vpc_mean_variance", "mean"] == pytest.approx(vpc.mean(), rel=1e-12)
    reml = slopes.fit_result.estimates["reml"].as_dict()
    assert shares.loc["vpc_mean_variance", "reml"] == reml["vpc_mean_variance"]


def test_estimates_and_diagnostics_frames(result):
    est = result.estimates()
    assert list(est.columns) == ["reml", "ml"]
    for method in ("reml", "ml"):
        d = result.fit_result.estimates[method].as_dict()
        assert est.loc["sigma", method] == d["sigma"]
        assert est.loc["beta[x]", method] == d["beta"]["x"]
        assert est.loc["criterion", method] == d["criterion"]
    diag = result.diagnostics()
    assert list(diag.index) == ["sufficient"]
    fit = result.fit_result.fits["sufficient"]
    assert bool(diag.loc["sufficient", "ok"]) == fit.ok
    assert diag.loc["sufficient", "r_hat"] == fit.diagnostics["r_hat"]
    assert diag.loc["sufficient", "problems"] == "; ".join(fit.diagnostics["problems"])


def test_idata_fits_and_settings(result):
    assert result.form == "sufficient" and result.family == "regression"
    assert set(result.fits) == {"sufficient"}
    assert result.idata is result.fits["sufficient"]
    assert result.idata.posterior.sizes["draw"] == 200
    settings = result.summary_dict["fits"]["sufficient"]["settings"]
    assert (settings["seed"], settings["draws"], settings["chains"]) == (7, 200, 2)


# ---------------------------------------------------------------------------- display
def test_repr_is_short_and_html_shows_the_card_and_verdict(result):
    text = repr(result)
    assert len(text.splitlines()) <= 6 and "icc" in text and FORMULA in text
    assert "y=array" not in text and len(text) < 600  # not the dataclass dump of every value
    page = result._repr_html_()
    assert page.startswith("<div class=\"varcomp-card\">") and "<html" not in page
    ok = result.fit_result.fits["sufficient"].ok
    assert ("sufficient: diagnostics ok" in page) == ok
    assert ("NOT TRUSTED" in page) == (not ok)
    mean = result.summary().loc["icc", "mean"]
    assert "ICC (adjusted for the fixed effects)" in page and f"{mean:.3f}" in page
    assert "REML ICC" in page


def test_html_escapes_user_text_and_shows_a_failed_gate(frame):
    df = frame.rename(columns={"y": "<b>y</b>"})
    r = varcomp.fit(df, group="g", response="<b>y</b>", seed=1, draws=30, tune=30, chains=2,
                    progress=False)  # 30 draws: the gate fails (ESS < 400)
    page = r._repr_html_()
    assert "<b>y</b>" not in page and "&lt;b&gt;y&lt;/b&gt;" in page
    assert "NOT TRUSTED: " in page and "ESS_bulk" in page
    assert "NOT TRUSTED" in repr(r)


# ---------------------------------------------------------------------------- files
def test_report_writes_the_clis_files_and_numbers(result, frame, tmp_path):
    csv = tmp_path / "held_out.csv"
    frame.to_csv(csv, index=False)
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert main(["fit", str(csv), "--formula", FORMULA, "--draws", "200", "--tune", "200",
                 "--chains", "2", "--seed", "7", "--out", str(cli_out)]) == 0
    written = result.report(api_out)
    assert written == api_out.resolve()
    names = sorted(p.name for p in api_out.iterdir())
    assert names == sorted(p.name for p in cli_out.iterdir())
    assert {"summary.json", "report.html", "sufficient.nc"} <= set(names)
    api = json.loads((api_out / "summary.json").read_text())
    cli = json.loads((cli_out / "summary.json").read_text())
    assert api["data"]["source"] == "<DataFrame>" and cli["data"]["source"] == str(csv)
    # the same rows, settings and seed: the same posterior summary and estimates
    assert api["fits"]["sufficient"]["params"] == cli["fits"]["sufficient"]["params"]
    assert api["estimates"] == cli["estimates"]
    assert json.loads(result.to_json()) == api
    assert "<html" in (api_out / "report.html").read_text()


# ---------------------------------------------------------------------------- plots
@pytest.mark.parametrize("kind", ["icc", "coef", "ranks", "sampler", "ppc", "caterpillar",
                                  "sizes"])
def test_plot_returns_the_reports_axes(result, kind):
    from matplotlib.axes import Axes

    axes = result.plot(kind)
    flat = [axes] if isinstance(axes, Axes) else list(axes)
    assert flat and all(isinstance(ax, Axes) for ax in flat)
    if kind == "icc":  # the report's ICC figure: HDI and REML in the legend
        labels = [t.get_text() for t in flat[0].get_legend().get_texts()]
        lo = result.summary().loc["icc", "hdi_3%"]
        assert any(f"{lo:.3f}" in s for s in labels) and any("REML" in s for s in labels)


# ---------------------------------------------------------------------------- data in
def test_frames_tables_paths_and_names_resolve_alike(frame, tmp_path):
    import pyarrow as pa

    from varcomp.analyses.source import resolve

    a = resolve(frame, FORMULA)
    b = resolve(pa.Table.from_pandas(frame), FORMULA)
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    c = resolve(str(path), FORMULA)
    for other in (b, c):
        assert np.array_equal(a.y, other.y) and np.array_equal(a.design.X, other.design.X)
        assert list(a.groups) == list(other.groups)
    d = resolve("dyestuff")
    ref = load("dyestuff")
    assert np.array_equal(d.y, ref.y) and list(d.groups) == list(ref.groups)
    shipped = varcomp.load_dataset("dyestuff")
    e = resolve(shipped, group="Batch", response="Yield")
    assert np.array_equal(e.y, ref.y) and list(e.groups) == list(ref.groups)
    assert resolve(ref) is ref


def test_datasets_and_load_dataset():
    from varcomp.models.data import DATASETS

    table = varcomp.datasets()
    assert list(table.index) == list(DATASETS)
    assert table.loc["gcsemv", "response"] == "written, course"
    df = varcomp.load_dataset("Dyestuff")
    assert df.shape == (30, 2) and df["Batch"].map(type).eq(str).all()


def test_describe_is_the_clis(capsys):
    assert main(["describe", "dyestuff"]) == 0
    printed = capsys.readouterr().out.strip()
    d = varcomp.describe("dyestuff")
    assert repr(d) == printed
    assert (d.info["n_obs"], d.info["n_groups"]) == (30, 6)
    assert d.anova.loc["Yield", "icc"] == pytest.approx(load("dyestuff").anova(0)["icc"])


def test_priors_as_dict_or_list_are_the_clis():
    runs = [varcomp.fit("dyestuff", priors=p, seed=3, draws=100, tune=100, chains=2,
                        progress=False)
            for p in ({"tau": "halfnormal:10"}, ["tau=halfnormal:10"], None)]
    post = [r.idata.posterior["tau"].values for r in runs]
    assert np.array_equal(post[0], post[1])
    assert not np.array_equal(post[0], post[2])  # the override changed the posterior


def test_seed_none_draws_a_fresh_recorded_seed():
    a, b = (varcomp.fit("dyestuff", draws=50, tune=50, chains=2, progress=False)
            for _ in range(2))
    seeds = [r.summary_dict["fits"]["sufficient"]["settings"]["seed"] for r in (a, b)]
    assert all(0 <= s < 2**32 for s in seeds) and seeds[0] != seeds[1]


def test_same_seed_twice_gives_the_same_numbers(frame):
    a, b = (varcomp.fit(frame, FORMULA, seed=11, **SMALL) for _ in range(2))
    assert a.summary().equals(b.summary())
    assert a.summary_dict["fits"]["sufficient"]["prior_sensitivity"] == \
        b.summary_dict["fits"]["sufficient"]["prior_sensitivity"]


def test_compare_takes_a_frame(frame, tmp_path):
    c = varcomp.compare(frame, ["y ~ 1 + (1|g)", FORMULA], seed=2, draws=150, tune=150,
                        chains=2, progress=False)
    table = c.table()
    assert set(table.index) == {"m1", "m2", "pooled"}
    assert table["elpd"].is_monotonic_decreasing
    assert table.loc["m2", "formula"] == FORMULA
    assert "pooled" in repr(c) and "<table" in c._repr_html_()
    out = c.report(tmp_path / "cmp")
    assert json.loads((out / "compare.json").read_text()) == json.loads(c.to_json())


# ---------------------------------------------------------------------------- bad input
BAD = [
    ("family", lambda df: varcomp.fit(df, FORMULA, family="gamma"), DataError,
     "family='gamma' is not supported: varcomp fits 'gaussian', 'bernoulli'"),
    ("data of another kind", lambda df: varcomp.fit(42, FORMULA), TypeError,
     "data must be a pandas DataFrame, a pyarrow Table, a file path"),
    ("formula and group", lambda df: varcomp.fit(df, FORMULA, group="g"), DataError,
     "give either a formula or group/response columns, not both"),
    ("frame without columns", lambda df: varcomp.fit(df), DataError,
     "group= is required for a DataFrame"),
    ("formula not text", lambda df: varcomp.fit(df, 3), TypeError, "formula must be text"),
    ("response not names", lambda df: varcomp.fit(df, group="g", response=[1]), TypeError,
     "response must be a column name"),
    ("draws 0", lambda df: varcomp.fit(df, FORMULA, draws=0), DataError,
     "draws must be a positive integer, got 0"),
    ("chains 1.5", lambda df: varcomp.fit(df, FORMULA, chains=1.5), DataError,
     "chains must be a positive integer, got 1.5"),
    ("seed -1", lambda df: varcomp.fit(df, FORMULA, seed=-1), DataError,
     "seed must be between 0 and 4294967295, got -1"),
    ("seed text", lambda df: varcomp.fit(df, FORMULA, seed="1"), TypeError,
     "seed must be a whole number or None"),
    ("priors of another kind", lambda df: varcomp.fit(df, FORMULA, priors=5), TypeError,
     "priors must be a dict"),
    ("bad prior", lambda df: varcomp.fit(df, FORMULA, priors={"tau": "gamma:2"}), DataError,
     "tau=gamma:2"),
    ("unknown model", lambda df: varcomp.fit(df, FORMULA, model="latent"), DataError,
     "latent"),
    ("missing column", lambda df: varcomp.fit(df, "y ~ z + (1|g)"), DataError,
     "column(s) ['z'] of the formula not found"),
    ("unknown dataset", lambda df: varcomp.fit("nosuch"), DataError,
     "'nosuch' is neither a file nor a shipped dataset"),
    ("load_dataset unknown", lambda df: varcomp.load_dataset("nosuch"), DataError,
     "unknown dataset 'nosuch': shipped are dyestuff"),
    ("compare one formula as text", lambda df: varcomp.compare(df, FORMULA), TypeError,
     "formulas must be a list"),
    ("plot kind", None, DataError, "unknown plot kind 'trace'"),
    ("plot icc of a nested fit", None, DataError, "reports no ICC"),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line(case, call, error, message, frame, result):
    if case == "plot kind":
        def call(df):
            return result.plot("trace")
    elif case == "plot icc of a nested fit":
        nested = varcomp.fit("pastes", "strength ~ 1 + (1|batch/cask)", seed=1, draws=20,
                             tune=20, chains=1, progress=False)

        def call(df):
            return nested.plot("icc")
    with pytest.raises(error) as info:
        call(frame)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


@pytest.mark.slow
def test_several_forms_recommend_one(tmp_path):
    r = varcomp.fit("dyestuff", model="all", seed=1, draws=500, tune=500, chains=2,
                    progress=False)
    assert set(r.fits) == {"centred", "noncentred", "marginal", "sufficient"}
    assert r.idata is r.fits[r.form]
    page = r._repr_html_()
    assert all(f"{name}: diagnostics" in page for name in r.fits)
