"""Out-of-core sufficient statistics (models.chunked) against the in-memory data layer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varcomp.models.chunked import read_stats
from varcomp.models.data import DataError, load
from varcomp.models.density import marginal_logp
from varcomp.models.priors import Priors


def _frame(rng: np.random.Generator) -> pd.DataFrame:
    """Unbalanced groups (sizes 1..40), rows shuffled so most groups span several chunks.

    An offset of 1e6 makes a naive sum-of-squares merge lose digits (the statistics must not).
    """
    sizes = np.concatenate([[1, 1, 2], rng.integers(1, 40, size=37)])
    labels = np.repeat([f"s{i:02d}" for i in range(sizes.size)], sizes)
    effects = np.repeat(rng.normal(0.0, 3.0, sizes.size), sizes)
    y = 1e6 + effects + rng.normal(0.0, 1.0, size=labels.size)
    order = rng.permutation(labels.size)
    return pd.DataFrame({"school": labels[order], "other": 0, "score": y[order]})


def _write(df: pd.DataFrame, path, kind: str) -> None:
    if kind == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False, row_group_size=50)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_chunked_stats_equal_in_memory(tmp_path, rng, kind):
    """Merging per-chunk (n, mean, S) with Chan's update gives the one-pass statistics.

    Statistics are exact functions of the rows, so the only tolerance is rounding; the labels and
    their first-appearance order are those of ClusteredData.from_frame.
    """
    df = _frame(rng)
    path = tmp_path / f"d.{kind}"
    _write(df, path, kind)
    mem = load(path, group="school", response="score")
    chunked = read_stats(path, group="school", response="score", chunk_rows=97, csv_block=1 << 12)

    assert chunked.n_obs == mem.n_obs == len(df)
    assert list(chunked.groups) == list(mem.groups)
    np.testing.assert_array_equal(chunked.stats.n, mem.stats.n)
    np.testing.assert_allclose(chunked.stats.mean, mem.stats.mean, rtol=1e-14, atol=0)
    np.testing.assert_allclose(chunked.stats.ss, mem.stats.ss, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(chunked.stats.scatter, mem.stats.scatter, rtol=1e-9)
    # the density the sufficient builder evaluates, and the priors scaled to the data
    args = (1e6, 2.0, 1.5)
    assert marginal_logp(*chunked.stats.column(0), *args) == pytest.approx(
        marginal_logp(*mem.stats.column(0), *args), rel=1e-12)
    a, b = Priors.default(chunked), Priors.default(mem)
    assert a.center == pytest.approx(b.center, rel=1e-14)
    assert (a.scale, a.mu.scale, a.tau.scale) == pytest.approx((b.scale, b.mu.scale, b.tau.scale),
                                                              rel=1e-9)
    assert chunked.anova()["F"] == pytest.approx(mem.anova()["F"], rel=1e-9)


def test_chunks_really_split_groups(tmp_path, rng):
    """The fixture is meaningful: several chunks, and groups whose rows fall in more than one."""
    df = _frame(rng)
    chunk_of_row = np.arange(len(df)) // 97
    spans = df.assign(chunk=chunk_of_row).groupby("school")["chunk"].nunique()
    assert chunk_of_row.max() >= 3 and (spans > 1).sum() > 10
    path = tmp_path / "d.csv"
    _write(df, path, "csv")
    assert path.stat().st_size > 4 * (1 << 12)  # several CSV blocks too


def test_csv_labels_are_text_as_written_and_missing_dropped(tmp_path):
    """Both readers take labels as the text written (models.io: 07 and 7 are two clusters, 2.0
    is not 2), in order of first appearance; missing y rows are dropped and counted."""
    path = tmp_path / "d.csv"
    path.write_text("g,y\n07,1.0\n2.0,2.0\n7,3.0\n3,\n3,5.0\n2,inf\n2,4.0\n")
    mem = load(path, group="g", response="y")
    chunked = read_stats(path, group="g", response="y", csv_block=1 << 12)
    assert list(chunked.groups) == list(mem.groups) == ["07", "2.0", "7", "3", "2"]
    assert chunked.dropped_rows == mem.dropped_rows == 2
    np.testing.assert_array_equal(chunked.stats.n, mem.stats.n)
    np.testing.assert_allclose(chunked.stats.mean, mem.stats.mean, rtol=1e-15)
    np.testing.assert_allclose(chunked.stats.ss, mem.stats.ss, rtol=1e-15)


@pytest.mark.parametrize(("text", "message"), [
    ("g,y\na,1\n,2\n", "no 'g' label"),
    ("g,y\na,1\nb,x\n", "not numeric"),
    ("g,z\na,1\n", "response column 'y' not found"),
    ("g,y\n", "no rows"),
])
def test_bad_files_raise_one_line(tmp_path, text, message):
    """Bad input raises DataError naming the problem, as the in-memory reader does."""
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_stats(path, group="g", response="y")


def test_rows_are_not_available(tmp_path, rng):
    """The statistics-only data refuse row access instead of returning something wrong."""
    df = _frame(rng)
    path = tmp_path / "d.parquet"
    _write(df, path, "parquet")
    with pytest.raises(DataError, match="sufficient statistics"):
        _ = read_stats(path, group="school", response="score").y


def test_cli_reads_large_files_in_chunks(tmp_path, monkeypatch, capsys):
    """`varcomp fit FILE --model sufficient` reduces a large file while reading it, and the
    statistics the sampler sees are the in-memory path's (its parameter block, to 1e-12)."""
    import json

    import varcomp.analyses.cli as cli
    import varcomp.models.chunked as chunked
    from varcomp.models import load
    from varcomp.models.compiled import oneway
    from varcomp.models.priors import Priors

    rng = np.random.default_rng(5)
    g = rng.integers(0, 40, size=3000)
    frame = pd.DataFrame({"g": [f"s{k}" for k in g], "y": 100 + rng.normal(size=40)[g]
                          + rng.normal(size=g.size)})
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    calls = []
    real = chunked.read_stats

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "CHUNKED_BYTES", 0)
    monkeypatch.setattr(chunked, "read_stats", spy)
    out = tmp_path / "out"
    code = cli.main(["fit", str(path), "--group", "g", "--response", "y", "--out", str(out),
                     "--draws", "200", "--tune", "200", "--chains", "2"])
    capsys.readouterr()
    assert code == 0 and len(calls) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["n_obs"] == 3000 and summary["data"]["n_groups"] == 40
    assert (out / "report.html").stat().st_size > 0
    mem = load(str(path), group="g", response="y")
    chunk = real(path, group="g", response="y")
    a = oneway.parameter_block(chunk.stats, Priors.default(chunk))
    b = oneway.parameter_block(mem.stats, Priors.default(mem))
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_in_memory_and_chunked_keep_the_same_rows(tmp_path):
    """One row filter (models.design.row_filter): a frame with NaN/inf in the response (and a
    log of 0 or below), in a numeric covariate and a missing categorical level keeps exactly
    the rows a hand-written mask keeps, in memory and read in chunks of 7 rows."""
    from varcomp.models.design import from_formula
    from varcomp.models.formula_stats import read_formula_stats

    rng = np.random.default_rng(4)
    n = 60
    df = pd.DataFrame({"g": np.repeat([f"s{i}" for i in range(6)], 10),
                       "x": rng.normal(size=n), "c": rng.choice(["a", "b"], n),
                       "y": np.exp(rng.normal(size=n))})
    df.loc[[1, 12], "y"] = np.nan
    df.loc[[3], "y"] = np.inf
    df.loc[[5, 40], "y"] = [0.0, -1.0]  # log of 0 and of a negative: not finite
    df.loc[[7, 22], "x"] = [np.nan, -np.inf]
    df.loc[[9, 33], "c"] = None
    with np.errstate(all="ignore"):
        want = (np.isfinite(np.log(df.y)) & np.isfinite(df.x) & df.c.notna()).to_numpy()
    formula = "np.log(y) ~ x + C(c) + (1|g)"
    mem = from_formula(df, formula)
    np.testing.assert_array_equal(mem.rows, np.flatnonzero(want))
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    chunked = read_formula_stats(path, formula, chunk_rows=7)
    assert chunked.dropped_rows == mem.dropped_rows == int((~want).sum()) == 9
    assert chunked.n_obs == mem.n_obs
    sizes = dict(zip(chunked.groups, chunked.stats.n[:, 0], strict=True))
    assert sizes == dict(zip(mem.groups, mem.stats.n[:, 0], strict=True))
    assert chunked.moments() == pytest.approx(mem.moments(), rel=1e-12)
