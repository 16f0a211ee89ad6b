"""varcomp reliability: Shrout-Fleiss ICCs, G and D studies against independent oracles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses.cli import main
from varcomp.analyses.reliability import plugin, reliability
from varcomp.analyses.report.compute import hdi
from varcomp.models.data import data_dir
from varcomp.models.errors import DataError
from varcomp.models.reliability import d_study, design_k, icc_forms, smallest_n

SF = data_dir() / "shrout_fleiss.csv"
PUBLISHED = {"ICC(1)": .17, "ICC(A,1)": .29, "ICC(C,1)": .71, "ICC(1,k)": .44, "ICC(A,k)": .62,
             "ICC(C,k)": .91}
"""Shrout & Fleiss (1979), Table 4: ICC(1,1), ICC(2,1), ICC(3,1), ICC(1,4), ICC(2,4), ICC(3,4)."""


def _anova(table: np.ndarray) -> dict[str, float]:
    """The mean-square formulas of Shrout & Fleiss (1979) / McGraw & Wong (1996), by hand."""
    n, k = table.shape
    g = table.mean()
    ssr = k * ((table.mean(1) - g) ** 2).sum()
    ssc = n * ((table.mean(0) - g) ** 2).sum()
    sst = ((table - g) ** 2).sum()
    bms, jms = ssr / (n - 1), ssc / (k - 1)
    ems = (sst - ssr - ssc) / ((n - 1) * (k - 1))
    wms = (sst - ssr) / (n * (k - 1))
    return {"ICC(1)": (bms - wms) / (bms + (k - 1) * wms),
            "ICC(A,1)": (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n),
            "ICC(C,1)": (bms - ems) / (bms + (k - 1) * ems),
            "ICC(1,k)": (bms - wms) / bms,
            "ICC(A,k)": (bms - ems) / (bms + (jms - ems) / n),
            "ICC(C,k)": (bms - ems) / bms}


def _sf_table() -> np.ndarray:
    df = pd.read_csv(SF)
    return df.pivot(index="target", columns="judge", values="rating").to_numpy(float)


def test_reml_plugin_equals_published_shrout_fleiss_values():
    got = plugin(SF, target="target", rater="judge", response="rating")
    anova = _anova(_sf_table())
    for name, value in PUBLISHED.items():
        assert round(got[name], 2) == value, name
        assert got[name] == pytest.approx(anova[name], rel=1e-6), name


def test_reml_plugin_equals_pingouin_on_a_complete_balanced_table():
    pg = pytest.importorskip("pingouin")
    df = pg.read_dataset("icc")
    got = plugin(df, target="Wine", rater="Judge", response="Scores")
    ref = pg.intraclass_corr(df, targets="Wine", raters="Judge", ratings="Scores")
    names = {"ICC(1,1)": "ICC(1)", "ICC(A,1)": "ICC(A,1)", "ICC(C,1)": "ICC(C,1)",
             "ICC(1,k)": "ICC(1,k)", "ICC(A,k)": "ICC(A,k)", "ICC(C,k)": "ICC(C,k)"}
    for _, row in ref.iterrows():
        assert got[names[row["Type"]]] == pytest.approx(row["ICC"], rel=1e-6), row["Type"]


def test_d_study_at_the_designs_k_is_the_k_average_form():
    rng = np.random.default_rng(1)
    comps = {"target": rng.gamma(2, 1, 500), "rater": rng.gamma(1, 0.5, 500),
             "residual": rng.gamma(2, 0.5, 500)}
    forms = icc_forms(comps, 4)
    e, p = d_study(comps, {"rater": 4})
    np.testing.assert_array_equal(p, forms["ICC(A,k)"])
    np.testing.assert_array_equal(e, forms["ICC(C,k)"])
    t, r, s = comps["target"], comps["rater"], comps["residual"]
    np.testing.assert_allclose(p, t / (t + (r + s) / 4))  # the k-average forms, by hand
    np.testing.assert_allclose(e, t / (t + s / 4))


def test_three_facet_d_study_is_brennans():
    c = {"target": 4.0, "rater": 1.0, "occasion": 0.5, "target:rater": 2.0,
         "target:occasion": 1.5, "rater:occasion": 0.25, "residual": 3.0}
    e, p = d_study(c, {"rater": 2, "occasion": 3})
    rel = 2.0 / 2 + 1.5 / 3 + 3.0 / 6  # Brennan (2001) eq. 4.11 and 4.12
    ab = rel + 1.0 / 2 + 0.5 / 3 + 0.25 / 6
    assert e == pytest.approx(4 / (4 + rel)) and p == pytest.approx(4 / (4 + ab))


def test_smallest_n_reaches_the_goal_and_one_fewer_does_not():
    rng = np.random.default_rng(2)
    comps = {"target": rng.gamma(3, 1, 800), "rater": rng.gamma(1, 0.3, 800),
             "residual": rng.gamma(2, 1, 800)}
    n = smallest_n(comps, 0.8, 0.9, kind="phi")
    share = [np.mean(d_study(comps, {"rater": m})[1] >= 0.8) for m in (n - 1, n)]
    assert share[0] < 0.9 <= share[1]
    assert smallest_n({"target": 1.0, "rater": 0.0, "residual": 1.0}, 0.8, 0.5, kind="erho2") == 4
    assert smallest_n({"target": 1.0, "rater": 1e9, "residual": 1.0}, 0.99, 0.5,
                      n_max=50) is None


def test_hdi_and_design_k():
    x = np.r_[np.zeros(3), np.linspace(10, 11, 97)]
    assert hdi(x) == pytest.approx((10, 10 + 94 / 96))  # 95 of the 100 draws (94% HDI)
    assert design_k([4, 4, 4]) == 4
    assert design_k([2, 4, 4]) == pytest.approx(3 / (1 / 2 + 1 / 4 + 1 / 4))


HOSTILE = {"target": "<script>alert('t')</script>", "judge": '"><img src=x onerror=alert(1)>',
           "rating": "rating</td><script>"}
"""Column names that would be markup if the report did not escape them."""


@pytest.fixture(scope="module")
def fitted():
    """Shrout & Fleiss's table fitted under hostile column names (draws 300, chains 2)."""
    df = pd.read_csv(SF).rename(columns=HOSTILE)
    return reliability(df, target=HOSTILE["target"], rater=HOSTILE["judge"],
                       response=HOSTILE["rating"], draws=300, tune=300, chains=2, seed=1,
                       progress=False)


def test_fit_reports_posteriors_with_intervals(fitted):
    rows = {r["name"]: r for r in fitted.coefficients()}
    for name, value in PUBLISHED.items():
        r = rows[name]
        assert round(r["reml"], 2) == value
        lo, hi = r["posterior_hdi"]
        assert 0 <= lo < r["posterior_mean"] < hi <= 1
        assert r["meaning"]
    d = {r["n_raters"]: r for r in fitted.d_table()}
    assert d[4]["phi_mean"] == pytest.approx(rows["ICC(A,k)"]["posterior_mean"])
    assert d[1]["erho2_reml"] == pytest.approx(rows["ICC(C,1)"]["reml"])
    g = {r["component"]: r for r in fitted.g_table()}
    assert set(g) == {HOSTILE["target"], HOSTILE["judge"], "residual"}
    assert sum(r["share_reml"] for r in g.values()) == pytest.approx(1)
    assert any("confounded" in n for n in fitted.notes)


def test_outputs_are_report_html_with_its_section_and_reliability_json(fitted, tmp_path):
    from varcomp.analyses.reliability import write_reliability

    out = write_reliability(fitted, tmp_path / "r")
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "report.html", "reliability.json", "summary.json", "sufficient.nc"}
    info = json.loads((out / "reliability.json").read_text())
    assert [r["name"] for r in info["coefficients"]][:3] == ["ICC(1)", "ICC(1,k)", "ICC(A,1)"]
    assert [r["n_raters"] for r in info["curve"]] == list(range(1, 9))
    curve = {r["n_raters"]: r for r in info["curve"]}
    for r in info["d_study"]:  # the figure's points are the D-study table's
        assert curve[r["n_raters"]]["phi_mean"] == r["phi_mean"]
        assert curve[r["n_raters"]]["erho2_hdi"] == r["erho2_hdi"]
    assert 'id="reliability"' in (out / "report.html").read_text()


def _section(page: str) -> str:
    start = page.index('<h2 id="reliability"')
    return page[start:page.index("<h2 ", start + 1)]


def test_report_section_shows_the_tables_escaped(fitted):
    """report.html's reliability section: every ICC with its meaning, posterior mean, HDI and
    REML plug-in, the G and D studies, the curve embedded, the n' answers; the user's column
    names escaped. Without the reliability tables (any other fit) there is no such section."""
    from markupsafe import escape

    from varcomp.analyses.report import render_report
    from varcomp.analyses.report.render import ci, fmt

    table = fitted.as_dict()
    page = render_report(fitted.twoway.fit_result, reliability=table)
    section = _section(page)
    assert '<a href="#reliability">Reliability</a>' in page
    for r in table["coefficients"]:
        row = (f'<td class="l">{r["name"]}</td><td>{fmt(r["posterior_mean"], 3)}</td>'
               f'<td>{ci(r["posterior_hdi"])}</td><td>{fmt(r["reml"], 3)}</td>'
               f'<td class="l">{escape(r["meaning"])}</td>')
        assert row in section, r["name"]
    for r in table["g_study"]:
        assert f'<td class="l">{escape(r["component"])}</td><td>{fmt(r["variance_mean"])}' \
            in section
    for r in table["d_study"]:
        assert f'<tr><td>{r["n_raters"]}</td><td>{fmt(r["erho2_mean"], 3)}</td>' in section
    reach = table["reach"]
    assert f"&Phi;: <b>{reach['phi']}</b> raters" in section
    assert f"E&rho;&sup2;: <b>{reach['erho2']}</b> raters" in section
    assert section.count('<img alt="D study') == 1
    assert 'src="data:image/png;base64,iVBOR' in section
    for name in HOSTILE.values():
        assert name not in page  # raw, it would be markup
    assert str(escape(HOSTILE["target"])) in section and str(escape(HOSTILE["judge"])) in section
    assert "<script" not in page  # the report has no script element at all
    assert 'id="reliability"' not in render_report(fitted.twoway.fit_result)


@pytest.mark.slow
def test_missing_ratings_and_cli(tmp_path, capsys):
    df = pd.read_csv(SF)
    df.loc[[1, 6, 13], "rating"] = np.nan  # three missing ratings: an unbalanced design
    path = tmp_path / "sf.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["reliability", str(path), "--target", "target", "--rater", "judge",
                 "--response", "rating", "--draws", "300", "--tune", "300", "--chains", "2",
                 "--out", str(out)]) == 0
    info = json.loads((out / "reliability.json").read_text())
    assert info["k"] == pytest.approx(design_k([3, 3, 4, 3, 4, 4]))
    assert all(0 <= r["reml"] <= 1 for r in info["coefficients"])
    assert "ICC(A,1)" in capsys.readouterr().out


BAD = [
    (["--response", "nope"], "no column 'nope'"),
    (["--response", "judge"], "must differ"),
    (["--response", "rating", "--d-study", "1,x"], "--d-study must be whole numbers"),
    (["--response", "rating", "--d-study", "0,2"], "at least 1"),
    (["--response", "rating", "--goal", "1.5"], "must be in (0, 1)"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, capsys):
    out = tmp_path / "o"
    try:
        code = main(["reliability", str(SF), "--target", "target", "--rater", "judge", *argv,
                     "--out", str(out)])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_python_bad_input_is_a_data_error(tmp_path):
    df = pd.DataFrame({"t": ["a", "a", "b", "b"], "r": ["x", "y", "z", "w"], "y": [1, 2, 3, 4.]})
    with pytest.raises(DataError, match="nested in targets"):
        plugin(df, target="t", rater="r", response="y")
    df2 = pd.DataFrame({"t": ["a", "b"], "r": ["x", "x"], "y": ["1", "high"]})
    with pytest.raises(DataError, match="must be numbers"):
        plugin(df2, target="t", rater="r", response="y")
    with pytest.raises(DataError, match="at least 2 distinct"):
        plugin(df.assign(t="a"), target="t", rater="r", response="y")
