"""The data layer: clustered responses, validated once, with their sufficient statistics."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from varcomp.models import shares
from varcomp.models.errors import DataError
from varcomp.models.groupstats import GroupStats, group_stats

__all__ = [
    "DATASETS",
    "TABLE_SUFFIXES",
    "ClusteredData",
    "DataError",
    "GroupStats",
    "data_dir",
    "load",
    "memory_budget",
    "write_table",
]


@dataclass(frozen=True)
class ShippedDataset:
    """A dataset shipped in ``data/`` with its natural clustering and response(s)."""

    name: str
    file: str
    group: str
    response: tuple[str, ...]
    description: str


DATASETS: dict[str, ShippedDataset] = {
    d.name: d
    for d in [
        ShippedDataset("dyestuff", "dyestuff.csv", "Batch", ("Yield",),
                       "lme4 Dyestuff: dyestuff yield, 6 batches x 5 preparations (Davies 1947)"),
        ShippedDataset("dyestuff2", "dyestuff2.csv", "Batch", ("Yield",),
                       "lme4 Dyestuff2: Box & Tiao's simulated yields; between-batch estimate 0"),
        ShippedDataset("rail", "rail.csv", "Rail", ("travel",),
                       "nlme Rail: ultrasonic travel time, 6 rails x 3 measurements"),
        ShippedDataset("radon", "radon.csv", "county", ("log.radon",),
                       "HLMdiag radon: log radon in 919 Minnesota houses, 85 counties"),
        ShippedDataset("gcsemv", "gcsemv.csv", "school", ("written", "course"),
                       "mlmRev Gcsemv: GCSE written and coursework scores, 1,905 students, "
                       "73 schools"),
        ShippedDataset("pastes", "pastes.csv", "batch", ("strength",),
                       "lme4 Pastes: paste strength, 10 batches x 3 casks x 2 assays"),
        ShippedDataset("penicillin", "penicillin.csv", "plate", ("diameter",),
                       "lme4 Penicillin: inhibition diameters, 24 plates x 6 samples (crossed)"),
        ShippedDataset("scotssec", "scotssec.csv", "primary", ("attain",),
                       "mlmRev ScotsSec: attainment of 3,435 Scottish pupils, 148 primary x 19 "
                       "secondary schools (crossed, unbalanced)"),
        ShippedDataset("sleepstudy", "sleepstudy.csv", "Subject", ("Reaction",),
                       "lme4 sleepstudy: reaction times of 18 subjects over 10 days of sleep "
                       "deprivation (random slopes: Reaction ~ Days + (Days|Subject))"),
        ShippedDataset("orthodont", "orthodont.csv", "Subject", ("distance",),
                       "nlme Orthodont: pituitary-fissure distance of 27 children at ages 8-14 "
                       "(distance ~ age + (age|Subject))"),
        ShippedDataset("slopes_boundary", "slopes_boundary.csv", "g", ("y",),
                       "simulated: 15 groups x 6 rows whose slope sd is estimated at 0 "
                       "(y ~ x + (x|g): a boundary fit)"),
    ]
}


def data_dir() -> Path:
    """The folder of shipped datasets.

    ``$VARCOMP_DATA_DIR`` overrides the repository's ``data/``.
    """
    env = os.environ.get("VARCOMP_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
"""The file types varcomp writes (``varcomp simulate --out``): the suffix picks the format."""


def write_table(frame: pd.DataFrame, path: str | os.PathLike, *, like: str | None = None) -> None:
    """Write ``frame`` as CSV, gzipped CSV or Parquet, by the suffix of ``like`` (or ``path``).

    Text columns stay text in every format (Parquet: strings, so labels such as ``07`` keep
    their zero). Written through pyarrow: a 10^7-row CSV in seconds, not minutes.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name = str(like if like is not None else path).lower()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    elif name.endswith(".csv.gz"):
        with pa.CompressedOutputStream(str(path), "gzip") as sink:
            pacsv.write_csv(table, sink)
    elif name.endswith(".csv"):
        pacsv.write_csv(table, str(path))
    else:
        raise DataError(f"{name}: unknown file type; name it {', '.join(TABLE_SUFFIXES)}")


def memory_budget() -> int:
    """Bytes a single run may plan to hold: half of this machine's physical memory."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


MAX_ABS = 1e300
"""Largest magnitude of a response value the statistics accept (sums stay below 1.8e308)."""
MIN_SPREAD, MAX_SPREAD = 1e-150, 1e150
"""Allowed span (max - min) of a response: its squares (variances) stay normal float64 numbers."""


@dataclass(frozen=True)
class ClusteredData:
    """Clustered responses: an (N, p) matrix, integer group codes, group labels, response names.

    Build it with :meth:`from_frame` or :func:`load`; both validate the input and raise
    :class:`DataError` with a one-line message on anything a model cannot use.

    Attributes
    ----------
    y : (N, p) float64
        Responses; NaN marks a missing outcome (kept only when p > 1).
    codes : (N,) int64
        Group index 0..L-1 of each row.
    groups : (L,) str
        Group labels, in order of first appearance.
    responses : tuple of str
        Response column names.
    group_name : str
        The grouping column's name.
    source : str
        Where the data came from (a shipped name or a path).
    dropped_rows : int
        Rows dropped because their (univariate) response was missing or not finite.
    design : Design or None
        For a formula with covariates or several grouping factors (:mod:`models.design`): the
        fixed-effects matrix X, its term names and every random-intercept factor; ``codes`` and
        ``groups`` are then the first (top-level) factor's. None for the one-way model.
    likelihood : str
        The response distribution's name (``gaussian``, ``binomial``, ``poisson``:
        :data:`models.likelihoods.LIKELIHOODS`; :mod:`models.responses` decides it).
    link : str or None
        The link of a non-Gaussian response (``logit``, ``probit``, ``log``).
    trials : (N,) float64 or None
        A binomial response's trials per row (1 for Bernoulli rows); ``y`` holds successes.
    offset : (N,) float64 or None
        A non-Gaussian model's summed offsets per row (in its linear predictor).
    """

    y: np.ndarray
    codes: np.ndarray
    groups: np.ndarray
    responses: tuple[str, ...]
    group_name: str
    source: str = "<frame>"
    dropped_rows: int = 0
    warnings: tuple[str, ...] = field(default=())
    design: object | None = None
    rows: np.ndarray | None = None
    likelihood: str = "gaussian"
    link: str | None = None
    trials: np.ndarray | None = None
    offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Freeze the arrays: validated data cannot change under their cached statistics.

        ``stats`` and ``cells`` are computed once; a write into ``y`` (or the codes, labels, X)
        after that would leave them stale, so every array is read-only (an array this object
        does not own is copied first, so the caller's array stays writable).
        """
        for name in ("y", "codes", "groups", "rows", "trials", "offset"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _read_only(value))
        d = self.design
        if d is not None and hasattr(d, "X"):
            from dataclasses import replace as _replace

            def frozen(f):
                return _replace(f, codes=_read_only(f.codes), levels=_read_only(f.levels))

            object.__setattr__(self, "design", _replace(
                d, X=_read_only(d.X), factors=tuple(map(frozen, d.factors)),
                variables=tuple(map(frozen, d.variables))))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        group: str,
        response: str | Sequence[str],
        source: str = "<frame>",
    ) -> ClusteredData:
        """Validate a data frame and hold its responses by group.

        A row without a group label is an error. Univariate rows with a missing or infinite
        response are dropped and counted in ``dropped_rows``; multivariate rows keep their
        observed outcomes (NaN marks the missing ones) and only rows with no outcome at all are
        dropped and counted.
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"ClusteredData.from_frame takes a pandas DataFrame, not "
                            f"{type(df).__name__}")
        one = isinstance(response, (str, bytes)) or not isinstance(response, Sequence)
        responses = (response,) if one else tuple(response)
        if not responses:
            raise DataError("no response column given: pass --response COLUMN")
        cols = [str(c) for c in df.columns]
        if len(set(cols)) != len(cols):
            dup = sorted({c for c in cols if cols.count(c) > 1})
            raise DataError(f"duplicate column names {dup}: rename them so each column is unique")
        present = ", ".join(cols)
        keys = {}  # a column by its key, or by its name as text (pandas' default names are ints)
        for name, role in [(group, "group"), *[(r, "response") for r in responses]]:
            found = [c for c in df.columns if c == name or str(c) == str(name)]
            if not found:
                raise DataError(f"{role} column '{name}' not found; columns present: {present}")
            keys[str(name)] = found[0]
        df = df.rename(columns={keys[str(n)]: str(n) for n in (group, *responses)})[
            [str(group), *map(str, responses)]]
        group, responses = str(group), tuple(map(str, responses))
        if group in responses:
            raise DataError(f"column '{group}' cannot be both the group and a response")
        if len(set(responses)) != len(responses):
            raise DataError(f"response columns repeated: {list(responses)}")
        if len(df) == 0:
            raise DataError("the data have no rows")

        g = df[group]
        if g.isna().any():
            rows = np.flatnonzero(g.isna().to_numpy())[:5] + 1
            raise DataError(f"{int(g.isna().sum())} row(s) have no '{group}' label (first data "
                            f"rows {rows.tolist()}): fill them in or remove those rows")

        y = np.empty((len(df), len(responses)))
        for k, r in enumerate(responses):
            y[:, k] = numeric_response(df[r], r)
        y[~np.isfinite(y)] = np.nan

        observed = np.isfinite(y)
        keep = observed.all(axis=1) if len(responses) == 1 else observed.any(axis=1)
        dropped = int((~keep).sum())
        if not keep.any():
            raise DataError(f"every value of {list(responses)} is missing or not finite")
        y = y[keep]
        labels = _labels_text(_label_values(g)[keep], str(group))
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object), sort=False)
        groups = np.asarray(uniques, dtype=object)
        warnings: list[str] = []
        if dropped:
            warnings.append(f"{dropped} row(s) with a missing or non-finite response were dropped")
        if 1 < len(groups) < 3:
            warnings.append(f"only {len(groups)} clusters: tau is weakly identified and leans on "
                            f"its prior")
        return cls(y=y, codes=codes.astype(np.int64), groups=groups, responses=responses,
                   group_name=str(group), source=source, dropped_rows=dropped,
                   warnings=tuple(warnings), rows=np.flatnonzero(keep))

    # ------------------------------------------------------------------ views
    @property
    def n_obs(self) -> int:
        """Number of rows N kept."""
        return int(self.y.shape[0])

    @property
    def n_groups(self) -> int:
        """Number of groups L."""
        return int(self.groups.shape[0])

    @property
    def p(self) -> int:
        """Number of response columns."""
        return int(self.y.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """(N, p) boolean: True where an outcome is observed."""
        return np.isfinite(self.y)

    @property
    def name(self) -> str:
        """A short name for reports: the shipped name or the file stem."""
        return Path(self.source).stem if self.source not in DATASETS else self.source

    @cached_property
    def stats(self) -> GroupStats:
        """Sufficient statistics per group (one vectorised pass)."""
        return group_stats(self.y, self.codes, self.n_groups)

    @property
    def sizes(self) -> np.ndarray:
        """Cluster sizes n_l (rows per group)."""
        return np.bincount(self.codes, minlength=self.n_groups)

    @cached_property
    def cells(self):
        """Per-cell moments of [y, X] (:mod:`models.cells`), for data with a design."""
        from varcomp.models.cells import cells_of_rows

        d = self.design
        return cells_of_rows(self.y[:, 0], d.X, {v.name: v.levels[v.codes] for v in d.variables},
                             d.terms)

    def response_column(self, k: int = 0) -> np.ndarray:
        """Response ``k`` as a 1-D array."""
        return self.y[:, k]

    def to_frame(self) -> pd.DataFrame:
        """The kept rows as a data frame (group label and responses)."""
        out = pd.DataFrame(self.y, columns=list(self.responses))
        out.insert(0, self.group_name, self.groups[self.codes])
        return out

    def require_identifiable(self) -> None:
        """Raise :class:`DataError` unless tau and sigma can both be learned from these data.

        Also refuses values float64 cannot carry through the model: magnitudes above
        :data:`MAX_ABS` (sums of them would overflow) and spreads (sd) outside
        [:data:`MIN_SPREAD`, :data:`MAX_SPREAD`] (variances would underflow to 0 or overflow);
        the message says how to rescale.
        """
        if self.n_groups < 2:
            raise DataError("only one cluster: the between-cluster sd tau is not identifiable; "
                            "a variance-components model needs at least 2 (better 3+) clusters")
        st = self.stats
        for k, r in enumerate(self.responses):
            n = st.n[:, k]
            if n.sum() == 0:
                raise DataError(f"response '{r}' has no observed value: drop it from --response")
            biggest = float(np.nanmax(np.abs(st.mean[n > 0, k])))
            if not biggest <= MAX_ABS:  # (the chunked and cell data borrow this method)
                raise DataError(ClusteredData.scale_problem(self, k))
            if (n[n > 0] == 1).all():
                raise DataError(f"every cluster has a single '{r}' observation: tau and sigma are "
                                f"not separately identifiable; clusters need repeated measurements")
            spread = self._range(k)
            if spread == 0.0:
                raise DataError(f"response '{r}' is constant: there is no variance to decompose")
            problem = ClusteredData.scale_problem(self, k)
            if problem:
                raise DataError(problem)
            if np.nansum(st.ss[:, k]) == 0.0:
                raise DataError(f"'{r}' is constant within every cluster: the within-cluster sd "
                                f"sigma is 0 and the model needs within-cluster variation")
        W = np.asarray(st.scatter, dtype=np.float64)
        if W.shape[0] > 1:
            scale = np.sqrt(np.diag(W))
            if (scale > 0).all():
                R = W / np.outer(scale, scale)
                if np.linalg.eigvalsh(R)[0] < 1e-10:
                    i, j = np.unravel_index(np.argmax(np.abs(np.triu(R, 1))), R.shape)
                    a, b = self.responses[i], self.responses[j]
                    raise DataError(f"responses {a!r} and {b!r} are collinear within clusters "
                                    f"(within-cluster correlation {R[i, j]:+.6f}): the "
                                    f"within-cluster covariance Sigma would be singular; drop "
                                    f"one of them")

    def scale_problem(self, k: int = 0) -> str | None:
        """Why float64 cannot carry response ``k`` through the model, or None.

        Magnitudes above :data:`MAX_ABS`, or a spread outside [:data:`MIN_SPREAD`,
        :data:`MAX_SPREAD`].
        """
        r = self.responses[k]
        n = self.stats.n[:, k]
        if n.sum() == 0:
            return None
        biggest = float(np.nanmax(np.abs(self.stats.mean[n > 0, k])))
        if not biggest <= MAX_ABS:
            return (f"values of '{r}' reach {biggest:.3g}: beyond {MAX_ABS:.0e} their sums "
                    f"overflow float64; rescale the column (e.g. divide by 1e100) and fit again")
        spread = self._range(k)
        if not spread <= MAX_SPREAD:
            return (f"the values of '{r}' span {spread:.3g}, more than {MAX_SPREAD:.0e}: their "
                    f"variances overflow float64; divide the column by a power of ten (e.g. "
                    f"1e{int(math.log10(spread))}) and fit again")
        if 0.0 < spread < MIN_SPREAD:
            return (f"the values of '{r}' span only {spread:.3g}, less than {MIN_SPREAD:.0e}: "
                    f"their variances underflow float64; multiply the column by a power of ten "
                    f"(e.g. 1e{-int(math.log10(spread))}) and fit again")
        return None

    def _range(self, k: int) -> float:
        """Max - min of response ``k`` (no squares: meaningful at any magnitude)."""
        y = self.y[:, k]
        return float(np.nanmax(y) - np.nanmin(y))

    def moments(self, k: int = 0) -> tuple[float, float]:
        """Mean and sd (ddof 1) of all rows of response ``k``, from the statistics.

        Total sum of squares = sum_l S_l + sum_l n_l (xbar_l - xbar)^2 (the one-way ANOVA
        identity), so these equal ``np.mean(y)`` and ``np.std(y, ddof=1)`` to rounding.
        """
        n, m, ss = self.stats.column(k)
        N = float(n.sum())
        grand = float(((n / N) * m).sum())  # weights first: no overflow for values up to 1e300
        grand += float(((n / N) * (m - grand)).sum())  # corrected two-pass, as in group_stats
        with np.errstate(over="ignore"):
            total = float(ss.sum() + (n * (m - grand) ** 2).sum())
        return grand, math.sqrt(total / (N - 1.0)) if N > 1 else 0.0

    def anova(self, k: int = 0) -> dict[str, float]:
        """One-way ANOVA and method-of-moments estimates for response ``k``.

        tau^2 = (MSB - MSW) / n0, with n0 = (N - sum n_l^2 / N) / (L - 1) for unbalanced data,
        truncated at zero (``truncated`` is then True).
        """
        n, m, ss = self.stats.column(k)
        seen = n > 0  # clusters where response k is observed (all of them when p = 1)
        n, m, ss = n[seen], m[seen], ss[seen]
        N, L = float(n.sum()), int(n.size)
        if N == 0:
            raise DataError(f"response '{self.responses[k]}' has no observed value: drop it "
                            f"from --response")
        grand = float(((n / N) * m).sum())
        grand += float(((n / N) * (m - grand)).sum())
        ssb = float((n * (m - grand) ** 2).sum())
        ssw = float(ss.sum())
        dfb, dfw = L - 1, N - L
        msb = ssb / dfb if dfb > 0 else math.nan
        msw = ssw / dfw if dfw > 0 else math.nan
        n0 = (N - float((n**2).sum()) / N) / dfb if dfb > 0 else math.nan
        tau2_raw = (msb - msw) / n0
        tau2 = max(tau2_raw, 0.0)
        return {
            "n_obs": int(N), "n_groups": L, "grand_mean": grand,
            "ss_between": ssb, "ss_within": ssw, "df_between": dfb, "df_within": dfw,
            "ms_between": msb, "ms_within": msw, "F": msb / msw if msw > 0 else math.inf,
            "n0": n0, "tau2": tau2, "sigma2": msw,
            "icc": shares.icc(tau2, msw) if (tau2 + msw) > 0 else math.nan,
            "truncated": bool(tau2_raw < 0),
        }


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only array: frozen in place when it owns its memory, else a frozen copy."""
    a = np.asarray(a)
    if a.flags.writeable:
        if a.base is not None:
            a = a.copy()
        a.setflags(write=False)
    return a


def _label_values(col: pd.Series) -> np.ndarray:
    """A label column's values (a categorical column: its categories' values, not codes)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return np.asarray(col.astype(object).to_numpy(), dtype=object)
    return col.to_numpy()


def numeric_response(col: pd.Series, name: str) -> np.ndarray:
    """A response column as float64 (NaN for missing), refusing anything not a real number.

    Integers, floats and text that parses as numbers (CSV) are accepted; booleans, dates,
    durations, complex numbers and text that is not a number are refused, naming an example.
    """
    kind = getattr(col.dtype, "kind", "O")
    if pd.api.types.is_bool_dtype(col) or kind in "bcmM":
        what = {"b": "true/false", "c": "complex", "m": "a duration", "M": "a date/time"}
        raise DataError(f"response '{name}' is {what.get(kind, 'true/false')} "
                        f"(e.g. value {col.iloc[0]!r}), not a real number: choose a numeric "
                        f"column or convert it")
    if kind in "iuf":
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(col, errors="coerce")
    bad = converted.isna() & col.notna()
    if bad.any():
        raise DataError(f"response '{name}' is not numeric (e.g. value {col[bad].iloc[0]!r}): "
                        f"choose a numeric column or clean it")
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _labels_text(values: np.ndarray, group: str) -> np.ndarray:
    """Group labels as text (:func:`models.io.labels_as_text`).

    Refuses labels of different types that read the same (the number 1 and the text "1"): they
    would merge two clusters.
    """
    from varcomp.models.io import labels_as_text

    text = labels_as_text(values)
    if values.dtype == object and len(values):
        kinds = pd.Series([type(v).__name__ for v in values], dtype=object)
        if kinds.nunique() > 1:
            per_text = pd.DataFrame({"t": text, "k": kinds}).groupby("t")["k"].nunique()
            clash = per_text[per_text > 1]
            if len(clash):
                label = clash.index[0]
                raise DataError(f"'{group}' holds labels of different types that read the same "
                                f"({label!r} as text and as a number): make the column all "
                                f"text (or all numbers) so clusters are not merged silently")
    return text


def load(
    spec: str | os.PathLike | pd.DataFrame,
    *,
    group: str | None = None,
    response: str | Sequence[str] | None = None,
) -> ClusteredData:
    """Load a shipped dataset by name, or a CSV/Parquet file by path.

    For a shipped dataset ``group`` and ``response`` default to its natural columns; for a file
    both are required. The group column is read as text exactly as written. A column that is
    not found is named with the columns present and the dialect that was read. (A formula:
    :func:`models.load`, or :func:`models.design.load_formula`.)
    """
    from varcomp.models.io import read_frame, sniff

    if isinstance(spec, pd.DataFrame):
        return ClusteredData.from_frame(spec, group=group, response=response)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"load takes a file path, a shipped dataset name or a pandas DataFrame, "
                        f"not {type(spec).__name__}")
    key = str(spec)
    if key.lower() in DATASETS and not Path(key).exists():
        ds = DATASETS[key.lower()]
        resp: str | Sequence[str] = response if response else list(ds.response)
        if not response and len(ds.response) == 1:
            resp = ds.response[0]
        path, source = data_dir() / ds.file, ds.name
        group = group or ds.group
    else:
        path, source, resp = Path(key), str(key), response
        if not path.exists() and not path.suffix:
            raise DataError(f"'{key}' is neither a file nor a shipped dataset "
                            f"({', '.join(DATASETS)})")
    dialect = sniff(path)
    if group is None or not resp:
        missing = "--group" if group is None else "--response"
        raise DataError(f"{missing} is required for a data file; columns present: "
                        f"{', '.join(dialect.columns)}")
    wanted = [(group, "group")] + [(r, "response") for r in
                                   ([resp] if isinstance(resp, str) else list(resp))]
    for name, role in wanted:
        if name not in dialect.columns:
            raise DataError(f"{role} column '{name}' not found; columns present: "
                            f"{', '.join(dialect.columns)} (read as {dialect.describe()})")
    df = read_frame(path, text_columns=[group], dialect=dialect)
    return ClusteredData.from_frame(df, group=group, response=resp, source=source)
