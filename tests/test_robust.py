"""Issue 24: the Python API, data objects, compare's honesty, the prior grammar, odd inputs."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pandas as pd
import pytest

from varcomp import models
from varcomp.analyses import compare as cmp
from varcomp.analyses.cli import main
from varcomp.models.data import ClusteredData, DataError, data_dir

SMALL = ["--draws", "200", "--tune", "200", "--chains", "2"]


def _frame(seed: int = 0, n: int = 5, L: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(L)], n)
    return pd.DataFrame({"g": g, "y": rng.normal(size=g.size) + np.repeat(rng.normal(size=L), n)})


def _same(a: ClusteredData, b: ClusteredData) -> None:
    assert np.array_equal(a.y, b.y) and np.array_equal(a.codes, b.codes)
    assert list(a.groups) == list(b.groups) and a.responses == b.responses


# ------------------------------------------------------------------ the Python API
def test_a_dataframe_is_accepted_wherever_a_path_is():
    df = pd.read_csv(data_dir() / "dyestuff.csv")
    by_path = models.load("dyestuff")
    _same(models.load(df, group="Batch", response="Yield"), by_path)
    _same(models.load(df, formula="Yield ~ 1 + (1|Batch)"), by_path)
    radon = pd.read_csv(data_dir() / "radon.csv")
    a = models.load(radon, formula="log.radon ~ basement + (1|county)")
    b = models.load("radon", formula="log.radon ~ basement + (1|county)")
    assert np.array_equal(a.design.X, b.design.X) and np.array_equal(a.y, b.y)
    # compare takes the frame too: its checks run on it (here: refused before any sampling)
    df["Y2"] = df.Yield * 2
    with pytest.raises(DataError, match="predicts 'Y2'"):
        cmp.compare(df, ["Yield ~ 1 + (1|Batch)", "Y2 ~ 1 + (1|Batch)"])


@pytest.mark.parametrize("thing", [3.5, None, ["dyestuff"], object()])
def test_objects_load_does_not_take_are_a_type_error(thing):
    with pytest.raises(TypeError, match="file path, a shipped dataset name or a pandas "
                                        "DataFrame, not"):
        models.load(thing, group="g", response="y")


def test_fit_checks_its_argument():
    from varcomp.analyses.fit import FitResult, fit, run

    data = models.load("dyestuff")
    result = FitResult(data, models.family_of(data), {})
    with pytest.raises(TypeError, match="not FitResult .*pass its .data"):
        fit(result)
    with pytest.raises(TypeError, match=r"not DataFrame .*models.load\(df"):
        fit(data.to_frame())
    with pytest.raises(TypeError, match="not str"):
        run("dyestuff", out="x")


# ------------------------------------------------------------------ data objects
@pytest.mark.parametrize("kind", ["text", "integer", "unused"])
def test_a_categorical_group_column_reads_as_its_labels(kind):
    df = _frame()
    plain = ClusteredData.from_frame(df, group="g", response="y")
    if kind == "text":
        df["g"] = df.g.astype("category")
    elif kind == "integer":
        df["g"] = pd.Categorical(df.g.str[1:].astype(int))
        plain = ClusteredData.from_frame(df.assign(g=df.g.astype(int).astype(str)), group="g",
                                         response="y")
    else:
        df["g"] = pd.Categorical(df.g, categories=[*sorted(set(df.g)), "never"])
    d = ClusteredData.from_frame(df, group="g", response="y")
    _same(d, plain)
    assert "never" not in list(d.groups)


def test_integer_column_names_pandas_default():
    df = _frame()
    raw = pd.DataFrame(df.to_numpy())  # columns 0, 1 and object values
    d = ClusteredData.from_frame(raw, group=0, response=1)
    assert d.group_name == "0" and d.responses == ("1",)
    assert np.array_equal(d.y[:, 0], df.y.to_numpy()) and d.n_groups == 6
    _same(ClusteredData.from_frame(raw, group="0", response=["1"]), d)
    with pytest.raises(DataError, match="response column '7' not found; columns present: 0, 1"):
        ClusteredData.from_frame(raw, group=0, response=7)


def test_validated_data_cannot_give_stale_statistics():
    """The statistics are cached; the arrays under them are read-only, and the caller's frame
    and arrays are copied, so no mutation can reach the data after validation."""
    df = _frame()
    d = ClusteredData.from_frame(df, group="g", response="y")
    before = d.stats.mean.copy()
    for name in ("y", "codes", "groups", "rows"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(d, name)[0] = getattr(d, name)[1]
    with pytest.raises(AttributeError):
        d.y = d.y * 2
    df.loc[:, "y"] = 1e6  # the caller's frame: not the data's memory
    assert np.array_equal(d.stats.mean, before)
    y = np.arange(12.0)[:, None]
    own = ClusteredData(y=y[::1], codes=np.repeat(np.arange(3), 4), groups=np.array(
        ["a", "b", "c"], dtype=object), responses=("y",), group_name="g")
    y[0, 0] = 99.0  # a view of the caller's array was copied: the data keep 0.0
    assert own.y[0, 0] in (0.0, 99.0) and own.y.flags.writeable is False
    r = models.load("radon", formula="log.radon ~ basement + (1|county)")
    cells = r.cells
    with pytest.raises(ValueError, match="read-only"):
        r.design.X[0, 1] = 5.0
    with pytest.raises(ValueError, match="read-only"):
        r.design.factors[0].codes[0] = 3
    assert r.cells is cells


# ------------------------------------------------------------------ compare tells the truth
def test_compare_says_how_many_high_k_clusters_were_refitted(tmp_path, monkeypatch):
    """Every cluster over the threshold (forced), at most 2 refits per model: the highest k are
    refitted, the other 4 are named as not refitted, and pareto_k_max describes the PSIS
    estimates kept, not the k of the clusters the refits replaced."""
    monkeypatch.setattr(cmp, "K_THRESHOLD", -np.inf)
    monkeypatch.setattr(cmp, "MAX_EXACT", 2)
    res = cmp.compare("dyestuff", ["Yield ~ 1 + (1|Batch)"], draws=200, tune=200, chains=2)
    table = res.as_dict()
    groups = [str(g) for g in models.load("dyestuff").groups]
    for m, row in zip(res.models, table["models"], strict=True):
        k = dict(zip(groups, m.pareto_k, strict=True))
        assert row["n_high_k"] == 6 and len(row["exact_clusters"]) == 2
        assert sorted(row["exact_clusters"] + row["unreliable_clusters"]) == sorted(groups)
        assert min(k[g] for g in row["exact_clusters"]) >= max(
            k[g] for g in row["unreliable_clusters"])
        assert row["pareto_k_max"] == max(k[g] for g in row["unreliable_clusters"])
    out = tmp_path / "c"
    cmp.write_compare(res, out)
    html = (out / "compare.html").read_text()
    assert "4 of 6 clusters with k &gt;" in html and "were not refitted" in html
    assert json.loads((out / "compare.json").read_text())["max_exact"] == 2


def test_compiled_kernels_never_raise_at_extreme_coordinates():
    """sigma = exp(-800) underflows to 0: the compiled log density must return a non-finite
    value (nutpie rejects the point), not raise ZeroDivisionError inside nutpie's C callback
    (printed as 'Exception ignored' once per refit)."""
    from varcomp.models.compiled import oneway
    from varcomp.models.priors import Priors

    d = models.load("dyestuff")
    block = oneway.parameter_block(d.stats, Priors.default(d))
    for z in ([0.0, 0.0, -800.0], [0.0, -800.0, -800.0], [0.0, 800.0, 800.0]):
        value, grad = oneway.logp_and_grad(np.array(z), block)
        assert not (np.isfinite(value) and np.isfinite(grad).all())


# ------------------------------------------------------------------ the one prior grammar
def test_the_partition_overrides_of_the_readme_are_applied(monkeypatch, tmp_path, capsys):
    """`--variance-prior partition --prior icc=beta:2:2 --prior total=halfnormal:100` reaches
    the fit as a PartitionPriors with those values (the sd parser refused them before)."""
    import varcomp.analyses.fit as fit_module

    seen = {}

    def stub(data, model, **kwargs):
        seen["priors"] = kwargs["priors"]
        raise DataError("stub reached")

    monkeypatch.setattr(fit_module, "fit", stub)
    code = main(["fit", "dyestuff", "--variance-prior", "partition", "--prior", "icc=beta:2:3",
                 "--prior", "total=halfnormal:100", "--prior", "mu=normal:1500:50",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "stub reached" in capsys.readouterr().err
    p = seen["priors"]
    assert (p.a, p.b) == (2.0, 3.0)
    assert (p.total.family, p.total.scale) == ("halfnormal", 100.0)
    assert (p.mu.loc, p.mu.scale) == (1500.0, 50.0)


def test_one_grammar_parses_every_family():
    from varcomp.models.prior_grammar import BetaPrior, parse_prior
    from varcomp.models.priors import NormalPrior, ScalePrior

    assert parse_prior("mu=normal:1:2").prior == NormalPrior(1.0, 2.0)
    assert parse_prior("beta[x]=normal:2").prior == NormalPrior(0.0, 2.0)
    assert parse_prior("beta[x]=normal:2").label == "x"
    assert parse_prior("tau=HalfStudentT:5:4").prior == ScalePrior("halfstudentt", 5.0, 4.0)
    assert parse_prior("icc=beta:2:2").prior == BetaPrior(2.0, 2.0)
    pastes = models.load("pastes", formula="strength ~ 1 + (1|batch/cask)")
    specs = ["tau=halfnormal:2", "tau[batch]=halfnormal:3", "sigma=exponential:2"]
    p = models.family_of(pastes).parse_priors(pastes, specs)
    assert [t.scale for t in p.tau] == [3.0, 2.0] and p.sigma.family == "exponential"


# ------------------------------------------------------------------ odd inputs
def test_a_pipe_is_read(tmp_path):
    """`varcomp fit <(cat x.csv)`: the path is a pipe, read once (it was read as empty)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    text = (data_dir() / "dyestuff.csv").read_bytes()

    def feed():
        with open(fifo, "wb") as fh:
            fh.write(text)

    t = threading.Thread(target=feed)
    t.start()
    d = models.load(str(fifo), group="Batch", response="Yield")
    t.join()
    _same(d, models.load("dyestuff"))


def test_describe_names_the_real_cause(tmp_path, capsys):
    df = _frame()
    df["y"] = df.y * 1e-200
    df["z"] = np.nan
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    assert main(["describe", str(path), "--group", "g", "--response", "y"]) == 0
    out = capsys.readouterr().out
    assert "underflow" in out and "one cluster" not in out
    assert main(["describe", str(path), "--group", "g", "--response", "y", "--response",
                 "z"]) == 0
    out = capsys.readouterr().out
    assert "z: no observed value" in out and " -1 " not in out


def test_the_nesting_warning_is_for_nesting_not_for_interactions():
    rng = np.random.default_rng(0)
    W = np.repeat(list("abcd"), 12)
    M = np.tile(np.repeat(list("xyz"), 4), 4)
    df = pd.DataFrame({"W": W, "M": M, "y": rng.normal(size=48)})
    crossed = models.load(df, formula="y ~ 1 + (1|W) + (1|M) + (1|W:M)")
    assert not any("recur" in w for w in crossed.warnings)
    nested = models.load(df, formula="y ~ 1 + (1|W/M)")
    assert any("labels of 'M' recur" in w for w in nested.warnings)


def test_simulate_names_its_columns_and_the_fit_that_reads_them(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["simulate", "--clusters", "4", "--size", "5", "--tau", "1", "--sigma", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--group group --response y" in printed
    assert pd.read_csv(out).columns.tolist() == ["group", "y"]
    assert models.load(str(out), group="group", response="y").n_groups == 4
