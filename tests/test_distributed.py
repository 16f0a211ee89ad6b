"""Grouped moments on Dask (models.distributed): tree and shuffle reductions, Parquet, faults."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from varcomp.models import load
from varcomp.models.dask_clients import client_for, local_client
from varcomp.models.distributed import (
    group_stats_dask,
    grouped_moments_dask,
    read_parquet_dask,
)
from varcomp.models.errors import DataError
from varcomp.models.moments import GroupedMoments

COLUMNS = ["y", "x"]


def _frame(rng: np.random.Generator, n_groups: int = 150) -> pd.DataFrame:
    """Unbalanced clusters (four singletons, sizes up to 40) at mean 1e6, sd 1, rows shuffled so
    most clusters are split across partitions; labels "07" and "7" both occur."""
    sizes = np.concatenate([[1, 1, 1, 1], rng.integers(2, 40, size=n_groups - 4)])
    labels = np.array([f"c{i:03d}" for i in range(n_groups - 2)] + ["07", "7"], dtype=object)
    g = np.repeat(labels, sizes)
    y = 1e6 + np.repeat(rng.normal(0.0, 2.0, n_groups), sizes) + rng.normal(0.0, 1.0, g.size)
    x = np.repeat(rng.normal(0.0, 1.0, n_groups), sizes) + rng.normal(0.0, 1.0, g.size)
    order = rng.permutation(g.size)
    return pd.DataFrame({"g": g[order], "y": y[order], "x": x[order], "other": 1.0})


def _in_memory(df: pd.DataFrame) -> GroupedMoments:
    return GroupedMoments.from_arrays(df["g"].to_numpy(object), df[COLUMNS].to_numpy(),
                                      COLUMNS).sorted()


def _identity(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _seven_partitions(df: pd.DataFrame) -> dd.DataFrame:
    """Seven partitions, the fourth one empty, the others cutting clusters."""
    cuts = np.linspace(0, len(df), 7).astype(int)
    pieces = [df.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    pieces.insert(3, df.iloc[:0])
    return dd.from_map(_identity, pieces, meta=df.iloc[:0], enforce_metadata=False)


def _rel_errors(got: GroupedMoments, want: GroupedMoments) -> tuple[float, float]:
    """Largest relative errors of means and cross-products (against sqrt(M_jj M_kk))."""
    np.testing.assert_array_equal(got.keys, want.keys)
    np.testing.assert_array_equal(got.n, want.n)
    diag = np.diagonal(want.m2, axis1=1, axis2=2)
    bound = np.sqrt(diag[:, :, None] * diag[:, None, :])
    nz = bound > 0
    assert np.all(got.m2[~nz] == 0)
    scale = np.maximum(np.abs(want.mean), np.sqrt(np.diagonal(want.pooled().m2) / want.n_obs))
    return (float(np.max(np.abs(got.mean - want.mean) / scale)),
            float(np.max(np.abs(got.m2 - want.m2)[nz] / bound[nz])))


def test_tree_and_shuffle_equal_in_memory(rng):
    """Partial moments of seven partitions (one empty, clusters cut across partitions, singleton
    clusters, mean 1e6 sd 1), merged in a Chan tree on a distributed client, equal the in-memory
    one-pass moments to 1e-12 relative with exact counts; the shuffled merge (partials split by
    a hash of the key, each bucket merged in its own tree, then concatenated) equals the tree
    path; so does dask's local scheduler."""
    df = _frame(rng)
    ddf = _seven_partitions(df)
    sizes = ddf.map_partitions(len).compute()
    assert len(sizes) == 7 and 0 in list(sizes)
    want = _in_memory(df)
    assert want.keys[0] == "07" and "7" in set(want.keys) and np.sum(want.n == 1) >= 4
    local_tree = grouped_moments_dask(ddf, keys="g", columns=COLUMNS, split_every=2)
    with local_client(n_workers=2, processes=False):
        tree = grouped_moments_dask(ddf, keys="g", columns=COLUMNS, split_every=3)
        shuffled = grouped_moments_dask(ddf, keys="g", columns=COLUMNS, shuffle_above=0)
    for got in (tree, local_tree, shuffled):
        mean_err, m2_err = _rel_errors(got, want)
        assert mean_err < 1e-12 and m2_err < 1e-12, (mean_err, m2_err)
    assert max(_rel_errors(shuffled, tree)) < 1e-12


def test_compound_keys_and_group_estimate(rng, monkeypatch):
    """Compound keys (school, class) reduce like single ones; the partials' group count picks
    the shuffled merge (partials split by key hash) above shuffle_above and the tree below."""
    df = _frame(rng, n_groups=60)
    df["class"] = rng.choice(["1", "01", "2"], size=len(df))
    ddf = dd.from_pandas(df, npartitions=5, sort=False)
    want = GroupedMoments.from_arrays(df[["g", "class"]].to_numpy(object), df[COLUMNS].to_numpy(),
                                      COLUMNS).sorted()
    import varcomp.models.distributed as mdist

    calls = {"split": 0}
    original = mdist._split_by_hash

    def spy(part, buckets):
        calls["split"] += 1
        return original(part, buckets)

    monkeypatch.setattr(mdist, "_split_by_hash", spy)
    with dask.config.set(scheduler="threads"):
        below = grouped_moments_dask(ddf, keys=["g", "class"], columns=COLUMNS)
        assert calls["split"] == 0
        above = grouped_moments_dask(ddf, keys=["g", "class"], columns=COLUMNS, shuffle_above=20)
        assert calls["split"] == ddf.npartitions
    for got in (below, above):
        assert got.keys.shape == (want.n_groups, 2)
        assert max(_rel_errors(got, want)) < 1e-12


def _write_parts(df: pd.DataFrame, folder, n: int = 5) -> list:
    paths = []
    for i, piece in enumerate(np.array_split(np.arange(len(df)), n)):
        path = folder / f"part-{i}.parquet"
        df.iloc[piece].to_parquet(path, index=False, row_group_size=100)
        paths.append(path)
    return paths


def test_parquet_files_by_glob_equal_in_memory(tmp_path, rng):
    """Five Parquet files read by glob (only the needed columns, runs of row groups as
    partitions) give the in-memory moments to 1e-12 relative."""
    df = _frame(rng)
    _write_parts(df, tmp_path)
    ddf = read_parquet_dask(str(tmp_path / "part-*.parquet"), ["g", *COLUMNS],
                            rows_per_partition=250)
    assert list(ddf.columns) == ["g", *COLUMNS] and ddf.npartitions > 5
    with local_client(n_workers=2, processes=False):
        got = grouped_moments_dask(ddf, keys="g", columns=COLUMNS)
    assert max(_rel_errors(got, _in_memory(df))) < 1e-12


def test_unreadable_parquet_files_are_one_line_errors(tmp_path, rng):
    """A file deleted after the glob was listed, a file corrupted after listing, and a corrupt
    file at listing each give a one-line ValueError naming that file."""
    df = _frame(rng, n_groups=30)
    paths = _write_parts(df, tmp_path)
    pattern = str(tmp_path / "part-*.parquet")

    ddf = read_parquet_dask(pattern, ["g", *COLUMNS])
    os.remove(paths[2])
    with pytest.raises(ValueError) as info:
        grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=30)
    assert str(paths[2]) in str(info.value) and "\n" not in str(info.value)

    df.iloc[:10].to_parquet(paths[2], index=False)
    ddf = read_parquet_dask(pattern, ["g", *COLUMNS])
    paths[3].write_bytes(b"not a parquet file" * 10)
    with pytest.raises(ValueError) as info:
        grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=30)
    assert str(paths[3]) in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(ValueError) as info:
        read_parquet_dask(pattern, ["g", *COLUMNS])
    assert str(info.value).startswith(f"cannot read {paths[3]}: ")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no files match"):
        read_parquet_dask(str(tmp_path / "nothing-*.parquet"), ["g"])


def test_text_in_a_numeric_column_names_file_column_and_dtype(tmp_path, rng):
    """A file whose value column holds text ("three") while the others hold numbers is refused
    from the footers, naming both files and the column; when every file holds text, the
    partition that cannot be cast to float64 raises, naming the file, the column and its dtype;
    a key column stored as integers in a partition (which would turn "07" into "7") is caught by
    the declared dtypes."""
    df = _frame(rng, n_groups=30)
    paths = _write_parts(df, tmp_path)
    bad = df.iloc[:5].assign(y=["1.5", "2", "three", "4", "5"])  # a string column in this file
    bad.to_parquet(paths[1], index=False)
    with pytest.raises(ValueError, match="column 'y' holds text in") as info:
        read_parquet_dask(str(tmp_path / "part-*.parquet"), ["g", *COLUMNS])
    assert f"in {paths[1]} but numbers in {paths[0]}" in str(info.value)
    assert "\n" not in str(info.value)

    for i, path in enumerate(paths):
        if i != 1:
            df.iloc[5 * i:5 * i + 5].assign(y=lambda d: d.y.astype(str)).to_parquet(path,
                                                                                   index=False)
    ddf = read_parquet_dask(str(tmp_path / "part-*.parquet"), ["g", *COLUMNS])
    with pytest.raises(ValueError, match="column 'y' of dtype") as info:
        grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=30)
    assert str(paths[1]) in str(info.value) and "\n" not in str(info.value)

    pieces = [df.iloc[:5], df.iloc[5:10].assign(g=7)]
    ddf = dd.from_map(_identity, pieces, meta=df.iloc[:0], enforce_metadata=False)
    with pytest.raises(ValueError, match="partition 1: column 'g' has dtype int64, expected"):
        grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=30,
                             dtypes={"g": "string", "y": "float64"})


def test_missing_values_are_refused_with_the_partition():
    """Values must be finite: a NaN is a ValueError naming the partition and the column."""
    df = pd.DataFrame({"g": ["a", "b", "a", "b"], "y": [1.0, 2.0, np.nan, 4.0], "x": 1.0})
    ddf = dd.from_pandas(df, npartitions=2, sort=False)
    with pytest.raises(ValueError, match=r"partition 1: column 'y' has 1 missing"):
        grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=2)


def test_progress_option_reports_and_keeps_the_result(rng, capsys):
    """progress=True shows distributed's progress bar and returns the same statistics."""
    df = _frame(rng, n_groups=30)
    ddf = dd.from_pandas(df, npartitions=4, sort=False)
    with local_client(n_workers=1, processes=False):
        got = grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=30, progress=True)
    assert max(_rel_errors(got, _in_memory(df))) < 1e-12
    captured = capsys.readouterr()
    assert "100%" in captured.out + captured.err


def _partials_in_memory(dask_scheduler) -> list[tuple[str, list[str]]]:
    """Finished per-partition partials and the workers holding them (runs on the scheduler)."""
    return [(str(ts.key), [ws.address for ws in ts.who_has])
            for ts in dask_scheduler.tasks.values()
            if ts.state == "memory" and "_partition_moments" in str(ts.key)]


def _times_in_memory(dask_scheduler, keys: list[str]) -> dict[str, int]:
    """How often each task reached memory, from the scheduler's transition log."""
    counts = dict.fromkeys(keys, 0)
    for entry in dask_scheduler.transition_log:
        if str(entry[0]) in counts and entry[2] == "memory":
            counts[str(entry[0])] += 1
    return counts


def test_killing_a_worker_mid_run_gives_the_same_result(rng):
    """A worker process killed (SIGKILL) after it finished some partials and while others run:
    Dask recomputes what was lost on the surviving or restarted worker, and the statistics are
    bitwise those of an undisturbed run (the merge tree is fixed by the graph, not by timing)."""
    df = _frame(rng, n_groups=200)
    ddf = dd.from_pandas(df, npartitions=24, sort=False)
    opts = dict(keys="g", columns=COLUMNS, n_groups=200, split_every=4)
    with local_client(n_workers=2, processes=True, threads_per_worker=1) as client:
        reference = grouped_moments_dask(ddf, **opts)
        deadline = time.monotonic() + 20  # the reference run's partials are released
        while client.run_on_scheduler(_partials_in_memory) and time.monotonic() < deadline:
            time.sleep(0.05)
        before = set(client.scheduler_info()["workers"])
        killed: dict = {}

        def kill_one_worker() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = client.run_on_scheduler(_partials_in_memory)
                holders = [ws[0] for _, ws in done if len(ws) == 1]
                if holders:  # a finished partial exists: kill the worker holding it
                    pid = client.run(os.getpid, workers=[holders[0]])[holders[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.update(address=holders[0], pid=pid, at=time.monotonic(),
                                  partials_done=len(done),
                                  lost=[k for k, ws in done if ws == [holders[0]]])
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        # each partition sleeps 0.3 s: 24 partitions on 2 workers take >= 3.6 s, so the kill
        # (within ~0.1 s of the first finished partial) lands while most partials are pending
        disturbed = grouped_moments_dask(ddf, **opts, _partition_delay=0.3)
        returned = time.monotonic()
        killer.join(timeout=5)
        after = set(client.scheduler_info()["workers"])
        recomputed = client.run_on_scheduler(_times_in_memory, keys=killed.get("lost", []))

    assert killed, "no worker was killed"
    assert killed["at"] < returned and killed["partials_done"] < ddf.npartitions
    assert killed["address"] in before and killed["address"] not in after
    # the partials held only by the killed worker were computed again
    assert killed["lost"] and all(count >= 2 for count in recomputed.values()), recomputed
    np.testing.assert_array_equal(disturbed.keys, reference.keys)
    np.testing.assert_array_equal(disturbed.n, reference.n)
    np.testing.assert_array_equal(disturbed.mean, reference.mean)
    np.testing.assert_array_equal(disturbed.m2, reference.m2)
    assert max(_rel_errors(disturbed, _in_memory(df))) < 1e-12


# ------------------------------------------------------------------- labels across files
def _labelled(rng, storage: str) -> pd.DataFrame:
    """Six clusters labelled 1..6 stored as ``storage`` (int64, float64 or text), 40 rows."""
    g = np.repeat(np.arange(1, 7), [3, 9, 5, 8, 1, 14])
    y = 1e6 + g + rng.normal(0.0, 1.0, g.size)
    labels = {"int64": g, "float64": g.astype(np.float64), "text": g.astype(str)}[storage]
    return pd.DataFrame({"g": labels, "y": y})


@pytest.mark.parametrize("storage", ["int64", "float64", "text"])
def test_labels_read_the_same_on_dask_and_in_memory(tmp_path, rng, storage):
    """Labels stored with one type in every file: the Dask pass over three files (clusters cut
    across them) gives the in-memory reader's labels and statistics for the same rows in one
    file (labels are text: 1, 1.0 or "1" as stored, the same on both paths)."""
    df = _labelled(rng, storage)
    df.to_parquet(tmp_path / "all.parquet", index=False)
    for i in range(3):
        df.iloc[i::3].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    ddf = read_parquet_dask(str(tmp_path / "part-*.parquet"), ["g", "y"], labels=["g"])
    got = group_stats_dask(ddf, group="g", response="y", source="parts")
    mem = load(str(tmp_path / "all.parquet"), group="g", response="y")
    order = np.argsort(mem.groups.astype(str))
    np.testing.assert_array_equal(got.groups, mem.groups[order])
    assert got.groups[0] == {"int64": "1", "float64": "1.0", "text": "1"}[storage]
    np.testing.assert_array_equal(got.stats.n, mem.stats.n[order])
    np.testing.assert_allclose(got.stats.mean, mem.stats.mean[order], rtol=1e-14)
    np.testing.assert_allclose(got.stats.ss, mem.stats.ss[order], rtol=1e-9)


@pytest.mark.parametrize(("first", "second", "words"), [
    ("int64", "float64", "holds floating point in {b} but integers in {a}"),
    ("text", "int64", "holds integers in {b} but text in {a}"),
])
def test_label_types_that_differ_across_files_are_refused(tmp_path, rng, first, second, words):
    """A label column stored as integers in one file and floating point (or text) in another
    would split clusters ("1" and "1.0"): refused from the footers, naming both files; a value
    column mixing integers and floating point is fine."""
    a, b = tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"
    _labelled(rng, first).to_parquet(a, index=False)
    _labelled(rng, second).assign(y=lambda d: d.y.round().astype(np.int64)).to_parquet(b,
                                                                                     index=False)
    with pytest.raises(DataError) as info:
        read_parquet_dask(str(tmp_path / "part-*.parquet"), ["g", "y"], labels=["g"])
    message = str(info.value)
    assert words.format(a=a, b=b) in message and "\n" not in message
    ddf = read_parquet_dask(str(tmp_path / "part-*.parquet"), ["y"], labels=[])
    assert list(ddf.columns) == ["y"]


# ------------------------------------------------------------------- the scheduler's address
@pytest.fixture
def listener():
    """A TCP socket on 127.0.0.1 that the test opened; closed afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def _answer_http(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:  # closed by the fixture
            return
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("peer", "words"), [
    ("silent", "no Dask scheduler answered at"),
    ("http", "does not speak Dask's protocol (it sent b'HTTP/1.1"),
    ("closed", "cannot reach the Dask scheduler at"),
])
def test_an_address_where_no_scheduler_answers_is_refused(listener, peer, words):
    """A port that accepts and never answers, one that answers HTTP, and one nobody listens
    on: each a one-line ValueError within the timeout (not a 3 EiB allocation, not a hang)."""
    port = listener.getsockname()[1]
    if peer == "http":
        threading.Thread(target=_answer_http, args=(listener,), daemon=True).start()
    elif peer == "closed":
        listener.close()
    with pytest.raises(DataError) as info:
        client_for(f"tcp://127.0.0.1:{port}", timeout=1.0)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_real_scheduler_is_accepted(rng):
    """The greeting check lets a Dask scheduler through: the moments computed on it equal the
    in-memory ones."""
    from distributed import LocalCluster

    df = _frame(rng, n_groups=20)
    ddf = dd.from_pandas(df, npartitions=3, sort=False)
    with LocalCluster(n_workers=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        with client_for(cluster.scheduler_address, timeout=5.0):
            got = grouped_moments_dask(ddf, keys="g", columns=COLUMNS, n_groups=20)
    assert max(_rel_errors(got, _in_memory(df))) < 1e-12


def test_a_second_local_cluster_does_not_warn_about_a_taken_port(recwarn):
    """With port 8787 taken (by this test, or by whatever holds it), the local cluster's HTTP
    routes go to a free port without distributed's "Port 8787 is already in use" warning, which
    a second varcomp run on the machine would print on stderr."""
    taken = socket.socket()
    try:
        taken.bind(("", 8787))
        taken.listen(1)
    except OSError:  # already taken by someone else: the same condition
        pass
    try:
        with local_client(n_workers=1, processes=False) as client:
            assert client.submit(sum, [1, 2]).result() == 3
    finally:
        taken.close()
    assert not [w for w in recwarn if "8787" in str(w.message)]
