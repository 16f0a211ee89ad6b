"""varcomp plan: the textbook formulas exactly, the assurance curve, bad input."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from varcomp.analyses.cli import main
from varcomp.analyses.plan import plan
from varcomp.models.errors import DataError
from varcomp.models.planning import assurance, clusters_per_arm, design_effect, smallest_assured


def _textbook(icc, m, cv, d, alpha, power):
    """Eldridge (2006) / Donner & Klar: written out independently with hard-coded z values."""
    z = {0.05: 1.959963984540054, 0.01: 2.5758293035489004}[alpha]
    zb = {0.8: 0.8416212335729143, 0.9: 1.2815515655446004}[power]
    n = 2 * (z + zb) ** 2 / d**2
    de = 1 + ((1 + cv**2) * m - 1) * icc
    return math.ceil(n * de / m), de


@pytest.mark.parametrize(("icc", "m", "cv", "d", "alpha", "power"), [
    (0.05, 20, 0.0, 0.3, 0.05, 0.8), (0.05, 20, 0.5, 0.3, 0.05, 0.8),
    (0.01, 50, 0.7, 0.25, 0.01, 0.9), (0.2, 8, 0.3, 0.5, 0.05, 0.9),
    (0.0, 10, 0.0, 0.4, 0.05, 0.8)])
def test_fixed_icc_equals_the_closed_form(icc, m, cv, d, alpha, power):
    k, de = _textbook(icc, m, cv, d, alpha, power)
    p = plan(size=m, cv=cv, effect=d, alpha=alpha, power=power, icc=icc)
    assert p["clusters_at_mean_icc"] == k == p["clusters_assured"]
    assert p["design_effect"] == pytest.approx(de, rel=1e-12)
    assert clusters_per_arm(icc, m, d, cv=cv, alpha=alpha, power=power) == k
    # a fixed ICC: assurance jumps from 0 to 1 at k
    curve = {r["clusters"]: r["assurance"] for r in p["curve"]}
    assert curve[k] == 1.0 and all(a == 0.0 for c, a in curve.items() if c < k)


def test_kish_design_effect_and_se_target():
    assert design_effect(0.1, 11) == pytest.approx(2.0)  # 1 + (11 - 1) 0.1
    # SE^2 = sd^2 DE / (k m): sd 2, m 10, ICC 0.1 (DE 1.9), SE 0.1 -> k = 4 * 1.9 / (10 * 0.01)
    p = plan(size=10, se=0.1, sd=2.0, icc=0.1)
    assert p["clusters_at_mean_icc"] == 76


def test_assurance_is_monotone_and_reaches_its_level():
    p = plan(size=20, cv=0.4, effect=0.3, icc_prior="beta:2:30", seed=3)
    a = np.array([r["assurance"] for r in p["curve"]])
    assert np.all(np.diff(a) >= 0) and a[0] == 0.0 and a[-1] == 1.0
    ks = np.array([r["clusters"] for r in p["curve"]])
    at = a[np.searchsorted(ks, p["clusters_assured"])] if p["clusters_assured"] in ks else None
    kn = clusters_per_arm(np.random.default_rng(3).beta(2, 30, 4000), 20, 0.3, cv=0.4)
    assert float(np.mean(kn <= p["clusters_assured"])) >= 0.8 > float(
        np.mean(kn <= p["clusters_assured"] - 1))
    assert at is None or at >= 0.8
    # the uncertain ICC asks for more clusters than its mean does
    assert p["clusters_assured"] > p["clusters_at_mean_icc"]


def test_smallest_assured_is_the_fewest():
    kn = np.array([3, 5, 5, 7, 9, 12, 12, 12, 15, 20])
    for level in (0.1, 0.35, 0.5, 0.8, 0.95, 1.0):
        k = smallest_assured(kn, level)
        assert assurance(kn, [k])[0] >= level > assurance(kn, [k - 1])[0]


def test_normal_quantiles_used_are_the_standard_ones():
    assert NormalDist().inv_cdf(0.975) == pytest.approx(1.959963984540054, abs=1e-12)


def test_cli_writes_the_pair_beside_its_table(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["plan", "--icc", "0.05", "--size", "20", "--cv", "0.5", "--effect", "0.3",
                 "--out", str(out)]) == 0
    assert "clusters per arm at the mean ICC: 20" in capsys.readouterr().out
    info = json.loads((out / "plan.json").read_text())
    assert info["clusters_assured"] == 20
    assert (out / "plan.csv").read_text().startswith("clusters,assurance\n")
    assert "<script" not in (out / "plan.html").read_text()


def test_html_is_autoescaped(tmp_path):
    from varcomp.analyses.plan import write_plan

    p = plan(size=5, effect=0.5, icc=0.1)
    p["icc"] = "<script>alert(1)</script>"
    html = (write_plan(p, tmp_path / "x") / "plan.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html


BAD = [
    (["--size", "20", "--effect", "0.3"], "one of the arguments --icc --icc-prior --from"),
    (["--icc", "0.05", "--size", "20"], "one of the arguments --effect --se"),
    (["--icc", "1.5", "--size", "20", "--effect", "0.3"], "the ICC must be a number in [0, 1)"),
    (["--icc", "nan", "--size", "20", "--effect", "0.3"], "the ICC must be a number in [0, 1)"),
    (["--icc-prior", "beta:0:1", "--size", "20", "--effect", "0.3"], "beta:A:B with A, B > 0"),
    (["--icc-prior", "gamma:1:1", "--size", "20", "--effect", "0.3"], "beta:A:B with A, B > 0"),
    (["--icc", "0.05", "--size", "-3", "--effect", "0.3"], "cluster size must be a positive"),
    (["--icc", "0.05", "--size", "20", "--cv", "-1", "--effect", "0.3"], "coefficient of"),
    (["--icc", "0.05", "--size", "20", "--effect", "0"], "effect size must be a positive"),
    (["--icc", "0.05", "--size", "20", "--se", "inf"], "standard error must be a positive"),
    (["--from", "/nonexistent-folder", "--size", "20", "--effect", "0.3"], "not a varcomp"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "o"
    try:
        code = main(["plan", *argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_python_bad_input_is_a_data_error():
    with pytest.raises(DataError, match="exactly one ICC source"):
        plan(size=10, effect=0.3, icc=0.1, icc_prior="beta:1:1")
    with pytest.raises(DataError, match="one target"):
        plan(size=10, effect=0.3, se=0.1, icc=0.1)
