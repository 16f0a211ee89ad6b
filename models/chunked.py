r"""Out-of-core sufficient statistics: a CSV or Parquet file reduced to per-group (n, mean, S).

The one-way model's likelihood depends on the data only through each group's count, mean and
within-group sum of squares (:mod:`models.density`), so a file of any length can be fitted without
holding its rows: pyarrow streams the file in record batches, each batch is reduced with
:func:`models.data.group_stats`, and the partial statistics are merged with
:meth:`models.data.GroupStats.combine` (Chan, Golub & LeVeque's pairwise update)

.. math::
    n = n_a + n_b,\quad \bar x = \bar x_a + (\bar x_b - \bar x_a)\, n_b / n,\quad
    S = S_a + S_b + (\bar x_b - \bar x_a)^2\, n_a n_b / n.

Group labels are text exactly as written (the dialect is :func:`models.io.sniff`'s, the same
as the in-memory reader's) and get codes in order of first appearance across chunks, as
:meth:`models.data.ClusteredData.from_frame` gives them, so the result equals the in-memory path
to rounding. Memory is O(chunk + L), time O(N).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from varcomp.models.data import ClusteredData, DataError, GroupStats, group_stats
from varcomp.models.io import EXTRA, labels_as_text, open_text, sniff

__all__ = ["SufficientData", "from_stats", "read_stats"]

CHUNK_ROWS = 1 << 20
"""Rows per Parquet record batch (about 1 M); CSV blocks are sized in bytes (:data:`CSV_BLOCK`)."""
CSV_BLOCK = 32 << 20


@dataclass(frozen=True)
class SufficientData:
    """Clustered data held only as per-group sufficient statistics (no rows).

    It offers what the ``sufficient`` builder, the ML/REML estimates and the report read from a
    :class:`models.data.ClusteredData` (``stats``, ``groups``, ``sizes``, ``n_obs``,
    ``anova``, ``require_identifiable``); asking for the rows (``y``) is an error.
    """

    stats: GroupStats
    groups: np.ndarray
    responses: tuple[str, ...]
    group_name: str
    source: str = "<stats>"
    dropped_rows: int = 0
    warnings: tuple[str, ...] = field(default=())

    # the same computations as ClusteredData's, which read nothing but ``stats``
    anova = ClusteredData.anova
    moments = ClusteredData.moments
    require_identifiable = ClusteredData.require_identifiable

    def _range(self, k: int) -> float:
        """A lower bound of max - min (the rows are gone).

        The spread of the cluster means, or the largest within-cluster deviation the sums of
        squares imply.
        """
        n, m, ss = self.stats.column(k)
        with np.errstate(all="ignore"):
            within = float(np.sqrt(np.max(ss / n)))
        return max(float(np.ptp(m)), within)

    @property
    def y(self) -> np.ndarray:
        """Not available: the rows were reduced to statistics while reading."""
        raise DataError("these data hold only per-group sufficient statistics (read in chunks); "
                        "this step needs the rows: load the file in memory instead")

    @property
    def n_obs(self) -> int:
        """Number of rows N kept."""
        return int(self.stats.n[:, 0].sum())

    @property
    def n_groups(self) -> int:
        """Number of groups L."""
        return int(self.groups.shape[0])

    @property
    def p(self) -> int:
        """Number of response columns."""
        return len(self.responses)

    @property
    def sizes(self) -> np.ndarray:
        """Cluster sizes n_l."""
        return self.stats.n[:, 0].astype(np.int64)

    @property
    def name(self) -> str:
        """The file stem, for reports."""
        return Path(self.source).stem


def from_stats(
    stats: GroupStats,
    groups,
    *,
    response: str,
    group_name: str,
    source: str = "<stats>",
    dropped_rows: int = 0,
) -> SufficientData:
    """Wrap per-group statistics (univariate) and their labels as a data set for the builders."""
    groups = np.asarray([str(g) for g in groups], dtype=object)
    if stats.n.shape != (groups.size, 1):
        raise DataError(f"statistics for {stats.n.shape[0]} groups x {stats.n.shape[1]} responses "
                        f"do not match {groups.size} labels and one response")
    warnings = ()
    if dropped_rows:
        warnings = (f"{dropped_rows} row(s) with a missing or non-finite response were dropped",)
    return SufficientData(stats=stats, groups=groups, responses=(str(response),),
                          group_name=str(group_name), source=str(source),
                          dropped_rows=int(dropped_rows), warnings=warnings)


# ------------------------------------------------------------------------------ reading
def _batches(path: Path, group: str, response: str, chunk_rows: int, csv_block: int):
    """Yield (group, response) pyarrow arrays chunk by chunk, in the dialect :func:`sniff` read."""
    import pyarrow as pa

    d = sniff(path)
    _check_columns(path, d, group, response)
    if d.kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=[group, response]):
            yield batch.column(0), batch.column(1)
        return

    import pyarrow.csv as pcsv

    names = list(d.raw_columns) + ([EXTRA] if d.extra_field else [])
    spare = [c for c in names if c in ("", EXTRA)]
    try:
        reader = pcsv.open_csv(
            open_text(path, d),
            read_options=pcsv.ReadOptions(block_size=csv_block, column_names=names,
                                          skip_rows=1),
            parse_options=pcsv.ParseOptions(delimiter=d.delimiter),
            convert_options=pcsv.ConvertOptions(
                include_columns=[group, response, *spare],
                # labels as text, exactly as written; the response as float64 in every block
                column_types={group: pa.string(), response: pa.float64(),
                              **{c: pa.string() for c in spare}},
                strings_can_be_null=True),
        )
        for batch in reader:
            for k in range(2, batch.num_columns):
                if batch.column(k).null_count < len(batch.column(k)):
                    raise DataError(f"{path}: rows have one field more than the header names "
                                    f"({len(d.columns)}), and it holds values: the columns "
                                    f"would shift; fix the header ({d.describe()})")
            yield batch.column(0), batch.column(1)
    except pa.ArrowInvalid as exc:
        msg = _first_line(exc)
        if "conversion error to double" in msg:
            raise DataError(f"response '{response}' is not numeric ({msg}): choose a numeric "
                            f"column or clean it") from None
        raise DataError(f"cannot read {path}: {msg} ({d.describe()})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_columns(path: Path, d, group: str, response: str) -> None:
    cols = list(d.columns)
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise DataError(f"{path} has duplicate column names {dupes}: rename them so each column "
                        f"is unique")
    for name, role in ((group, "group"), (response, "response")):
        if name not in cols:
            raise DataError(f"{role} column '{name}' not found; columns present: "
                            f"{', '.join(cols)} (read as {d.describe()})")
    if group == response:
        raise DataError(f"column '{group}' cannot be both the group and a response")


def _to_float(col, response: str) -> np.ndarray:
    """A response column as float64 with NaN for nulls; non-numeric columns are refused."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
            or pa.types.is_decimal(col.type)):
        raise DataError(f"response '{response}' is not numeric (type {col.type}): choose a "
                        f"numeric column or clean it")
    col = pc.cast(col, pa.float64())
    return col.to_numpy(zero_copy_only=False)  # nulls become NaN


def read_stats(
    path: str | os.PathLike,
    *,
    group: str,
    response: str,
    chunk_rows: int = CHUNK_ROWS,
    csv_block: int = CSV_BLOCK,
) -> SufficientData:
    """Per-group sufficient statistics of a CSV or Parquet file, reading it chunk by chunk.

    Rows with a missing or non-finite response are dropped and counted, as in
    :meth:`models.data.ClusteredData.from_frame`; a row without a group label is an error.

    Parameters
    ----------
    path : str or path
        A ``.parquet``/``.pq`` file (read in record batches of ``chunk_rows`` rows) or a CSV
        file (streamed in blocks of ``csv_block`` bytes).
    group, response : str
        The grouping column and the (single) response column.

    Returns
    -------
    SufficientData
        Statistics with codes in order of first appearance, as the in-memory path gives them.
    """
    import pyarrow.compute as pc

    p = Path(path)
    raw: pd.Index | None = None  # raw label values seen so far, position = provisional code
    total: GroupStats | None = None
    rows = dropped = 0
    for g_col, y_col in _batches(p, group, response, int(chunk_rows), int(csv_block)):
        n_rows = len(g_col)
        if g_col.null_count:
            bad = np.flatnonzero(g_col.is_null().to_numpy(zero_copy_only=False))
            raise DataError(f"row(s) have no '{group}' label (first data rows "
                            f"{(bad[:5] + rows + 1).tolist()}): fill them in or remove those rows")
        y = _to_float(y_col, response)
        keep = np.isfinite(y)
        rows += n_rows
        if not keep.all():
            dropped += int((~keep).sum())
            y = y[keep]
            g_col = g_col.filter(keep)
        if y.size == 0:
            continue
        # chunk-local codes (first-appearance order), then their global codes
        enc = pc.dictionary_encode(g_col)
        local = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        uniques = pd.Index(labels_as_text(enc.dictionary.to_numpy(zero_copy_only=False)),
                           dtype=object)
        if raw is None:
            raw, where = pd.Index(uniques), np.arange(len(uniques))
        else:
            where = raw.get_indexer(uniques)
            new = where < 0
            if new.any():
                where[new] = len(raw) + np.arange(int(new.sum()))
                raw = raw.append(pd.Index(uniques[new]))
        part = group_stats(y, local, len(uniques))
        total = _merge(total, part, where, len(raw))
    if rows == 0:
        raise DataError(f"{p} has a header but no rows")
    if total is None or raw is None:
        raise DataError(f"every value of ['{response}'] is missing or not finite")
    groups = raw.to_numpy(dtype=object)
    return from_stats(total, groups, response=response, group_name=group, source=str(p),
                      dropped_rows=dropped)


def _merge(total: GroupStats | None, part: GroupStats, where: np.ndarray, L: int) -> GroupStats:
    """Add a chunk's statistics (its groups at global codes ``where``) into the running total."""
    n = np.zeros((L, 1), dtype=np.int64)
    mean = np.full((L, 1), np.nan)
    ss = np.zeros((L, 1))
    n[where], mean[where], ss[where] = part.n, part.mean, part.ss
    part = GroupStats(n=n, mean=mean, ss=ss, scatter=part.scatter)
    if total is None:
        return part
    if total.n.shape[0] < L:  # groups first seen in this chunk
        grow = L - total.n.shape[0]
        total = GroupStats(n=np.vstack([total.n, np.zeros((grow, 1), np.int64)]),
                           mean=np.vstack([total.mean, np.full((grow, 1), np.nan)]),
                           ss=np.vstack([total.ss, np.zeros((grow, 1))]), scatter=total.scatter)
    out = GroupStats.combine(total, part)
    # univariate pooled within-group scatter = sum of S_l (combine adds chunk scatters, which
    # would miss the between-chunk term of a group split across chunks)
    return GroupStats(n=out.n, mean=out.mean, ss=out.ss, scatter=np.array([[out.ss.sum()]]))
