"""Reading data files: the dialect is detected once, the same for the in-memory and chunked readers.

:func:`sniff` looks at the first 64 KiB of a file (decompressed) and returns a :class:`Dialect`:
Parquet or CSV; gzip or not (by magic bytes, whatever the suffix); a UTF-8 byte-order mark; the
delimiter (``,`` ``;`` tab ``|``, by :class:`csv.Sniffer` restricted to those); the header names
with surrounding spaces stripped; whether the data rows carry one more field than the header (a
trailing delimiter on every row: the empty extra field is dropped; a non-empty one is refused,
because it would shift every column by one). Group labels are read as text exactly as written
(``07`` and ``7`` are two clusters); Parquet columns of numbers become text by
:func:`labels_as_text`, the same function on every path.
"""

from __future__ import annotations

import csv
import gzip
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError

__all__ = ["EXTRA", "Dialect", "labels_as_text", "open_text", "read_frame", "regular",
           "sniff"]

SAMPLE_BYTES = 64 << 10
DELIMITERS = ",;\t|"
PARQUET_SUFFIXES = (".parquet", ".pq")
EXTRA = "\x00extra"  # name of the field data rows carry beyond the header, if any


@dataclass(frozen=True)
class Dialect:
    """How a data file is written (see the module docstring)."""

    kind: str
    columns: tuple[str, ...]
    compression: str | None = None
    bom: bool = False
    delimiter: str = ","
    extra_field: bool = False
    raw_columns: tuple[str, ...] = ()

    def describe(self) -> str:
        """E.g. ``CSV, delimiter ';', gzip, UTF-8 with BOM``."""
        if self.kind == "parquet":
            return "Parquet"
        parts = ["CSV", f"delimiter {self.delimiter!r}"]
        if self.compression:
            parts.append(self.compression)
        if self.bom:
            parts.append("UTF-8 with BOM")
        if self.extra_field:
            parts.append("a trailing delimiter on every row")
        return ", ".join(parts)

    @property
    def encoding(self) -> str:
        """The text encoding to decode the file with (the BOM is skipped)."""
        return "utf-8-sig" if self.bom else "utf-8"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(f"file not found: {path} (give a CSV/Parquet path or a shipped dataset "
                        f"name; `varcomp datasets` lists those)")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file")


def _is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"PAR1" or path.suffix.lower() in PARQUET_SUFFIXES


_SPOOLED: dict[str, tuple[object, Path]] = {}


def regular(path: str | os.PathLike) -> Path:
    """``path``, or for a pipe or device (``<(cat x.csv)``, ``/dev/stdin``) a file of its bytes.

    A pipe can be read once, but a file is read twice (its dialect, then its rows): its bytes
    are copied once into an anonymous temporary file, which every later read of the same path
    reuses (the file disappears with the process).
    """
    p = Path(path)
    if not p.exists() or p.is_file() or p.is_dir():
        return p
    if str(p) not in _SPOOLED:
        import shutil
        import tempfile

        tmp = tempfile.TemporaryFile()
        try:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, tmp)
        except OSError as exc:
            tmp.close()
            raise DataError(f"cannot read {p}: {_first_line(exc)}") from None
        tmp.flush()
        fd_path = Path(f"/proc/self/fd/{tmp.fileno()}")
        if not fd_path.exists():  # pragma: no cover - no /proc: a named copy
            named = tempfile.NamedTemporaryFile(delete=False, suffix=p.suffix)
            tmp.seek(0)
            shutil.copyfileobj(tmp, named)
            named.close()
            fd_path = Path(named.name)
        _SPOOLED[str(p)] = (tmp, fd_path)
    return _SPOOLED[str(p)][1]


def sniff(path: str | os.PathLike) -> Dialect:
    """Detect a file's dialect from its first 64 KiB (see the module docstring)."""
    shown = Path(path)
    _check_path(shown)
    p = regular(shown)
    if _is_parquet(p):
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(p)
        except Exception as exc:  # pyarrow's own error types for corrupt files
            raise DataError(f"cannot read {shown}: {_first_line(exc)}") from None
        return Dialect("parquet", tuple(_parquet_columns(schema)))
    with open(p, "rb") as fh:
        magic = fh.read(2)
    compression = "gzip" if magic == b"\x1f\x8b" else None
    try:
        opener = gzip.open if compression else open
        with opener(p, "rb") as fh:
            sample = fh.read(SAMPLE_BYTES)
    except OSError as exc:
        raise DataError(f"cannot read {shown}: {_first_line(exc)}") from None
    if not sample.strip():
        raise DataError(f"{shown} is empty: it has no header and no rows")
    bom = sample.startswith(b"\xef\xbb\xbf")
    if bom:
        sample = sample[3:]
    if b"\x00" in sample:
        raise DataError(f"cannot read {shown}: it is not a text (CSV) or Parquet file")
    text = sample.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(sample) == SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:50]), delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    rows = list(csv.reader(lines[:200], delimiter=delimiter))
    header = [h.strip() for h in rows[0]] if rows else []
    widths = {len(r) for r in rows[1:] if r}
    extra = bool(widths) and widths == {len(header) + 1}
    if not extra:  # a row longer than the header: pandas would drop or shift its fields
        for i, r in enumerate(rows[1:], start=2):
            if len(r) > len(header) and any(f.strip() for f in r[len(header):]):
                raise DataError(f"{shown}: line {i} has {len(r)} fields but the header names "
                                f"{len(header)}: the extra field would be dropped or shift the "
                                f"columns; fix that line or the header ({delimiter!r} "
                                f"delimited)")
    # a trailing delimiter on the header line makes an unnamed last column (dropped if empty)
    columns = header[:-1] if len(header) > 1 and header[-1] == "" else header
    return Dialect("csv", tuple(columns), compression, bom, delimiter, extra, tuple(header))


def _parquet_columns(schema) -> list[str]:
    """Column names of a Parquet schema, named pandas index columns included."""
    names = list(schema.names)
    meta = schema.pandas_metadata or {}
    index = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    return [n for n in names if not n.startswith("__index_level_")] + \
        [n for n in index if n in names and n.startswith("__index_level_")]


def labels_as_text(values) -> np.ndarray:
    """Group labels as text: strings unchanged, numbers by numpy's ``str`` (``7``, ``7.5``).

    Used on every path (in memory, chunked, Dask), so a label reads the same everywhere.
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "OUS":
        return np.asarray([v if isinstance(v, str) else str(v) for v in arr], dtype=object)
    return arr.astype(str).astype(object)


def read_frame(path: str | os.PathLike, *, text_columns=(), dialect: Dialect | None = None
               ) -> pd.DataFrame:
    """Read a whole CSV or Parquet file into a data frame, ``text_columns`` as text.

    Every reading problem is one :class:`DataError`; an empty field of a text column is missing.
    """
    shown = Path(path)
    d = dialect or sniff(path)
    p = regular(path)
    dupes = sorted({c for c in d.columns if d.columns.count(c) > 1})
    if dupes:
        raise DataError(f"{shown} has duplicate column names {dupes}: rename them so each "
                        f"column is unique")
    try:
        if d.kind == "parquet":
            df = pd.read_parquet(p)
            if any(n is not None for n in df.index.names):
                df = df.reset_index()
            for c in text_columns:
                if c in df.columns:
                    col = df[c]
                    df[c] = pd.Series(np.where(col.isna(), None, labels_as_text(col.to_numpy())),
                                      index=df.index, dtype=object)
        else:
            names = list(d.raw_columns) + ([EXTRA] if d.extra_field else [])
            with warnings.catch_warnings():  # a long row beyond the sniffed lines: refuse it
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(p, sep=d.delimiter, encoding=d.encoding,
                                 compression=d.compression, header=0, names=names,
                                 index_col=False, keep_default_na=True,
                                 dtype={c: str for c in text_columns if c in names})
            extra = [c for c in df.columns if c == EXTRA or c == ""]
            for c in extra:
                if df[c].notna().any():
                    raise DataError(f"{shown}: rows have one field more than the header names "
                                    f"({len(d.columns)}), and it holds values: the columns "
                                    f"would shift; fix the header ({d.describe()})")
            df = df.drop(columns=extra)
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{shown} is empty: it has no header and no rows") from None
    except Exception as exc:  # parser, decoding, OS and pyarrow's own errors
        raise DataError(f"cannot read {shown}: {_first_line(exc)} ({d.describe()})") from None
    if df.shape[0] == 0:
        raise DataError(f"{shown} has a header but no rows")
    return df


def open_text(path: Path, dialect: Dialect):
    """A binary stream of the file's bytes, decompressed (for pyarrow's streaming CSV reader)."""
    if dialect.compression:
        return gzip.open(path, "rb")
    return open(path, "rb")

