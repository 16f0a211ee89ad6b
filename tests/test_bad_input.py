"""The bad-input table (docs/bad-input.md), row by row: one line on stderr, exit 2, nothing written.

Each case builds its input file in a temporary folder and runs the CLI in process; the output
folder must not exist afterwards. Awkward but valid inputs are fitted (or described) honestly.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses.cli import main
from varcomp.models.data import ClusteredData, DataError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--draws", "200", "--tune", "200", "--chains", "2"]


def _frame(seed: int = 0, n: int = 5, L: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(L)], n)
    return pd.DataFrame({"g": g, "y": rng.normal(size=g.size) + np.repeat(rng.normal(size=L), n)})


def run(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def refused(tmp_path, capsys, argv, words: str) -> None:
    out = tmp_path / "out"
    code, err = run([*argv, "--out", out] if argv[0] in ("fit", "compare") else argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert not out.exists()


def _csv(tmp_path, df: pd.DataFrame, name: str = "d.csv", **kw) -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False, **kw)
    return path


RESPONSE_KINDS = {
    "date": (pd.to_datetime("2020-01-01") + pd.to_timedelta(np.arange(30), unit="D"),
             "date/time"),
    "duration": (pd.to_timedelta(np.arange(30), unit="s"), "duration"),
    "complex": (np.arange(30) + 1j, "complex"),
    "bool": (np.arange(30) % 2 == 0, "true/false"),
}


@pytest.mark.parametrize("kind", list(RESPONSE_KINDS))
def test_responses_that_are_not_real_numbers(kind):
    values, words = RESPONSE_KINDS[kind]
    df = pd.DataFrame({"g": np.repeat(list("abcdef"), 5), "y": values})
    with pytest.raises(DataError, match=words):
        ClusteredData.from_frame(df, group="g", response="y")


@pytest.mark.parametrize(("values", "words"), [
    (lambda d: d.y * 1e160, "span"),
    (lambda d: d.y * 1e-200, "less than 1e-150"),
    (lambda d: d.y + 2e300, "beyond 1e+300"),
    (lambda d: d.g.map({f"g{i}": float(i) for i in range(6)}), "constant within every cluster"),
])
def test_extreme_values_are_refused_with_the_reason(tmp_path, capsys, values, words):
    df = _frame()
    df["y"] = values(df)
    refused(tmp_path, capsys, ["fit", _csv(tmp_path, df), "--group", "g", "--response", "y",
                               *SMALL], words)


def test_a_large_offset_with_a_normal_spread_is_fitted(tmp_path, capsys):
    """A large location with an ordinary spread is fitted on the data as given (offset-stable
    statistics), results in its units. (At 1e299 a spread of 1 is below float64's resolution:
    such a column is constant as stored, and is refused as such.)"""
    df = _frame()
    df["y"] = df.y + 1e12
    out = tmp_path / "o"
    code, err = run(["fit", _csv(tmp_path, df), "--group", "g", "--response", "y", *SMALL,
                     "--out", out], capsys)
    assert code == 0, err
    mu = json.loads((out / "summary.json").read_text())["fits"]["sufficient"]["params"]["mu"]
    assert mu["mean"] == pytest.approx(1e12 + float(_frame().y.mean()), abs=5.0)


def test_collinear_and_missing_multivariate_responses(tmp_path, capsys):
    df = _frame()
    df["z"] = 2 * df.y + 1
    refused(tmp_path, capsys, ["fit", _csv(tmp_path, df), "--group", "g", "--response", "y",
                               "--response", "z", *SMALL], "collinear within clusters")
    df["z"] = np.nan
    refused(tmp_path, capsys, ["fit", _csv(tmp_path, df, "e.csv"), "--group", "g",
                               "--response", "y", "--response", "z", *SMALL],
            "has no observed value")


def test_a_shifted_row_is_refused_and_a_trailing_delimiter_is_read(tmp_path, capsys):
    body = "g,y\n" + "".join(f"g{i % 3},{i}.5,{i}\n" for i in range(12))
    path = tmp_path / "shift.csv"
    path.write_text(body)
    refused(tmp_path, capsys, ["fit", path, "--group", "g", "--response", "y", *SMALL],
            "the columns would shift")
    trailing = tmp_path / "trail.csv"
    trailing.write_text("g,y\n" + "".join(f"g{i % 3},{i * 1.5},\n" for i in range(12)))
    code, err = run(["describe", trailing, "--group", "g", "--response", "y"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("variant", ["semicolon", "tab", "gzip", "bom", "padded"])
def test_dialects_are_read_and_named_when_a_column_is_missing(tmp_path, capsys, variant):
    """A ;/tab-delimited, gzipped, BOM or padded-header file is read; a wrong column name is
    reported with the dialect that was read."""
    df = _frame()
    text = df.to_csv(index=False, sep={"semicolon": ";", "tab": "\t"}.get(variant, ","))
    path = tmp_path / "d.csv"
    if variant == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    elif variant == "bom":
        path.write_text(text, encoding="utf-8-sig")
    elif variant == "padded":
        path.write_text(text.replace("g,y", " g , y "))
    else:
        path.write_text(text)
    code, err = run(["describe", path, "--group", "g", "--response", "y"], capsys)
    assert code == 0, err
    refused(tmp_path, capsys, ["fit", path, "--group", "G", "--response", "y"], "read as CSV")


def test_labels_are_text_and_mixed_types_are_refused():
    df = pd.DataFrame({"g": ["07", "7", "1E1", "10"] * 3, "y": np.arange(12.0)})
    d = ClusteredData.from_frame(df, group="g", response="y")
    assert d.n_groups == 4 and list(d.groups) == ["07", "7", "1E1", "10"]
    mixed = pd.DataFrame({"g": [1, "1", 2, "2"] * 3, "y": np.arange(12.0)})
    with pytest.raises(DataError, match="different types"):
        ClusteredData.from_frame(mixed, group="g", response="y")


@pytest.mark.parametrize(("prior", "words"), [
    ("tau=halfnormal:1e-300", "is outside"),
    ("tau=halfnormal:1e300", "is outside"),
    ("tau=halfstudentt:5:inf", "degrees of freedom"),
    ("sigma=exponential:nan", "positive and finite"),
    ("mu=normal:1e12:10", "more than 10^6 sd(y)"),
])
def test_prior_bounds(tmp_path, capsys, prior, words):
    refused(tmp_path, capsys, ["fit", "dyestuff", "--prior", prior, *SMALL], words)


@pytest.mark.parametrize(("argv", "words"), [
    (["fit", "dyestuff", "--model", "partial"],
     "unknown model 'partial' for the oneway family: choose one of centred, noncentred, "
     "marginal, sufficient"),
    (["fit", "pastes", "--formula", "strength ~ 1 + (1|batch/cask)", "--model", "partial"],
     "unknown model 'partial' for the nested family: choose one of centred, noncentred, "
     "marginal, sufficient"),
])
def test_model_the_family_does_not_have(tmp_path, capsys, argv, words):
    """``--model NAME`` names a form the data's family lacks: one line naming its forms."""
    refused(tmp_path, capsys, [*argv, *SMALL], words)


def test_sufficient_of_an_unbalanced_crossed_design(tmp_path, capsys):
    """The crossed closed form does not exist for unbalanced data: refused by name, with why."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": [f"a{i}" for i in range(3) for _ in range(8)],
                       "b": [f"b{j}" for _ in range(3) for j in range(4) for _ in range(2)],
                       "y": rng.normal(size=24)}).iloc[1:]
    refused(tmp_path, capsys, ["fit", _csv(tmp_path, df), "--formula", "y ~ 1 + (1|a) + (1|b)",
                               "--model", "sufficient", *SMALL],
            "--model sufficient does not apply to these data: ")


def test_draws_beyond_the_memory_budget(tmp_path, capsys):
    refused(tmp_path, capsys, ["fit", "dyestuff", "--draws", "1000000000"], "GiB budget")


def test_marginal_of_a_huge_cluster_is_refused_before_allocating():
    from varcomp.analyses.fit import fit

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.r_[np.zeros(10**6, int), 1, 1].astype(str),
                       "y": rng.normal(size=10**6 + 2)})
    with pytest.raises(DataError, match="covariance factors"):
        fit(ClusteredData.from_frame(df, group="g", response="y"), "marginal")


def test_partition_prior_only_for_one_way(tmp_path, capsys):
    refused(tmp_path, capsys, ["fit", "gcsemv", "--variance-prior", "partition", *SMALL],
            "one-way model")


def test_describe_into_a_closed_pipe_is_quiet():
    """`varcomp describe ... | head -1`: exit 0 and no broken-pipe traceback."""
    cmd = (f"{sys.executable} -c 'from analyses.cli import main; import sys; "
           f"sys.exit(main([\"describe\", \"radon\"]))' | head -1")
    res = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr
    assert res.stdout.count("\n") == 1


def test_an_internal_error_is_one_line_with_a_log(tmp_path, capsys, monkeypatch):
    """A bug (here: an exception injected into the fit) is exit 1 with one line pointing to a
    log file that holds the traceback, not exit 2 and not a traceback on the terminal."""
    import varcomp.analyses.fit as fit_module

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(fit_module, "fit", boom)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, err = run(["fit", "dyestuff", "--out", tmp_path / "o"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    log = next((tmp_path / "cache" / "varcomp" / "logs").glob("*.log"))
    assert "RuntimeError: injected" in log.read_text()


# ---------------------------------------------------------------- issue 24: the adversarial battery
def _two_responses(tmp_path) -> Path:
    df = _frame()
    df["y2"] = df.y * 2.0 + np.random.default_rng(3).normal(size=len(df))
    df["x"] = np.arange(len(df), dtype=float)
    df["x2"] = df.x.copy()
    df.loc[3, "x"] = np.nan  # a missing covariate in one model's column ...
    df.loc[7, "x2"] = np.nan  # ... and in the other's elsewhere: the row counts match
    return _csv(tmp_path, df)


@pytest.mark.parametrize(("formulas", "words"), [
    (["y ~ 1 + (1|g)", "y2 ~ 1 + (1|g)"], "predicts 'y2' but the first model predicts 'y'"),
    (["y ~ 1 + (1|g)", "np.log(y) ~ 1 + (1|g)"], "predicts 'np.log(y)'"),
    (["y ~ x + (1|g)", "y ~ x2 + (1|g)"], "data rows [8] only in the first, [4] only in this"),
])
def test_compare_refuses_other_responses_and_other_rows(tmp_path, capsys, formulas, words):
    path = _two_responses(tmp_path)
    refused(tmp_path, capsys, ["compare", path, *[a for f in formulas for a in ("--formula", f)],
                               *SMALL], words)


@pytest.mark.parametrize(("body", "words"), [
    ("g,y\na,1,9\nb,2\na,3\nb,4\nc,5\nc,6\n", "line 2 has 3 fields but the header names 2"),
    ("g,y\na,1\nb,2\na,3,9\nb,4\nc,5\nc,6\n", "line 4 has 3 fields"),
    ("g,y\n" + "".join(f"g{i % 3},{i}\n" for i in range(300)) + "g1,1,2\n", "line 302"),
])
def test_a_row_longer_than_the_header_is_refused_naming_its_line(tmp_path, capsys, body, words):
    path = tmp_path / "long.csv"
    path.write_text(body)
    refused(tmp_path, capsys, ["describe", path, "--group", "g", "--response", "y"], words)


@pytest.mark.parametrize(("prior", "words"), [
    ("icc=beta:2:2", "total and icc are priors of --variance-prior partition"),
    ("tau=gamma:2", "unknown family 'gamma'"),
    ("tau=halfnormal:abc", "arguments must be numbers"),
    ("tau=halfnormal:1:2", "halfnormal takes 1 number(s), got 2"),
    ("mu=halfnormal:3", "mu takes a normal prior"),
    ("tau[batch]=halfnormal:3", "tau takes no [label]"),
    ("nu=normal:0:1", "this model has no parameter 'nu'"),
    ("tau", "no NAME="),
])
def test_bad_priors_one_grammar_one_message(tmp_path, capsys, prior, words):
    out = tmp_path / "out"
    code, err = run(["fit", "dyestuff", "--prior", prior, *SMALL, "--out", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert words in err and "use NAME=FAMILY:ARGS" in err and "beta:A:B" in err, err
    assert not out.exists()


@pytest.mark.parametrize(("extra", "prior", "words"), [
    (["--variance-prior", "partition"], "tau=halfnormal:10", "tau is derived: set total and icc"),
    (["--variance-prior", "partition"], "icc=halfnormal:2", "icc takes a beta prior"),
    (["--variance-prior", "partition"], "icc=beta:0:2", "0 < a <= 1000"),
    (["--formula", "Yield ~ 1 + (1|Batch)"], "total=halfnormal:3", "partition"),
])
def test_bad_priors_of_the_partition(tmp_path, capsys, extra, prior, words):
    refused(tmp_path, capsys, ["fit", "dyestuff", *extra, "--prior", prior, *SMALL], words)


@pytest.mark.parametrize(("prior", "words"), [
    ("tau[zz]=halfnormal:3", "no factor 'zz'; factors: ['batch', 'batch:cask']"),
    ("mu=normal:0:1", "a formula's mean is intercept=normal:LOC:SCALE"),
    ("beta[nope]=normal:1", "no fixed-effects column 'nope'"),
])
def test_bad_priors_of_mixed_models(tmp_path, capsys, prior, words):
    refused(tmp_path, capsys, ["fit", "pastes", "--formula", "strength ~ 1 + (1|batch/cask)",
                               "--prior", prior, *SMALL], words)
