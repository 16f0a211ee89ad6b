"""A formula's sufficient statistics from rows that never sit in memory together.

A file too large for memory (chunks, :func:`read_formula_stats`) or data spread over a cluster
(Dask partitions, :mod:`models.distributed`) is reduced part by part: each part's fixed-effects
columns are evaluated with the *same* formulae design (:class:`DesignSpec`, built on a template
that holds every level of the categorical columns), and its rows summarised as per-cell moments of
[y, X] (:func:`partition_moments`); the parts merge by Chan's rule. :class:`CellData` then carries
the statistics, the design's names and factors, and no rows: the ``sufficient`` forms, ML/REML,
leave-one-cluster-out and the report read nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError

__all__ = ["CellData", "DesignSpec", "categorical_columns", "cell_data", "design_spec", "kept_rows",
           "partition_moments", "read_formula_stats", "set_stateful", "stateful_calls",
           "stateful_partials"]

CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class DesignSpec:
    """What every part needs to summarise its rows the same way.

    The parsed formula, the formulae design to evaluate new rows with (its centring and scaling
    set from the whole data by :func:`set_stateful`), and the grouping columns.
    """

    formula: str
    response: str
    fixed: str
    groups: tuple[tuple[str, ...], ...]
    variables: tuple[str, ...]
    terms: tuple[str, ...]
    design: object = field(repr=False, compare=False)
    parsed: object = field(default=None, repr=False, compare=False)


def design_spec(formula: str, sample: pd.DataFrame, levels: dict[str, list]) -> DesignSpec:
    """A :class:`DesignSpec` from a sample of rows and every level of the categorical columns."""
    import formulae

    from varcomp.models.design import numeric_covariates, parse, size_check
    from varcomp.models.formula_guard import env

    parsed = parse(formula)
    gvars = tuple(sorted({v for g in parsed.groups for v in g}))
    numeric_covariates(sample, parsed.fixed)
    size_check(parsed.fixed, {c: len(v) for c, v in levels.items()}, None)
    template = sample[list(parsed.variables)].dropna().head(1)
    if template.empty:
        raise DataError(f"no row of the first part has every value of {formula!r}")
    rows = [template]
    for col, values in levels.items():  # one row per level, so the coding knows them all
        extra = pd.concat([template] * len(values), ignore_index=True)
        extra[col] = values
        rows.append(extra)
    frame = pd.concat(rows, ignore_index=True)
    dm = formulae.design_matrices(parsed.fixed, frame, na_action="pass", env=env())
    terms = tuple(str(c) for c in dm.common.as_dataframe().columns)
    return DesignSpec(formula, parsed.label, parsed.fixed, parsed.groups, gvars,
                      terms, dm.common, parsed)


def kept_rows(df: pd.DataFrame, spec: DesignSpec) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of a part are kept, and the response.

    :func:`models.design.row_filter`, the in-memory load's filter, applied to one part.
    """
    from varcomp.models.design import row_filter

    return row_filter(df, spec.parsed, whole=False)


def stateful_calls(spec: DesignSpec) -> dict[str, list]:
    """The design's centring/scaling calls by their text (one transform may recur in terms)."""
    from formulae.terms.call_resolver import LazyCall, LazyOperator

    found: dict[str, list] = {}

    def walk(node) -> None:
        if isinstance(node, LazyCall) and node.stateful_transform is not None:
            found.setdefault(str(node), []).append(node)
        if isinstance(node, LazyCall | LazyOperator):
            for a in node.args:
                walk(a)

    for term in spec.design.terms.values():
        for c in getattr(term, "components", []):
            walk(getattr(c, "call", None))
    return found


STATEFUL_META = pd.DataFrame({"call": pd.Series(dtype=object), "n": pd.Series(dtype=np.float64),
                              "mean": pd.Series(dtype=np.float64),
                              "m2": pd.Series(dtype=np.float64)})


def stateful_partials(df: pd.DataFrame, spec: DesignSpec) -> pd.DataFrame:
    """Count, mean and sum of squared deviations of each centring/scaling transform's argument.

    Over the part's kept rows (those the in-memory design computes them on); merged across
    parts by :func:`set_stateful`.
    """
    from varcomp.models.formula_guard import env

    keep, _ = kept_rows(df, spec)
    part = df.loc[keep].reset_index(drop=True)
    rows = []
    for key, calls in stateful_calls(spec).items():
        with np.errstate(all="ignore"):
            v = np.asarray(calls[0].args[0].eval(part, env()), dtype=np.float64).reshape(-1)
        if v.size:
            mean = float(v.mean())
            rows.append((key, float(v.size), mean, float(((v - mean) ** 2).sum())))
    return pd.DataFrame(rows, columns=list(STATEFUL_META.columns)).astype(STATEFUL_META.dtypes)


def set_stateful(spec: DesignSpec, partials: pd.DataFrame) -> None:
    """Set the design's centring/scaling from the merged partials (Chan's rule).

    The whole data's mean and sd (``np.std``'s, as ``formulae`` computes in memory), not a part's.
    """
    for key, calls in stateful_calls(spec).items():
        p = partials[partials["call"] == key]
        n = float(p["n"].sum())
        if n == 0:
            raise DataError(f"{key}: no row has every value of {spec.formula!r} observed")
        mean = float((p["n"] * p["mean"]).sum() / n)
        m2 = float(p["m2"].sum() + (p["n"] * (p["mean"] - mean) ** 2).sum())
        for c in calls:
            t = c.stateful_transform
            t.mean, t.params_set = mean, True
            if hasattr(t, "std"):
                t.std = np.sqrt(m2 / n)


def partition_moments(df: pd.DataFrame, spec: DesignSpec):
    """Per-cell moments of [y, X] of one part, and the number of rows it dropped.

    Rows with a missing or non-finite response or covariate are dropped (counted); a missing
    grouping label is an error, as in memory. Labels are text (:func:`models.io.labels_as_text`).
    """
    from varcomp.models.io import labels_as_text
    from varcomp.models.moments import GroupedMoments

    keep, y = kept_rows(df, spec)
    part = df.loc[keep].reset_index(drop=True)
    X = np.asarray(spec.design.evaluate_new_data(part).design_matrix, dtype=np.float64) \
        if len(part) else \
        np.zeros((0, len(spec.terms)))
    finite = np.isfinite(X).all(axis=1) if len(part) else np.zeros(0, bool)
    dropped = int((~keep).sum() + (~finite).sum())
    part, X, yk = part.loc[finite], X[finite], y[keep][finite]
    keys = np.column_stack([labels_as_text(part[v].to_numpy()) for v in spec.variables]) \
        if len(part) else np.empty((0, len(spec.variables)), dtype=object)
    if len(part) == 0:
        return GroupedMoments.empty(("y", *spec.terms), key_width=len(spec.variables)), dropped
    gm = GroupedMoments.from_arrays(keys if keys.shape[1] > 1 else keys[:, 0],
                                    np.column_stack([yk, X]), ("y", *spec.terms))
    return gm, dropped


@dataclass(frozen=True, eq=False)
class CellData:
    """A formula's data held as per-cell statistics only (:class:`models.cells.CellStats`).

    Offers what the ``sufficient`` forms, ML/REML, leave-one-cluster-out and the report read from
    a :class:`~models.data.ClusteredData` with a design; asking for the rows (``y``) is an error.
    """

    cells: object
    design: object
    responses: tuple[str, ...]
    source: str
    dropped_rows: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def y(self) -> np.ndarray:
        """Not available: the rows were reduced to statistics while reading."""
        raise DataError("these data hold only per-cell statistics (read in chunks or on Dask); "
                        "this step needs the rows: fit the 'sufficient' form, or load the rows")

    @property
    def groups(self) -> np.ndarray:
        """Levels of the top-level factor."""
        return self.design.factors[0].levels

    @property
    def group_name(self) -> str:
        """The top-level factor's name."""
        return self.design.factors[0].name

    @property
    def n_obs(self) -> int:
        """Number of rows kept."""
        return self.cells.n_obs

    @property
    def n_groups(self) -> int:
        """Number of top-level clusters."""
        return int(self.groups.size)

    @property
    def p(self) -> int:
        """One response."""
        return 1

    @property
    def name(self) -> str:
        """The file stem (or pattern's), for reports."""
        return Path(self.source.replace("*", "_")).stem

    @property
    def sizes(self) -> np.ndarray:
        """Rows per top-level cluster."""
        from varcomp.models.cells import unit_moments

        return unit_moments(self)[0].astype(np.int64)

    @property
    def stats(self):
        """The top-level clusters' (n, mean, S) of y (:class:`models.groupstats.GroupStats`)."""
        from varcomp.models.cells import unit_moments
        from varcomp.models.groupstats import GroupStats

        n, mean, m2 = unit_moments(self)
        return GroupStats(n=n.astype(np.int64)[:, None], mean=mean[:, :1], ss=m2[:, 0, :1],
                          scatter=np.array([[m2[:, 0, 0].sum()]]))

    def moments(self, k: int = 0) -> tuple[float, float]:
        """Mean and sd of the response over the rows."""
        mean, m2 = self.cells.pooled
        return float(mean[0]), float(np.sqrt(m2[0, 0] / max(self.n_obs - 1, 1)))

    def _range(self, k: int = 0) -> float:
        """A lower bound of the response's span (the rows are gone)."""
        return max(float(np.ptp(self.cells.mean[:, 0])),
                   float(np.sqrt(np.max(self.cells.m2[:, 0, 0] / self.cells.n))))

    def require_identifiable(self) -> None:
        """The checks of :meth:`models.data.ClusteredData.require_identifiable` on statistics."""
        from varcomp.models.data import ClusteredData

        ClusteredData.require_identifiable(self)


def cell_data(gm, spec: DesignSpec, *, source: str, dropped: int = 0) -> CellData:
    """:class:`CellData` from merged per-cell moments.

    Factors, nesting and the design's checks (as :func:`models.design.from_formula` does on
    rows).
    """
    from varcomp.models.cells import from_moments
    from varcomp.models.design import (
        Design,
        Factor,
        Term,
        check_factors,
        nested_in,
        offset_notes,
        order_factors,
    )

    if gm.n_groups == 0:
        raise DataError(f"no row has every value of {spec.formula!r} observed")
    cells = from_moments(gm.sorted(), spec.variables)
    n_rows = cells.n_obs

    def factor(names: tuple[str, ...], cell_level: bool = True) -> Factor:
        cols = [spec.variables.index(v) for v in names]
        text = cells.labels[:, cols[0]].astype(str)
        for c in cols[1:]:
            text = np.char.add(np.char.add(text, ":"), cells.labels[:, c].astype(str))
        codes, levels = pd.factorize(pd.Series(text, dtype=object), sort=False)
        return Factor(":".join(names), codes.astype(np.int64), np.asarray(levels, dtype=object))

    # factors on the cells (codes per cell) decide nesting and duplicates; rows are the cells'
    per_cell = [factor(g) for g in spec.groups]
    ordered, nested = order_factors(per_cell)
    check_factors(ordered, n_rows)
    mean, m2 = cells.pooled
    gram = m2[1:, 1:]
    _rank_check_gram(gram, spec.terms, n_rows)
    factors = tuple(Factor(f.name, None, f.levels) for f in ordered)
    variables = tuple(Factor(v, None, np.unique(cells.labels[:, i].astype(str)).astype(object))
                      for i, v in enumerate(spec.variables))
    by_name = {f.name: f for f in factors}  # the terms carry no values: statistics only
    design = Design(spec.formula, None, spec.terms, factors, nested, variables,
                    tuple(o for o, _ in spec.parsed.offsets),
                    tuple(Term(by_name[":".join(g)], cols) for g, cols in spec.parsed.random))
    warnings = [f"{dropped} row(s) with a missing or non-finite response or covariate were "
                f"dropped"] if dropped else []
    warnings += offset_notes(spec.parsed)
    for g in spec.groups:
        if len(g) > 1 and not nested_in(factor(g[-1:]), factor(g[:-1])):
            warnings.append(f"labels of '{g[-1]}' recur under several levels of "
                            f"'{':'.join(g[:-1])}': treated as different cells, as written")
    return CellData(cells, design, (spec.response,), source, dropped, tuple(warnings))


def _rank_check_gram(gram: np.ndarray, terms, n_rows: int) -> None:
    """Collinear or constant fixed-effects columns, from their centred Gram matrix."""
    intercept = "Intercept" in terms
    cols = [j for j, t in enumerate(terms) if not (intercept and t == "Intercept")]
    for i, j in enumerate(cols):
        sub = gram[np.ix_(cols[:i + 1], cols[:i + 1])]
        d = np.sqrt(np.clip(np.diag(sub), 1e-300, None))
        s = np.linalg.eigvalsh(sub / np.outer(d, d))
        if gram[j, j] <= 0 or s[0] <= 1e-9 * s[-1]:
            raise DataError(f"the fixed-effects column '{terms[j]}' is a linear combination of "
                            f"the columns before it (collinear or constant): drop it or recode")


def read_formula_stats(path, formula: str, *, chunk_rows: int = CHUNK_ROWS) -> CellData:
    """Reduce a CSV or Parquet file to :class:`CellData` chunk by chunk (O(chunk + cells) memory).

    A first pass collects the levels of the categorical columns (``C(x)`` and text columns),
    another (only for ``center``/``scale``/``standardize``) the whole file's means and sds of
    their arguments, the last evaluates the fixed effects and summarises each chunk
    (:func:`partition_moments`).
    """
    from varcomp.models.design import group_variables, parse
    from varcomp.models.moments import GroupedMoments

    parsed = parse(formula)
    gvars = group_variables(formula)
    columns = list(parsed.variables)
    first = next(_chunks(path, columns, gvars, chunk_rows))
    cats = categorical_columns(parsed.fixed, first, gvars)
    levels: dict[str, set] = {c: set() for c in cats}
    if cats:
        for chunk in _chunks(path, columns, gvars, chunk_rows):
            for c in cats:
                levels[c].update(chunk[c].dropna().unique().tolist())
    spec = design_spec(formula, first, {c: sorted(v, key=str) for c, v in levels.items()})
    if stateful_calls(spec):  # one more pass: center/scale use the whole file's mean and sd
        set_stateful(spec, pd.concat([stateful_partials(chunk, spec) for chunk in
                                      _chunks(path, columns, gvars, chunk_rows)]))
    total, dropped = None, 0
    for chunk in _chunks(path, columns, gvars, chunk_rows):
        gm, d = partition_moments(chunk, spec)
        dropped += d
        total = gm if total is None else GroupedMoments.merge(total, gm)
    return cell_data(total, spec, source=str(path), dropped=dropped)


def categorical_columns(fixed: str, sample: pd.DataFrame, gvars) -> list[str]:
    """Columns the fixed part treats as categorical (inside C(), or text), grouping ones aside."""
    from varcomp.models.design import categorical_columns as categorical

    return sorted(set(categorical(fixed, sample)) - set(gvars))


def _chunks(path, columns, text_columns, chunk_rows: int):
    """The file's rows, ``columns`` only, as pandas frames of about ``chunk_rows`` rows.

    In the dialect :func:`models.io.sniff` reads (grouping columns as text).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from varcomp.models.io import EXTRA, open_text, sniff

    p = Path(path)
    d = sniff(p)
    missing = [c for c in columns if c not in d.columns]
    if missing:
        raise DataError(f"column(s) {missing} of the formula not found; columns present: "
                        f"{', '.join(d.columns)} (read as {d.describe()})")
    if d.kind == "parquet":
        for batch in pq.ParquetFile(p).iter_batches(batch_size=chunk_rows, columns=columns):
            yield batch.to_pandas()
        return
    names = list(d.raw_columns) + ([EXTRA] if d.extra_field else [])
    reader = pcsv.open_csv(
        open_text(p, d),
        read_options=pcsv.ReadOptions(block_size=32 << 20, column_names=names, skip_rows=1),
        parse_options=pcsv.ParseOptions(delimiter=d.delimiter),
        convert_options=pcsv.ConvertOptions(include_columns=columns, strings_can_be_null=True,
                                            column_types={c: pa.string() for c in text_columns}))
    try:
        for batch in reader:
            yield batch.to_pandas()
    except pa.ArrowInvalid as exc:
        raise DataError(f"cannot read {p}: {str(exc).splitlines()[0]} ({d.describe()})") from None
