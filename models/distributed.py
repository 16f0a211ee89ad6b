r"""Grouped moments of a Dask DataFrame: per-partition statistics merged in a tree, or shuffled.

One pass over the rows: each partition is reduced to its :class:`models.moments.GroupedMoments`
(keys turned into text, values cast to float64, both explicitly, with errors naming the
partition or file). A cluster split across partitions is merged like any other; no partition
is assumed to hold whole groups. The partials are merged pairwise by Chan, Golub & LeVeque's
rule as they come: in a tree of fan-in ``split_every`` while the data hold fewer than
``shuffle_above`` distinct groups, else shuffled: each partial is split by a hash of the key
into buckets, and each bucket's pieces are merged in their own tree, in parallel, so no task
merges all groups (a map-side combine, then a shuffle of the combined statistics, which are far
fewer than the rows). The distinct groups are counted from the smallest key hashes of the first
2 x ``split_every`` partials (exact below 4,096, else a 1.6% standard error; the same on every
run), which are kept on the workers for the merge; the other partials are never all held at
once, so a worker's memory does not grow with the number of partitions. Groups that appear
only later still merge correctly, in the tree.

Dask's own ``groupby().var()`` is not used: it combines sums of squares (dask issues #5725,
#6306), which loses every digit of a variance when the mean is large against the spread.

The same code runs on the local threaded scheduler, on :func:`local_client`'s cluster or on a
remote scheduler (:func:`client_for`; both in :mod:`models.dask_clients`): the
computation goes to whichever client is current.
Losing a worker mid-run costs only recomputation: the graph is pure, so Dask recomputes the lost
partials and the result is the same to the bit.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError
from varcomp.models.moments import GroupedMoments

__all__ = ["grouped_moments_dask", "read_parquet_dask"]

DEFAULT_SPLIT_EVERY = 8
"""Fan-in of the merge tree: each merge task combines up to this many partials."""


# ------------------------------------------------------------------------------ the reduction
def grouped_moments_dask(
    ddf,
    *,
    keys: str | Sequence[str],
    columns: str | Sequence[str],
    dtypes: Mapping[str, Any] | None = None,
    split_every: int | None = None,
    shuffle_above: int = 1_000_000,
    n_groups: int | None = None,
    progress: bool = False,
    drop_missing: bool = False,
    _partition_delay: float = 0.0,
) -> GroupedMoments:
    """Compute the grouped moments of a Dask DataFrame as a Dask reduction.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        The rows (e.g. from :func:`read_parquet_dask`); only ``keys`` and ``columns`` are read.
    keys : str or sequence of str
        The grouping column(s); several give compound keys, one text column each.
        Labels are turned into text with ``str`` (``"07"`` stays ``"07"``; an integer 7
        becomes ``"7"``, a float 7.0 ``"7.0"``: store labels as text).
    columns : str or sequence of str
        The d value columns, cast to float64 (a partition whose column cannot be cast raises
        ``ValueError`` naming the file or partition, the column and its dtype). Values must
        be finite: filter missing ones out of ``ddf`` first, if that is what the analysis wants.
    dtypes : mapping, optional
        Expected dtype of some columns (e.g. ``{"school": "string", "score": "float64"}``):
        a partition whose column has another dtype raises ``ValueError``. Guards against
        files written with drifting schemas (a label column stored as integers in one file
        loses the zero of ``"07"``). String dtypes of any flavour match each other.
    split_every : int, optional
        Fan-in of the merge tree (default 8).
    shuffle_above : int
        Merge the partials shuffled by key (in buckets of about 250,000 groups) when the first
        partials hold at least this many distinct groups (``0`` forces it), else in one tree.
    n_groups : int, optional
        Overrides that count (e.g. the number of distinct groups, if known).
    progress : bool
        Show progress: ``distributed.progress`` under a distributed client (and the dashboard
        link when it has one), dask's ``ProgressBar`` otherwise.
    drop_missing : bool
        Leave out rows whose value is missing, NaN or infinite and count them in the result's
        ``dropped``, in the same pass; by default such a value is an error. Text in a value
        column is an error either way (as when the rows are read in memory).
    _partition_delay : float
        For tests only: seconds each partition task sleeps, to make a run last.

    Returns
    -------
    GroupedMoments
        Groups sorted by key (:meth:`GroupedMoments.sorted`), the same for every path.
    """
    import dask

    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    if not keys or not columns:
        raise DataError("give at least one key column and one value column")
    if set(keys) & set(columns):
        raise DataError(f"columns {sorted(set(keys) & set(columns))} cannot be both keys and "
                         f"values")
    present = [str(c) for c in ddf.columns]
    for c in keys + columns:
        if c not in present:
            raise DataError(f"column '{c}' not found; columns present: {', '.join(present)}")
    k = DEFAULT_SPLIT_EVERY if split_every is None else int(split_every)
    if k < 2:
        raise DataError(f"split_every must be at least 2, got {split_every}")
    frame = ddf[list(keys + columns)]
    spec = _Spec(keys=keys, columns=columns, dtypes=dict(dtypes or {}),
                 delay=float(_partition_delay), drop=bool(drop_missing))

    parts = [dask.delayed(_partition_moments, pure=True)(p, i, spec)
             for i, p in enumerate(frame.to_delayed(optimize_graph=True))]
    if n_groups is None:  # count the groups of the first partials, kept for the merge
        head = _persist(parts[: 2 * k], progress=False)
        parts = head + parts[2 * k:]
        n_groups = _distinct(_compute([dask.delayed(_smallest_hashes, pure=True)(p)
                                       for p in head], progress=False))
    buckets = 1 if n_groups < shuffle_above else max(2, min(len(parts), -(-n_groups // 250_000)))
    if buckets == 1:
        total = _tree(parts, k, GroupedMoments.merge_all)
    else:
        pieces = [dask.delayed(_split_by_hash, pure=True, nout=buckets)(p, buckets)
                  for p in parts]
        merged = [_tree([pc[b] for pc in pieces], k, GroupedMoments.merge_all)
                  for b in range(buckets)]
        total = dask.delayed(GroupedMoments.concat, pure=True)(merged)
    return _compute(total, progress=progress).sorted()


SKETCH = 4096
"""Hashes per partial kept to count the distinct groups (K minimum values: ~1.6% error)."""


def _key_hashes(part: GroupedMoments) -> np.ndarray:
    keys = part.keys if part.keys.ndim == 2 else part.keys[:, None]
    return pd.util.hash_pandas_object(pd.DataFrame(keys), index=False).to_numpy()


def _smallest_hashes(part: GroupedMoments) -> np.ndarray:
    """The partial's SKETCH smallest key hashes (all of them if it has fewer groups)."""
    h = _key_hashes(part)
    return np.sort(np.partition(h, SKETCH - 1)[:SKETCH]) if h.size > SKETCH else np.sort(h)


def _distinct(smallest: list[np.ndarray]) -> int:
    """Distinct groups over all partials from their smallest hashes (Bar-Yossef et al. 2002).

    The SKETCH smallest hashes of the union are among the partials' own smallest, so fewer than
    SKETCH distinct ones is the exact count, and otherwise the SKETCH-th smallest h gives the
    estimate (SKETCH - 1) 2^64 / h. Deterministic: the same data give the same count.
    """
    u = np.unique(np.concatenate(smallest)) if smallest else np.zeros(0, np.uint64)
    if u.size < SKETCH:
        return int(u.size)
    return int((SKETCH - 1) * 2.0**64 / float(u[SKETCH - 1]))


def _split_by_hash(part: GroupedMoments, buckets: int) -> tuple[GroupedMoments, ...]:
    """A partial's groups in ``buckets`` pieces by a hash of the key (the same everywhere).

    Its count of dropped rows goes with the first piece.
    """
    which = (_key_hashes(part) % np.uint64(buckets)).astype(np.int64)
    return tuple(replace(part._take(np.flatnonzero(which == b)), dropped=part.dropped * (b == 0))
                 for b in range(buckets))


def _on_dask(local, submit, finish, *, progress: bool):
    """Run on the current distributed client if there is one, else under dask's scheduler.

    ``local()`` under dask's own scheduler, or ``finish(client, submit(client))`` on the
    client; either with its progress display when asked.
    """
    client = _current_client()
    if client is None:
        if not progress:
            return local()
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return local()
    futures = submit(client)
    if progress:
        from distributed import progress as show_progress

        link = getattr(client, "dashboard_link", None)
        if link:
            print(f"dask dashboard: {link}", file=sys.stderr)
        show_progress(futures)
    return finish(client, futures)


def _persist(parts: list, *, progress: bool) -> list:
    """Compute ``parts`` and keep them where they are (workers' memory, or this process)."""
    import dask

    return _on_dask(lambda: list(dask.persist(*parts)), lambda c: c.persist(parts),
                    lambda c, persisted: persisted, progress=progress)


@dataclass(frozen=True)
class _Spec:
    """What a partition task needs to know (picklable, small)."""

    keys: tuple[str, ...]
    columns: tuple[str, ...]
    dtypes: dict[str, Any]
    delay: float
    drop: bool = False


def _tree(parts: list, split_every: int, combine):
    """Build a tree of ``combine`` tasks over ``parts``, ``split_every`` at a time."""
    import dask

    if not parts:
        raise DataError("the DataFrame has no partitions")
    level = parts
    while len(level) > 1:
        level = [dask.delayed(combine, pure=True)(level[i:i + split_every])
                 for i in range(0, len(level), split_every)]
    if level[0] is parts[0]:  # one partition: still a task so the result comes out the same way
        return dask.delayed(combine, pure=True)([level[0]])
    return level[0]


def _where(part: pd.DataFrame, index: int | None) -> str:
    """Name a partition in messages: its source file when known, else its number."""
    source = part.attrs.get("source") if hasattr(part, "attrs") else None
    if source:
        return str(source)
    return f"partition {index}" if index is not None else "a partition"


def _prepare_partition(part: pd.DataFrame, spec: _Spec,
                       partition_info: dict | None = None) -> pd.DataFrame:
    """Keys checked and values cast to float64, explicitly; errors name partition, column, dtype."""
    index = partition_info.get("number") if partition_info else None
    where = _where(part, index)
    for c, expected in spec.dtypes.items():
        if c in part.columns and not _same_dtype(part[c].dtype, expected):
            raise DataError(f"{where}: column '{c}' has dtype {part[c].dtype}, expected "
                             f"{pd.api.types.pandas_dtype(expected)}")
    out = {}
    for c in spec.keys:
        missing = part[c].isna()
        if missing.any():
            raise DataError(f"{where}: {int(missing.sum())} row(s) have no '{c}' label: fill "
                            f"them in or remove those rows")
        out[c] = part[c]  # turned into text by GroupedMoments (distinct values only)
    keep = np.ones(len(part), bool)
    for c in spec.columns:
        try:
            values = part[c].astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: column '{c}' of dtype {part[c].dtype} cannot be cast to "
                             f"float64 ({_first_line(exc)})") from None
        bad = ~np.isfinite(values.to_numpy())
        if bad.any() and not spec.drop:
            raise DataError(f"{where}: column '{c}' has {int(bad.sum())} missing or non-finite "
                             f"value(s); grouped moments take finite values only: filter them "
                             f"out first")
        keep &= ~bad
        out[c] = values
    frame = pd.DataFrame(out, index=part.index)
    if keep.all():
        return frame
    frame = frame.loc[keep]
    frame.attrs["dropped"] = int((~keep).sum())
    return frame


def _moments(frame: pd.DataFrame, spec: _Spec) -> GroupedMoments:
    keys = frame[spec.keys[0]] if len(spec.keys) == 1 else frame[list(spec.keys)]
    values = frame[list(spec.columns)].to_numpy(dtype=np.float64)
    return GroupedMoments.from_arrays(keys, values, spec.columns)


def _partition_moments(part: pd.DataFrame, index: int, spec: _Spec) -> GroupedMoments:
    """One partition's partial statistics (its groups may continue in other partitions)."""
    if spec.delay:
        time.sleep(spec.delay)
    frame = _prepare_partition(part, spec, {"number": index})
    moments = _moments(frame, spec)
    dropped = frame.attrs.get("dropped", 0)
    if dropped:
        moments = replace(moments, dropped=dropped)
    return moments


def _same_dtype(found, expected) -> bool:
    expected = pd.api.types.pandas_dtype(expected)
    if pd.api.types.is_string_dtype(expected) and not expected == np.dtype(object):
        return pd.api.types.is_string_dtype(found) and found != np.dtype(object)
    return found == expected


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _compute(obj, *, progress: bool):
    """Compute on the current distributed client if there is one, else dask's scheduler."""
    import dask

    return _on_dask(lambda: dask.compute(obj)[0], lambda c: c.compute(obj),
                    lambda c, f: c.gather(f) if isinstance(f, list) else f.result(),
                    progress=progress)


def _current_client():
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


# ------------------------------------------------------------------------------ reading
def read_parquet_dask(
    pattern: str | os.PathLike | Sequence[str | os.PathLike],
    columns: Sequence[str],
    *,
    labels: Sequence[str] = (),
    rows_per_partition: int = 1 << 20,
):
    """Read ``columns`` of Parquet files (a glob like ``data/part-*.parquet``) as Dask frame.

    Every file's footer is read first (one small read per file), so a corrupt file or one
    without a needed column is refused before any work starts, with a one-line
    ``ValueError`` naming it; a file that disappears or becomes unreadable after that fails
    its task with the same kind of message. Partitions are runs of whole row groups of one file
    (at most ``rows_per_partition`` rows unless a single row group is larger), read with only
    ``columns``; each carries its file name (``DataFrame.attrs['source']``) for messages.

    The footers also decide, before any work, what would otherwise surface in one task: a
    column must hold one kind of value in every file (text in one file's numeric column, which
    Parquet stores by turning that file's whole column into text, names both files); the
    ``labels`` (grouping columns, turned into text per value) must be stored with one type,
    integers and floating point counting as two (``1`` and ``1.0`` would be two clusters), and
    with no missing value where the footer counts them.

    Built with ``dask.dataframe.from_map`` over the files rather than
    ``dask.dataframe.read_parquet``, whose errors do not name the file (pyarrow's "Parquet magic
    bytes not found in footer") and which may fuse files into one partition.
    """
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    columns = [str(c) for c in columns]
    if isinstance(pattern, (str, os.PathLike)):
        files = sorted(glob.glob(os.fspath(pattern)))
        if not files:
            raise DataError(f"no files match {os.fspath(pattern)}")
    else:
        files = [os.fspath(p) for p in pattern]
        if not files:
            raise DataError("no Parquet files given")
    pieces: list[tuple[str, tuple[int, ...], bool]] = []
    schema = None
    first: dict[str, tuple[str, str]] = {}  # column -> (its kind, the first file that has it)
    for path in files:  # one footer per file (files, not rows)
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
        except Exception as exc:  # pyarrow's own error types, OSError
            raise DataError(f"cannot read {path}: {_first_line(exc)}") from None
        absent = [c for c in columns if c not in names]
        if absent:
            raise DataError(f"{path} has no column '{absent[0]}'; columns present: "
                             f"{', '.join(names)}")
        _check_file(path, pf, columns, set(map(str, labels)), first)
        if schema is None:
            schema = pf.schema_arrow
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        groups = _runs(sizes, int(rows_per_partition))
        for g in groups:
            pieces.append((path, tuple(g), len(groups) > 1))
    meta = schema.empty_table().select(columns).to_pandas()
    return dd.from_map(_read_piece, pieces, args=[columns], meta=meta, label="read-parquet",
                       enforce_metadata=False)


def _kind(arrow_type, label: bool) -> str | None:
    """What a stored column holds, as compared across files (None: only nulls, fits any)."""
    import pyarrow.types as pt

    t = arrow_type.value_type if pt.is_dictionary(arrow_type) else arrow_type
    if pt.is_null(t):
        return None
    if pt.is_string(t) or pt.is_large_string(t) or str(t) == "string_view":
        return "text"
    if pt.is_boolean(t):
        return "true/false"
    if pt.is_integer(t) or pt.is_floating(t) or pt.is_decimal(t):
        if not label:
            return "numbers"
        return "integers" if pt.is_integer(t) else "floating point"
    return str(t)


def _check_file(path: str, pf, columns: list[str], labels: set[str],
                first: dict[str, tuple[str, str]]) -> None:
    """One file's footer against the files before it (see :func:`read_parquet_dask`)."""
    schema = pf.schema_arrow
    for c in columns:
        label = c in labels
        if label:
            nulls = _null_count(pf, c)
            if nulls:
                raise DataError(f"{path}: {nulls} row(s) have no '{c}' label: fill them in or "
                                f"remove those rows")
        kind = _kind(schema.field(c).type, label)
        if kind is None:
            continue
        seen = first.setdefault(c, (kind, path))
        if seen[0] != kind:
            why = ("grouping labels must be stored with one type in every file: they are "
                   "compared as text, so 1 and 1.0 would be two clusters" if label else
                   "a column must hold one kind of value in every file (a text value turns "
                   "the file's whole column into text)")
            raise DataError(f"column '{c}' holds {kind} in {path} but {seen[0]} in {seen[1]}: "
                            f"{why}")


def _null_count(pf, name: str) -> int:
    """Missing values of a flat column by the footer's statistics (0 where it has none)."""
    total = 0
    for i in range(pf.num_row_groups):
        group = pf.metadata.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            if chunk.path_in_schema == name and chunk.is_stats_set and \
                    chunk.statistics.has_null_count:
                total += chunk.statistics.null_count
    return total


def _runs(sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive row groups in runs of at most ``limit`` rows (at least one group per run)."""
    runs: list[list[int]] = [[]]
    rows = 0
    for i, s in enumerate(sizes):
        if runs[-1] and rows + s > limit:
            runs.append([])
            rows = 0
        runs[-1].append(i)
        rows += s
    return runs


def _read_piece(piece: tuple[str, tuple[int, ...], bool], names: list[str]) -> pd.DataFrame:
    """Read some row groups of one file; any failure is one line naming the file."""
    import pyarrow.parquet as pq

    path, row_groups, partial = piece
    try:
        pf = pq.ParquetFile(path)
        table = pf.read_row_groups(list(row_groups), columns=names) if row_groups else \
            pf.schema_arrow.empty_table().select(names)
        frame = table.to_pandas()
    except Exception as exc:  # file gone, truncated, rewritten
        raise DataError(f"cannot read {path}: {_first_line(exc)}") from None
    frame.attrs["source"] = (f"{path} (row groups {row_groups[0]}-{row_groups[-1]})"
                             if partial else path)
    return frame


# ------------------------------------------------------------------------------ the families
RESPONSE_COLUMN = "__response__"


def group_stats_dask(ddf, *, group: str, response: str, source: str, progress: bool = False):
    """The one-way statistics of a Dask DataFrame: :class:`models.chunked.SufficientData`.

    Rows with a missing or non-finite response are dropped and counted (as in memory); the
    group labels are text.
    """
    from varcomp.models.chunked import from_stats

    for name, role in ((group, "group"), (response, "response")):
        if name not in ddf.columns:
            raise DataError(f"{role} column '{name}' not found; columns present: "
                            f"{', '.join(map(str, ddf.columns))}")
    gm = grouped_moments_dask(ddf[[group, response]], keys=group, columns=response,
                              progress=progress, drop_missing=True)
    if gm.n_groups == 0:
        raise DataError(f"every value of ['{response}'] is missing or not finite")
    return from_stats(gm.to_group_stats(), gm.keys, response=response, group_name=group,
                      source=source, dropped_rows=gm.dropped)


def formula_stats_dask(ddf, formula: str, *, source: str, progress: bool = False):
    """A formula's per-cell statistics of a Dask DataFrame: :class:`models.formula_stats.CellData`.

    The categorical columns' levels are collected first (one pass over those columns); every
    partition then evaluates the fixed effects with the same design and is summarised per cell;
    the partials merge in a tree (:func:`grouped_moments_dask`).
    """
    from varcomp.models.design import parse
    from varcomp.models.formula_stats import (
        STATEFUL_META,
        categorical_columns,
        cell_data,
        design_spec,
        set_stateful,
        stateful_calls,
        stateful_partials,
    )

    parsed = parse(formula)
    missing = [v for v in parsed.variables if v not in ddf.columns]
    if missing:
        raise DataError(f"column(s) {missing} of the formula not found; columns present: "
                        f"{', '.join(map(str, ddf.columns))}")
    ddf = ddf[list(parsed.variables)]
    gvars = sorted({v for g in parsed.groups for v in g})
    sample = ddf.head(1000, npartitions=-1)
    cats = categorical_columns(parsed.fixed, sample, gvars)
    levels = {c: sorted(_compute(ddf[c].dropna().unique(), progress=False).tolist(), key=str)
              for c in cats}
    spec = design_spec(formula, sample, levels)
    if stateful_calls(spec):
        # one more pass: centring/scaling from the whole data's mean and sd, not a partition's
        set_stateful(spec, _compute(ddf.map_partitions(stateful_partials, spec,
                                                       meta=STATEFUL_META), progress=False))
    meta = pd.DataFrame({**{v: pd.Series(dtype=object) for v in spec.variables},
                         RESPONSE_COLUMN: pd.Series(dtype=np.float64),
                         **{t: pd.Series(dtype=np.float64) for t in spec.terms}})
    design = ddf.map_partitions(_design_frame, spec, meta=meta)
    gm = grouped_moments_dask(design, keys=list(spec.variables),
                              columns=[RESPONSE_COLUMN, *spec.terms], progress=progress,
                              drop_missing=True)
    return cell_data(gm, spec, source=source, dropped=gm.dropped)


def _design_frame(part: pd.DataFrame, spec) -> pd.DataFrame:
    """One partition's rows as [grouping labels (text), response, X's columns].

    A row with a missing or non-finite value has a NaN response (dropped and counted by the
    reduction).
    """
    from varcomp.models.formula_stats import kept_rows
    from varcomp.models.io import labels_as_text

    try:
        keep, y = kept_rows(part, spec)
    except DataError as exc:  # name the file the partition came from
        raise DataError(f"{_where(part, None)}: {exc}") from None
    kept = part.loc[keep].reset_index(drop=True)
    X = np.full((len(part), len(spec.terms)), np.nan)
    if len(kept):
        X[keep] = np.asarray(spec.design.evaluate_new_data(kept).design_matrix, dtype=np.float64)
    keep &= np.isfinite(X).all(axis=1)
    out = {v: labels_as_text(part[v].to_numpy()) for v in spec.variables}
    out[RESPONSE_COLUMN] = np.where(keep, y, np.nan)
    for j, t in enumerate(spec.terms):
        out[t] = X[:, j]
    return pd.DataFrame(out)


__all__ += ["formula_stats_dask", "group_stats_dask"]
