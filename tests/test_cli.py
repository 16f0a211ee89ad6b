"""The CLI contract for bad input: exit code 2, one line on stderr, no traceback, nothing written.

Each test is one row of the bad-input table (docs/bad-input.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses.cli import main


def run(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_bad_input(args, capsys, match: str, out_dir=None):
    code, _, err = run(args, capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match.lower() in lines[0].lower(), lines[0]
    if out_dir is not None:
        assert not out_dir.exists(), "an output was written for bad input"


@pytest.fixture
def good_csv(tmp_path):
    df = pd.DataFrame({"g": np.repeat(list("abcd"), 3), "y": np.arange(12.0) ** 1.5})
    path = tmp_path / "good.csv"
    df.to_csv(path, index=False)
    return path


def fit_args(path, out, *extra):
    return ["fit", path, "--group", "g", "--response", "y", "--out", out, *extra]


def test_datasets_lists_every_shipped_dataset(capsys):
    code, out, _ = run(["datasets"], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "dyestuff", "dyestuff2", "rail", "radon", "gcsemv", "pastes", "penicillin",
        "scotssec", "sleepstudy", "orthodont", "slopes_boundary"]


def test_describe_dyestuff_prints_box_and_tiao_anova(capsys):
    code, out, _ = run(["describe", "dyestuff"], capsys)
    assert code == 0
    assert "11271.5" in out and "2451.25" in out and "4.598" in out


def test_describe_rail(capsys):
    code, out, _ = run(["describe", "rail"], capsys)
    assert code == 0
    assert "L = 6 clusters" in out and "min 3, median 3, max 3" in out


def test_missing_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert_bad_input(fit_args(tmp_path / "nope.csv", out), capsys, "not found", out)


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("")
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "empty", out)


def test_header_only_file(tmp_path, capsys):
    path = tmp_path / "header.csv"
    path.write_text("g,y\n")
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "no rows", out)


def test_unreadable_file(tmp_path, capsys):
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"\x00\x01 this is not parquet \xff" * 10)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "cannot read", out)


def test_missing_group_column_names_columns(good_csv, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["fit", good_csv, "--group", "Batch", "--response", "y", "--out", out]
    assert_bad_input(args, capsys, "columns present: g, y", out)


def test_missing_response_column_names_columns(capsys):
    assert_bad_input(["describe", "data/dyestuff.csv", "--group", "Batch", "--response", "Nope"],
                     capsys, "columns present: Batch, Yield")


def test_duplicate_column_names(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text("g,y,y\na,1,2\nb,3,4\n")
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "duplicate column", out)


def test_non_numeric_response(tmp_path, capsys):
    path = tmp_path / "text.csv"
    pd.DataFrame({"g": list("aabb"), "y": ["1", "2", "three", "4"]}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "not numeric", out)


def test_parquet_with_wrong_types(tmp_path, capsys):
    """A typed boolean column is named for what it is, not silently read as 0/1."""
    path = tmp_path / "typed.parquet"
    pd.DataFrame({"g": list("aabb"), "y": pd.Series([True, False, True, True])}).to_parquet(path)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "is true/false", out)


def test_all_responses_missing(tmp_path, capsys):
    path = tmp_path / "nan.csv"
    pd.DataFrame({"g": list("aabb"), "y": [np.nan] * 4}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "missing", out)


def test_missing_group_label(tmp_path, capsys):
    path = tmp_path / "nogroup.csv"
    path.write_text("g,y\na,1\n,2\nb,3\nb,4\n")
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "no 'g' label", out)


def test_one_cluster_only(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.DataFrame({"g": ["a"] * 5, "y": np.arange(5.0)}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "only one cluster", out)


def test_every_cluster_a_singleton(tmp_path, capsys):
    path = tmp_path / "single.csv"
    pd.DataFrame({"g": list("abcde"), "y": np.arange(5.0)}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "single", out)


def test_constant_response(tmp_path, capsys):
    path = tmp_path / "const.csv"
    pd.DataFrame({"g": list("aabb"), "y": [3.0] * 4}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert_bad_input(fit_args(path, out), capsys, "constant", out)


@pytest.mark.parametrize("flag", ["--draws", "--tune", "--chains"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_sampler_settings(good_csv, tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    assert_bad_input(fit_args(good_csv, out, flag, value), capsys, "positive integer", out)


def test_unknown_model(good_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert_bad_input(fit_args(good_csv, out, "--model", "latent"), capsys, "invalid choice", out)


def test_unknown_sampler(good_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert_bad_input(fit_args(good_csv, out, "--sampler", "stan"), capsys, "invalid choice", out)


def test_bad_prior_override(good_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert_bad_input(fit_args(good_csv, out, "--prior", "tau=gamma:2"), capsys, "bad prior", out)


def test_output_directory_cannot_be_written(good_csv, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker / "sub"
    assert_bad_input(fit_args(good_csv, out), capsys, "not a folder", out)


def test_simulator_refuses_non_pd_V(tmp_path, capsys):
    """ERRATA 1: the notes' printed V = [[2, 3], [3, 4]] has determinant -1."""
    out = tmp_path / "sim.csv"
    args = ["simulate", "--clusters", "10", "--size", "5", "--mu", "0,0", "--V", "2,3;3,4",
            "--Sigma", "0.25,-0.24;-0.24,0.36", "--out", out]
    assert_bad_input(args, capsys, "smallest eigenvalue", out)


def test_simulator_refuses_non_pd_sigma(tmp_path, capsys):
    out = tmp_path / "sim.csv"
    args = ["simulate", "--clusters", "10", "--size", "5", "--mu", "0,0", "--V", "4,3;3,4",
            "--Sigma", "1,2;2,1", "--out", out]
    assert_bad_input(args, capsys, "smallest eigenvalue", out)


@pytest.mark.parametrize("which", ["--tau", "--sigma"])
def test_simulator_refuses_negative_sd(tmp_path, capsys, which):
    out = tmp_path / "sim.csv"
    args = ["simulate", "--clusters", "4", "--size", "3", "--tau", "1", "--sigma", "1",
            "--out", out]
    args[args.index(which) + 1] = "-1"
    assert_bad_input(args, capsys, "positive", out)


def test_simulator_writes_the_notes_bivariate_design(tmp_path, capsys):
    out = tmp_path / "sim.csv"
    args = ["simulate", "--clusters", "10", "--size", "100", "--mu", "0,0", "--V", "4,3;3,4",
            "--Sigma", "0.25,-0.24;-0.24,0.36", "--out", out]
    code, _, err = run(args, capsys)
    assert code == 0, err
    df = pd.read_csv(out)
    assert df.shape == (1000, 3) and df["group"].nunique() == 10


def test_console_script_ends_with_mains_code_and_complete_output(tmp_path, capsys):
    """The console entry (`varcomp`, `python -m analyses.cli`) skips Python's teardown with
    os._exit: its exit code is main's, piped output is complete, and a fit's files are whole."""
    import json
    import subprocess
    import sys

    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    cli = [sys.executable, "-m", "varcomp"]
    res = subprocess.run([*cli, "datasets"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout == listing
    res = subprocess.run([*cli, "fit", str(tmp_path / "none.csv"), "--group", "g"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    out = tmp_path / "dy"
    res = subprocess.run([*cli, "fit", "dyestuff", "--draws", "200", "--tune", "200",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.rstrip().endswith(")")  # the summary line
    assert json.loads((out / "summary.json").read_text())["fits"]["sufficient"]["params"]
    assert (out / "report.html").read_text().rstrip().endswith("</html>")
