"""Statistics without the rows: chunked files and Dask give the in-memory fit's statistics and
REML estimates; the simulator writes the format its suffix names and reads back exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses import cli
from varcomp.analyses.cli import main
from varcomp.models import load
from varcomp.models.data import data_dir
from varcomp.models.formula_stats import read_formula_stats
from varcomp.models.lmm import estimates

SMALL = ["--draws", "300", "--tune", "300", "--chains", "2"]
FORMULAS = [("radon", "log.radon ~ basement + uranium + (1|county)"),
            ("pastes", "strength ~ 1 + (1|batch/cask)"),
            ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)")]


def _rel(a: dict, b: dict) -> float:
    """Largest relative difference of beta, tau and sigma of two estimate dicts."""
    out = [abs(a["sigma"] - b["sigma"]) / b["sigma"]]
    out += [abs(a["beta"][k] - v) / max(abs(v), 1e-300) for k, v in b["beta"].items()]
    ta, tb = (a["tau"], b["tau"]) if isinstance(b["tau"], dict) else ({0: a["tau"]}, {0: b["tau"]})
    out += [abs(ta[k] - v) / v for k, v in tb.items() if v > 0]
    return max(out)


@pytest.mark.parametrize(("spec", "formula"), FORMULAS)
def test_chunked_cells_equal_the_in_memory_ones(spec, formula):
    """Reading in chunks of 37 rows (clusters split across chunks) gives the same cells, the same
    nesting and the same REML estimates as the rows in memory (1e-9)."""
    mem = load(spec, formula=formula)
    chunked = read_formula_stats(data_dir() / f"{spec}.csv", formula, chunk_rows=37)
    assert chunked.n_obs == mem.n_obs and chunked.design.nested == mem.design.nested
    assert [f.name for f in chunked.design.factors] == [f.name for f in mem.design.factors]
    a, b = mem.cells.pooled, chunked.cells.pooled
    np.testing.assert_allclose(b[0], a[0], rtol=1e-12)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-9, atol=1e-9 * np.abs(a[1]).max())
    assert _rel(estimates(chunked)["reml"].as_dict(), estimates(mem)["reml"].as_dict()) < 1e-9


def test_cli_fits_a_large_formula_file_in_chunks(tmp_path, monkeypatch):
    """`varcomp fit big.csv --formula ...` above the chunk threshold: the sufficient fit from
    statistics only, the same REML as in memory, a report that says what it cannot show."""
    monkeypatch.setattr(cli, "CHUNKED_BYTES", 1)
    path = tmp_path / "radon.csv"
    pd.read_csv(data_dir() / "radon.csv").to_csv(path, index=False)
    out = tmp_path / "o"
    formula = "log.radon ~ basement + (1|county)"
    assert main(["fit", str(path), "--formula", formula, *SMALL, "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    mem = estimates(load("radon", formula=formula))["reml"].as_dict()
    assert _rel(s["estimates"]["reml"], mem) < 1e-9
    assert "reduced to statistics" in (out / "report.html").read_text()


@pytest.fixture(scope="module")
def radon_parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    df = pd.read_csv(data_dir() / "radon.csv")
    for i in range(5):  # every county split across files
        df.iloc[i::5].to_parquet(folder / f"part-{i}.parquet", index=False)
    return folder


def test_dask_engine_equals_in_memory(radon_parts, tmp_path):
    """`varcomp fit 'part-*.parquet' --engine dask` (a LocalCluster): the same statistics and REML
    estimates as the in-memory path (1e-9), for a formula and for the one-way shorthand."""
    out = tmp_path / "d"
    formula = "log.radon ~ basement + uranium + (1|county)"
    pattern = str(radon_parts / "part-*.parquet")
    assert main(["fit", pattern, "--engine", "dask", "--formula", formula, *SMALL,
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["data"]["n_obs"] == 919 and s["data"]["n_groups"] == 85
    mem = estimates(load("radon", formula=formula))["reml"].as_dict()
    assert _rel(s["estimates"]["reml"], mem) < 1e-9
    out1 = tmp_path / "one"
    assert main(["fit", pattern, "--engine", "dask", "--group", "county", "--response",
                 "log.radon", *SMALL, "--out", str(out1)]) == 0
    one = json.loads((out1 / "summary.json").read_text())["estimates"]["reml"]
    ref = load("radon")
    from varcomp.models import fit_reml

    assert one["tau"] == pytest.approx(fit_reml(ref).tau, rel=1e-9)


def test_dask_engine_drops_and_counts_missing_values_in_the_one_pass(tmp_path):
    """Missing and non-finite responses (and a missing covariate) are dropped and counted by the
    Dask pass exactly as the in-memory path drops them; the statistics agree."""
    from varcomp.models.distributed import formula_stats_dask, group_stats_dask, read_parquet_dask

    df = pd.read_csv(data_dir() / "radon.csv")
    df.loc[[3, 50, 400], "log.radon"] = [np.nan, np.inf, -np.inf]
    df.loc[[7, 8], "uranium"] = np.nan
    for i in range(4):
        df.iloc[i::4].to_parquet(tmp_path / f"p-{i}.parquet", index=False)
    df.to_csv(tmp_path / "all.csv", index=False)
    ddf = read_parquet_dask(str(tmp_path / "p-*.parquet"), list(df.columns))
    one = group_stats_dask(ddf, group="county", response="log.radon", source="parts")
    mem = load(str(tmp_path / "all.csv"), group="county", response="log.radon")
    assert one.dropped_rows == mem.dropped_rows == 3
    assert one.n_obs == mem.n_obs
    formula = "log.radon ~ uranium + (1|county)"
    cells = formula_stats_dask(ddf, formula, source="parts")
    rows = load(str(tmp_path / "all.csv"), formula=formula)
    said = "5 row(s) with a missing or non-finite response or covariate were dropped"
    assert said in cells.warnings and said in rows.warnings
    assert _rel(estimates(cells)["reml"].as_dict(), estimates(rows)["reml"].as_dict()) < 1e-9


def test_dask_engine_bad_input(radon_parts, tmp_path, capsys):
    """A missing file, CSV input, a form that needs rows, a wrong column: one line, exit 2."""
    pattern = str(radon_parts / "part-*.parquet")
    cases = [([str(tmp_path / "none-*.parquet"), "--group", "county", "--response", "log.radon"],
              "no data files match"),
             ([str(data_dir() / "radon.csv"), "--group", "county", "--response", "log.radon"],
              "reads Parquet"),
             ([pattern, "--group", "county", "--response", "log.radon", "--model", "centred"],
              "only the sufficient form"),
             ([pattern, "--formula", "log.radon ~ nope + (1|county)"], "no column 'nope'")]
    for argv, words in cases:
        code = main(["fit", *argv, "--engine", "dask", "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_simulate_round_trip(tmp_path, capsys, suffix):
    """`varcomp simulate --out sim<suffix>` writes that format; fit and describe read back the
    same rows, labels (text) and values."""
    path = tmp_path / f"sim{suffix}"
    assert main(["simulate", "--clusters", "7", "--size", "4", "--tau", "1", "--sigma", "2",
                 "--mu", "3", "--seed", "4", "--out", str(path)]) == 0
    head = path.read_bytes()[:4]
    assert head == b"PAR1" if suffix == ".parquet" else (head[:2] == b"\x1f\x8b") == (
        suffix == ".csv.gz")
    from varcomp.models.simulate import simulate_univariate

    truth = simulate_univariate(7, 4, mu=3.0, tau=1.0, sigma=2.0, rng=4).frame
    data = load(path, group="group", response="y")
    assert list(data.groups) == list(pd.unique(truth.group))
    np.testing.assert_array_equal(data.y[:, 0], truth.y.to_numpy())
    capsys.readouterr()
    assert main(["describe", str(path), "--group", "group", "--response", "y"]) == 0
    assert "N = 28 rows, L = 7 clusters" in capsys.readouterr().out


def test_multivariate_simulate_round_trip(tmp_path):
    path = tmp_path / "mv.parquet"
    assert main(["simulate", "--clusters", "5", "--size", "3", "--mu", "1,2", "--V", "4,3;3,4",
                 "--Sigma", "1,0.2;0.2,1", "--out", str(path)]) == 0
    from varcomp.models.simulate_mv import simulate_multivariate

    truth = simulate_multivariate(5, 3, np.array([1.0, 2.0]), np.array([[4, 3], [3, 4.0]]),
                                  np.array([[1, 0.2], [0.2, 1.0]]), rng=0).frame
    data = load(path, group="group", response=["y1", "y2"])
    np.testing.assert_array_equal(data.y, truth[["y1", "y2"]].to_numpy())


def _bad_parts(folder, case: str) -> str:
    """Two Parquet files (clusters "1".."6" cut across them) spoiled as ``case`` says."""
    g = np.repeat(np.arange(1, 7), 4)
    df = pd.DataFrame({"g": g.astype(str), "y": np.arange(g.size) * 0.5})
    a, b = df.iloc[0::2].copy(), df.iloc[1::2].copy()
    opts = {}
    if case == "label types":
        a["g"], b["g"] = a["g"].astype(np.int64), b["g"].astype(np.float64)
    elif case == "text in one file":
        b["y"] = b["y"].astype(str).where(b.index != 3, "three")
    elif case == "text in every file":
        a["y"] = a["y"].astype(str)
        b["y"] = b["y"].astype(str).where(b.index != 3, "three")
    elif case.startswith("missing label"):
        b["g"] = b["g"].where(b.index != 3)
        opts = {"write_statistics": "footer" in case}
    a.to_parquet(folder / "part-0.parquet", index=False)
    b.to_parquet(folder / "part-1.parquet", index=False, **opts)
    return str(folder / "part-*.parquet")


ONE_WAY = ["--group", "g", "--response", "y"]
BAD_DASK = [  # case, extra arguments, the words of the one line, whether it names part-1
    ("label types", ONE_WAY, "column 'g' holds floating point in", True),
    ("text in one file", ONE_WAY, "column 'y' holds text in", True),
    ("text in every file", ONE_WAY, "column 'y' of dtype", True),
    ("text in every file", ["--formula", "y ~ 1 + (1|g)"], "response 'y' is not numeric", True),
    ("missing label (footer)", ONE_WAY, "1 row(s) have no 'g' label", True),
    ("missing label (task)", ONE_WAY, "1 row(s) have no 'g' label", True),
    ("missing label (task)", ["--formula", "y ~ 1 + (1|g)"], "1 row(s) have no 'g' label", True),
    ("scheduler without dask", ONE_WAY, "--scheduler names a Dask scheduler", False),
    ("scheduler silent", ONE_WAY, "no Dask scheduler answered at tcp://127.0.0.1:", False),
    ("scheduler http", ONE_WAY, "does not speak Dask's protocol", False),
    ("scheduler closed", ONE_WAY, "cannot reach the Dask scheduler at", False),
]


@pytest.mark.parametrize(("case", "extra", "words", "names_file"), BAD_DASK)
def test_dask_engine_refuses_bad_files_and_schedulers(tmp_path, capfd, monkeypatch, case, extra,
                                                      words, names_file):
    """Files that disagree, a bad value or a missing label in one file, and a --scheduler that
    is no Dask scheduler (ports this test opens on 127.0.0.1), or given without --engine dask:
    exit 2, one line on stderr (no worker traceback), nothing written."""
    import socket
    import threading
    from functools import partial

    from varcomp.models import dask_clients

    monkeypatch.setattr(dask_clients, "CONNECT_TIMEOUT", 1.0)
    # one worker; for one case a worker process, whose log lines would reach stderr unsilenced
    process = case == "text in every file" and extra is ONE_WAY
    monkeypatch.setattr(dask_clients, "local_client",
                        partial(dask_clients.local_client, n_workers=1, processes=process))
    pattern = _bad_parts(tmp_path, case)
    engine = ["--engine", "dask"]
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen(8)
    address = f"tcp://127.0.0.1:{peer.getsockname()[1]}"
    if case == "scheduler without dask":
        engine = ["--scheduler", address]
    elif case.startswith("scheduler"):
        engine += ["--scheduler", address]
    if case == "scheduler http":
        def answer() -> None:
            while True:
                try:
                    conn, _ = peer.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
    elif case == "scheduler closed":
        peer.close()
    capfd.readouterr()
    try:
        code = main(["fit", pattern, *extra, *engine, *SMALL, "--out", str(tmp_path / "x")])
    finally:
        peer.close()
    err = capfd.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert ("part-1.parquet" in err) == names_file, err
    assert not (tmp_path / "x").exists()
