"""Formulas: ``y ~ x1 + C(x2) + (1|a/b) + (1|c)`` parsed with ``formulae`` into a validated design.

The fixed effects are ``formulae``'s common design matrix (its categorical coding, interactions
and transforms; its column names, e.g. ``Intercept``, ``basement``, ``C(x)[b]``). The group terms
must be random intercepts (``(1|g)``; ``(1|a/b)`` is ``(1|a) + (1|a:b)``, ``(1|a:b)`` the cells of
a and b): each becomes a :class:`Factor` whose levels are the text of its variables joined by
``:``. ``formulae``'s group design matrices (dense, rows x levels) are never built.

A formula with an intercept only and one group term is the one-way model (``design`` None, today's
names); anything else carries a :class:`Design`. Rows with a missing or non-finite response or
covariate are dropped and counted; a missing group label is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError

__all__ = ["Design", "Factor", "from_formula", "group_variables", "load_formula", "parse"]

SUPPORTED = ("supported: random intercepts (1|g), nested (1|a/b), cells (1|a:b) and crossed "
             "(1|a) + (1|b)")


@dataclass(frozen=True)
class Factor:
    """A random-intercept grouping: its name as in the formula, row codes 0..m-1, level labels."""

    name: str
    codes: np.ndarray
    levels: np.ndarray

    @property
    def m(self) -> int:
        """Number of levels."""
        return int(self.levels.size)


@dataclass(frozen=True)
class Design:
    """Fixed effects and grouping factors of a mixed model with random intercepts.

    Attributes
    ----------
    formula : str
        The formula as given.
    X : (N, k) float64
        Fixed-effects design matrix.
    terms : tuple of str
        Its column names (``formulae``'s labels).
    factors : tuple of Factor
        Every random-intercept factor; top-level first. For a nested design they are ordered
        from the coarsest to the finest (each level of one lies in one level of the previous).
    nested : bool
        Whether the factors are nested (one factor counts as nested).
    variables : tuple of Factor
        Each grouping column on its own (``a`` and ``b`` of ``(1|a:b)``), for crossed designs'
        strata.
    """

    formula: str
    X: np.ndarray
    terms: tuple[str, ...]
    factors: tuple[Factor, ...]
    nested: bool
    variables: tuple[Factor, ...] = ()

    @property
    def k(self) -> int:
        """Number of fixed-effect columns."""
        return len(self.terms)

    @property
    def intercept(self) -> bool:
        """Whether the design has an intercept column."""
        return "Intercept" in self.terms


@dataclass(frozen=True)
class Parsed:
    """A formula's parts: response, fixed-effects formula, and each group term's variables."""

    response: str
    fixed: str
    groups: tuple[tuple[str, ...], ...]
    variables: tuple[str, ...]


def parse(formula: str) -> Parsed:
    """Split ``formula`` into response, fixed part and random-intercept terms (one-line errors)."""
    import formulae

    try:
        md = formulae.model_description(formula)
    except Exception as exc:  # formulae's ParseError / ScanError
        raise DataError(f"cannot parse the formula {formula!r}: {exc} (e.g. "
                        f"'y ~ x + C(group2) + (1|g)')") from None
    if md.response is None:
        raise DataError(f"the formula {formula!r} has no response: write 'y ~ ...'")
    resp_vars = sorted(md.response.term.var_names)
    if len(resp_vars) != 1:
        raise DataError(f"the formula {formula!r} needs one response column on the left of ~")
    groups = []
    for t in md.group_terms:
        if type(t.expr).__name__ != "Intercept":
            raise DataError(f"random slopes ({t.expr} | ...) are not supported; {SUPPORTED}")
        groups.append(tuple(c.name for c in t.factor.components))
    if not groups:
        raise DataError(f"the formula {formula!r} has no group term such as (1|g): a "
                        f"variance-components model needs at least one")
    return Parsed(resp_vars[0], _fixed_formula(formula), tuple(groups),
                  tuple(sorted(v for v in md.var_names if v)))


def _fixed_formula(formula: str) -> str:
    """The formula without its group terms (what ``formulae`` builds X from)."""
    out, i, rhs = [], 0, formula.split("~", 1)[1]
    while i < len(rhs):
        if rhs[i] == "(" and "|" in rhs[i:_close(rhs, i)]:
            i = _close(rhs, i) + 1  # a group term: left out
            continue
        out.append(rhs[i])
        i += 1
    parts = [p.strip() for p in "".join(out).split("+")]
    return " + ".join(p for p in parts if p) or "1"


def _close(text: str, start: int) -> int:
    depth = 0
    for j in range(start, len(text)):
        depth += text[j] == "("
        depth -= text[j] == ")"
        if depth == 0:
            return j
    raise DataError(f"unbalanced parentheses in the formula near {text[start:]!r}")


def group_variables(formula: str) -> list[str]:
    """The columns that group terms use (read as text)."""
    return sorted({v for g in parse(formula).groups for v in g})


def _factor(df: pd.DataFrame, names: tuple[str, ...]) -> Factor:
    from varcomp.models.io import labels_as_text

    text = labels_as_text(df[names[0]].to_numpy())
    for n in names[1:]:
        text = np.char.add(np.char.add(text.astype(str), ":"),
                           labels_as_text(df[n].to_numpy()).astype(str)).astype(object)
    codes, levels = pd.factorize(pd.Series(text, dtype=object), sort=False)
    return Factor(":".join(names), codes.astype(np.int64), np.asarray(levels, dtype=object))


def nested_in(fine: Factor, coarse: Factor) -> bool:
    """Whether every level of ``fine`` lies in one level of ``coarse``."""
    pairs = np.unique(np.stack([fine.codes, coarse.codes]), axis=1)
    return pairs.shape[1] == fine.m


def _same_partition(a: Factor, b: Factor) -> bool:
    return a.m == b.m and nested_in(a, b)


def check_factors(factors: list[Factor], n_rows: int) -> None:
    for f in factors:
        if f.m < 2:
            raise DataError(f"(1|{f.name}) has one level: its variance is not identifiable; drop "
                            f"the term")
        if f.m == n_rows:
            raise DataError(f"(1|{f.name}) has a level for every row: its variance is not "
                            f"identifiable beside the residual sigma; drop the term")
    for i, a in enumerate(factors):
        for b in factors[i + 1:]:
            if _same_partition(a, b):
                raise DataError(f"(1|{a.name}) and (1|{b.name}) group the rows identically: their "
                                f"variances are not separately identifiable; drop one")


def order_factors(factors: list[Factor]) -> tuple[list[Factor], bool]:
    """Coarsest first when the factors nest; formula order (crossed) otherwise."""
    by_size = sorted(factors, key=lambda f: f.m)
    nested = all(nested_in(by_size[i + 1], by_size[i]) for i in range(len(by_size) - 1))
    return (by_size, True) if nested else (factors, False)


def numeric_covariates(df: pd.DataFrame, formula: str) -> None:
    """A covariate outside C() must be numeric (text columns are categorical only in C())."""
    import formulae

    md = formulae.model_description(formula)
    for t in md.common_terms:
        for c in getattr(t, "components", []):
            if type(c).__name__ != "Variable":
                continue
            col = df[c.name]
            if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                if col.dtype.kind in "cmM":
                    raise DataError(f"covariate '{c.name}' is {col.dtype}, not a real number")
                continue
            bad = pd.to_numeric(col, errors="coerce").isna() & col.notna()
            example = col[bad].iloc[0] if bad.any() else col.iloc[0]
            raise DataError(f"covariate '{c.name}' is not numeric (e.g. value {example!r}): wrap "
                            f"it in C({c.name}) to treat it as categorical, or clean it")


def _rank_check(X: np.ndarray, terms: list[str]) -> None:
    """Refuse collinear columns (incl. a covariate constant everywhere beside the intercept)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    kept: list[int] = []
    for j in range(Xs.shape[1]):
        trial = Xs[:, kept + [j]]
        if np.linalg.matrix_rank(trial, tol=1e-9 * max(1.0, np.sqrt(X.shape[0]))) <= len(kept):
            if not np.any(X[:, j]):
                raise DataError(f"the fixed-effects column '{terms[j]}' is all zero (a level "
                                f"absent from the data?): drop it")
            others = ", ".join(terms[i] for i in kept) or "nothing"
            raise DataError(f"the fixed-effects column '{terms[j]}' is a linear combination of "
                            f"{others} (collinear or constant): drop it or recode")
        kept.append(j)


def _between_rank_check(X: np.ndarray, top: Factor, terms: list[str]) -> None:
    """The fixed effects must leave between-cluster variation for the top-level variance.

    span([X, Z]) = span(Z) + span(X_w), X_w = X minus its cluster means, so X takes
    k - rank(X_w) of the L between-cluster directions; none may be left (e.g. C(g) beside (1|g)).
    """
    counts = np.bincount(top.codes, minlength=top.m).astype(np.float64)
    means = np.stack([np.bincount(top.codes, weights=X[:, j], minlength=top.m) / counts
                      for j in range(X.shape[1])], axis=1)
    within = X - means[top.codes]
    scale = max(float(np.abs(X).max()), 1.0)
    rank_w = np.linalg.matrix_rank(within, tol=1e-9 * scale * np.sqrt(X.shape[0])) \
        if X.size else 0
    taken = X.shape[1] - rank_w
    if taken >= top.m:
        shown = ", ".join(terms[:4]) + (", ..." if len(terms) > 4 else "")
        raise DataError(f"the fixed effects ({shown}) take all {top.m} between-cluster "
                        f"directions of '{top.name}': no between-cluster variation is left for "
                        f"(1|{top.name}); drop cluster-level covariates (e.g. C({top.name}))")


def from_formula(df: pd.DataFrame, formula: str, *, source: str = "<frame>"):
    """Validate ``df`` for ``formula``; a :class:`~models.data.ClusteredData`.

    Intercept-only with one group term: the one-way model (``design`` None). Otherwise the
    returned data carry a :class:`Design`; their ``codes``/``groups`` are the top-level
    factor's.
    """
    import formulae

    from varcomp.models.data import ClusteredData, numeric_response

    parsed = parse(formula)
    missing = [v for v in parsed.variables if v not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} of the formula not found; columns present: "
                        f"{', '.join(map(str, df.columns))}")
    gvars = sorted({v for g in parsed.groups for v in g})
    for v in gvars:
        if df[v].isna().any():
            rows = np.flatnonzero(df[v].isna().to_numpy())[:5] + 1
            raise DataError(f"{int(df[v].isna().sum())} row(s) have no '{v}' label (first data "
                            f"rows {rows.tolist()}): fill them in or remove those rows")
    y = numeric_response(df[parsed.response], parsed.response)
    numeric_covariates(df, f"{parsed.response} ~ {parsed.fixed}")
    used = [v for v in parsed.variables if v not in gvars and v != parsed.response]
    keep = np.isfinite(y)
    for v in used:
        col = df[v]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            keep &= np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            keep &= col.notna().to_numpy()
    frame = df.loc[keep].reset_index(drop=True)
    try:
        dm = formulae.design_matrices(f"{parsed.response} ~ {parsed.fixed}", frame,
                                      na_action="pass")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot build the fixed effects of {formula!r}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    X = np.asarray(dm.common.design_matrix, dtype=np.float64)
    terms = [str(c) for c in dm.common.as_dataframe().columns]
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():  # a transform (log of 0, ...) gave a non-finite value: drop the row
        frame, X = frame.loc[finite].reset_index(drop=True), X[finite]
        keep[np.flatnonzero(keep)[~finite]] = False
    dropped = int((~keep).sum())
    if len(frame) == 0:
        raise DataError(f"no row has every value of {formula!r} observed")
    yk = y[keep]
    factors, nested = order_factors([_factor(frame, g) for g in parsed.groups])
    check_factors(factors, len(frame))
    warnings = []
    if dropped:
        warnings.append(f"{dropped} row(s) with a missing or non-finite response or covariate "
                        f"were dropped")
    for g in parsed.groups:  # (1|a/b) with b's labels reused across a: fit as written, say so
        if len(g) > 1:
            own = _factor(frame, g[-1:])
            parent = _factor(frame, g[:-1])
            if not nested_in(own, parent):
                warnings.append(f"labels of '{g[-1]}' recur under several levels of "
                                f"'{':'.join(g[:-1])}': ({'|'.join(['1', ':'.join(g)])}) treats "
                                f"them as different cells, as written")
    top = factors[0]
    intercept_only = terms == ["Intercept"]
    design = None
    if not (intercept_only and len(factors) == 1):
        _rank_check(X, terms)
        _between_rank_check(X, top, terms)
        design = Design(formula, X, tuple(terms), tuple(factors), nested,
                        tuple(_factor(frame, (v,)) for v in gvars))
    if 1 < top.m < 3:
        warnings.append(f"only {top.m} levels of '{top.name}': its variance is weakly identified "
                        f"and leans on its prior")
    return ClusteredData(y=yk[:, None], codes=top.codes, groups=top.levels,
                         responses=(parsed.response,), group_name=top.name, source=source,
                         dropped_rows=dropped, warnings=tuple(warnings), design=design)


def load_formula(spec, formula: str):
    """A file or shipped dataset fitted by ``formula`` (group columns read as text)."""
    from pathlib import Path

    from varcomp.models.data import DATASETS, data_dir
    from varcomp.models.io import read_frame, sniff

    key = str(spec)
    if key.lower() in DATASETS and not Path(key).exists():
        path, source = data_dir() / DATASETS[key.lower()].file, DATASETS[key.lower()].name
    else:
        path, source = Path(key), key
    dialect = sniff(path)
    missing = [v for v in parse(formula).variables if v not in dialect.columns]
    if missing:
        raise DataError(f"column(s) {missing} of the formula not found; columns present: "
                        f"{', '.join(dialect.columns)} (read as {dialect.describe()})")
    df = read_frame(path, text_columns=group_variables(formula), dialect=dialect)
    return from_formula(df, formula, source=source)
