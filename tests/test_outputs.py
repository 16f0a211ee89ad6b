"""--out never deletes what varcomp did not write; outputs appear whole or not at all."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from varcomp.analyses import outputs
from varcomp.analyses.cli import main
from varcomp.analyses.outputs import MARKER, resolve_out, write_atomically

SMALL = ["--draws", "200", "--tune", "200", "--chains", "2"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def refused(argv, capsys, words: str) -> str:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert words in err, err
    return err


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A user's folder: their data and notes."""
    d = tmp_path / "project"
    d.mkdir()
    (d / "my.csv").write_text("g,y\na,1\na,2\nb,3\nb,5\nc,2\nc,2.5\n")
    (d / "notes.txt").write_text("keep me\n")
    return d


def test_out_naming_the_inputs_folder_is_refused_and_nothing_is_touched(user_folder, capsys):
    before = tree(user_folder)
    refused(["fit", user_folder / "my.csv", "--group", "g", "--response", "y", *SMALL,
             "--out", user_folder], capsys, "holds the input")
    assert tree(user_folder) == before


def test_out_naming_a_foreign_non_empty_folder_is_refused(user_folder, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text((user_folder / "my.csv").read_text())
    before = tree(user_folder)
    refused(["fit", data, "--group", "g", "--response", "y", *SMALL, "--out", user_folder],
            capsys, "did not write")
    assert tree(user_folder) == before


def test_shipped_data_folder_is_refused(capsys):
    from varcomp.models.data import data_dir

    before = sorted(p.name for p in data_dir().iterdir())
    refused(["fit", "dyestuff", *SMALL, "--out", data_dir()], capsys, "holds the input")
    assert sorted(p.name for p in data_dir().iterdir()) == before


def test_current_folder_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    refused(["fit", "dyestuff", *SMALL, "--out", "."], capsys, "current folder")
    refused(["fit", "dyestuff", *SMALL, "--out", ".."], capsys, "current folder")
    assert list(tmp_path.iterdir()) == []


def test_long_name_is_one_line(tmp_path, capsys):
    refused(["fit", "dyestuff", *SMALL, "--out", tmp_path / ("x" * 300)], capsys, "longer than")


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "report"
    f.write_text("mine")
    refused(["fit", "dyestuff", *SMALL, "--out", f], capsys, "not a folder")
    assert f.read_text() == "mine"


def test_previous_output_is_replaced_but_not_with_a_users_file_in_it(tmp_path, capsys):
    out = tmp_path / "dye"
    assert main(["fit", "dyestuff", *SMALL, "--out", str(out)]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "varcomp"
    assert set(marker["files"]) == {"report.html", "summary.json", "sufficient.nc"}
    first = (out / "summary.json").read_bytes()
    assert main(["fit", "dyestuff", *SMALL, "--seed", "3", "--out", str(out)]) == 0
    assert (out / "summary.json").read_bytes() != first
    (out / "my-notes.txt").write_text("keep me")
    capsys.readouterr()
    refused(["fit", "dyestuff", *SMALL, "--out", out], capsys, "my-notes.txt")
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dye"]  # no .vc-* leftovers


def test_symlinked_out_replaces_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(["fit", "rail", *SMALL, "--out", str(link)]) == 0
    assert link.is_symlink() and (target / "summary.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_empty_existing_folder_is_used(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert resolve_out(out) == out.resolve()


def test_interrupt_after_the_swap_reports_complete_output(tmp_path, monkeypatch):
    """A signal that lands during the two renames is held back until they are done: the new
    output is whole, the old one is gone, and the interrupt names the output as complete."""
    out = tmp_path / "o"
    write_atomically(out, lambda d: (d / "a.txt").write_text("old"))
    real_rename = os.rename

    def rename_then_signal(a, b):
        real_rename(a, b)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "rename", rename_then_signal)
    outputs.COMMITTED.clear()
    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, lambda d: (d / "a.txt").write_text("new"))
    assert (out / "a.txt").read_text() == "new"
    assert outputs.COMMITTED == [out.resolve()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    outputs.COMMITTED.clear()


def test_interrupt_before_the_swap_leaves_old_output(tmp_path):
    out = tmp_path / "o"
    write_atomically(out, lambda d: (d / "a.txt").write_text("old"))

    def writer(d):
        (d / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, writer)
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


# ---------------------------------------------------------------------------- simulate --out
SIM = ["simulate", "--clusters", "3", "--size", "4", "--tau", "1", "--sigma", "1"]


def test_simulate_refuses_a_fifo_a_folder_and_an_unknown_suffix(tmp_path, capsys):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    refused([*SIM, "--out", fifo], capsys, "not a regular file")
    assert fifo.is_fifo()
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    refused([*SIM, "--out", folder], capsys, "is a folder")
    refused([*SIM, "--out", tmp_path / "x.xlsx"], capsys, "unknown file type")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.csv", "pipe.csv"]


def test_simulate_refuses_rows_beyond_the_memory_budget(tmp_path, capsys):
    refused(["simulate", "--clusters", "100000000", "--size", "1000", "--tau", "1", "--sigma",
             "1", "--out", tmp_path / "big.parquet"], capsys, "GiB")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["nan", "inf", "1,nan"])
def test_simulate_refuses_a_non_finite_mean(tmp_path, capsys, value):
    refused([*SIM, "--mu", value, "--out", tmp_path / "s.csv"], capsys, "finite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", ["-1", str(2**64), "1.5"])
def test_seed_out_of_range_is_one_line(tmp_path, capsys, seed):
    refused([*SIM, "--seed", seed, "--out", tmp_path / "s.csv"], capsys, "--seed")
    refused(["fit", "dyestuff", "--seed", seed, "--out", tmp_path / "o"], capsys, "--seed")
    assert list(tmp_path.iterdir()) == []
