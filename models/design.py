"""Formulas: ``y ~ x1 + C(x2) + (1|a/b) + (1|c)`` parsed with ``formulae`` into a validated design.

The fixed effects are ``formulae``'s common design matrix (its categorical coding, interactions
and transforms; its column names, e.g. ``Intercept``, ``basement``, ``C(x)[b]``). The group terms
must be random intercepts (``(1|g)``; ``(1|a/b)`` is ``(1|a) + (1|a:b)``, ``(1|a:b)`` the cells of
a and b): each becomes a :class:`Factor` whose levels are the text of its variables joined by
``:``. ``formulae``'s group design matrices (dense, rows x levels) are never built.

Every formula's data carry a :class:`Design`; which model fits them (the one-way model for an
intercept and one group term) is decided by :func:`models.forms.family_of` alone. Rows with a
missing or non-finite response or covariate are dropped and counted; a missing group label is an
error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError
from varcomp.models.responses import family_and_link, glm_rows, separation_problem
from varcomp.models.terms import INTERCEPT, Factor, Term

__all__ = ["Design", "Factor", "Term", "from_formula", "group_variables", "load_formula", "parse",
           "slope_terms"]



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
    offsets : tuple of str
        The formula's ``offset(...)`` terms: subtracted from the response (coefficient 1), not
        columns of X.
    random : tuple of Term
        The random-effects terms, each a factor of ``factors`` and its coefficient columns
        (``("Intercept",)`` for a random intercept, the default: one per factor).
    """

    formula: str
    X: np.ndarray
    terms: tuple[str, ...]
    factors: tuple[Factor, ...]
    nested: bool
    variables: tuple[Factor, ...] = ()
    offsets: tuple[str, ...] = ()
    random: tuple[Term, ...] = ()

    def __post_init__(self):
        if not self.random:
            object.__setattr__(self, "random", tuple(Term(f) for f in self.factors))

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
    """A formula's parts (checked by :func:`models.formula_guard.check`; nothing evaluated).

    ``response`` is the response as written (``y``, ``np.log(y)``) and ``response_expr`` its
    lazy expression; ``offsets`` are (label, expression) of each ``offset(...)``, subtracted from
    the response; ``fixed`` is the fixed part without group terms and offsets; ``groups`` each
    grouping factor's columns (once, in formula order), ``random`` each random-effects term as
    (factor columns, coefficient columns).
    """

    response: str
    fixed: str
    groups: tuple[tuple[str, ...], ...]
    variables: tuple[str, ...]
    response_vars: tuple[str, ...] = ()
    response_expr: object = field(default=None, repr=False, compare=False)
    offsets: tuple = field(default=(), repr=False, compare=False)
    random: tuple = ()
    trials: str | None = None

    @property
    def label(self) -> str:
        """What is fitted: the response, minus its offsets (``y - offset(z)``)."""
        return " - ".join([self.response, *(o for o, _ in self.offsets)])


def parse(formula: str) -> Parsed:
    """Split ``formula`` into response, fixed part and random-effects terms (one-line errors).

    The guard (:func:`models.formula_guard.check`) parses it, ``||`` rewritten first, and
    expands ``a/b``; nothing is evaluated.
    """
    from varcomp.models.formula_guard import check

    checked = check(formula)
    if not checked.groups:
        raise DataError(f"the formula {formula!r} has no group term such as (1|g): a "
                        f"variance-components model needs at least one")
    groups = tuple(dict.fromkeys(f for f, _ in checked.groups))
    return Parsed(checked.response, checked.fixed, groups, checked.variables,
                  checked.response_vars, checked.response_expr, checked.offsets,
                  tuple(checked.groups), checked.trials)


def slope_columns(parsed: Parsed) -> list[str]:
    """The columns whose slopes vary by a group (the numeric columns of the terms' left sides)."""
    return list(dict.fromkeys(c for _, cols in parsed.random for c in cols if c != INTERCEPT))


def slope_terms(design) -> list[Term]:
    """The random-effects terms of ``design`` with slope columns (empty: intercepts only)."""
    return [t for t in getattr(design, "random", ()) if t.slopes]


def response_values(df: pd.DataFrame, parsed: Parsed) -> np.ndarray:
    """The fitted response of ``df``'s rows: its transform applied, its offsets subtracted.

    NaN or infinite where a value is missing or the transform is not finite (log of 0): the
    caller drops those rows.
    """
    from varcomp.models.data import numeric_response
    from varcomp.models.formula_guard import evaluate

    cols = {v: numeric_response(df[v], v) for v in parsed.response_vars}
    y = evaluate(parsed.response_expr, cols)
    for off in _offsets(df, parsed):
        y = y - off
    return y


def offset_values(df: pd.DataFrame, parsed: Parsed) -> np.ndarray:
    """The summed offsets of ``df``'s rows (0 without any): a GLMM's linear predictor's."""
    total = np.zeros(len(df))
    for off in _offsets(df, parsed):
        total = total + off
    return total


def _offsets(df: pd.DataFrame, parsed: Parsed):
    """Each ``offset(...)``'s values over ``df``'s rows."""
    from varcomp.models.formula_guard import evaluate

    for label, expr in parsed.offsets:
        names = [v for v in parsed.variables if v in df.columns]
        values = {}
        for v in names:
            col = df[v]
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                continue  # not read by the offset (a grouping or categorical column)
            values[v] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        try:
            yield evaluate(expr, values)
        except KeyError as exc:
            raise DataError(f"{label}: column {exc} is not numeric; an offset is a number per "
                            f"row") from None


def _slash_terms(formula: str) -> set[tuple[str, ...]]:
    """The nested terms a ``/`` wrote: ``(1|a/b)`` gives ``(a, b)`` (not ``(1|a:b)`` itself)."""
    import re

    out = set()
    for rhs in re.findall(r"\|([^()|]*)\)", formula):
        if "/" in rhs:
            parts = [tuple(v.strip() for v in p.split(":")) for p in rhs.split("/")]
            for i in range(2, len(parts) + 1):
                out.add(tuple(v for p in parts[:i] for v in p))
    return out


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


def check_factors(factors: list[Factor], n_rows: int, residual: bool = True) -> None:
    """Refuse factors whose variance is not identifiable.

    ``residual``: the response has a residual sigma (Gaussian), beside which a factor with a
    level per row is not identifiable (a binomial or Poisson observation-level factor is
    overdispersion: kept).
    """
    for f in factors:
        if f.m < 2:
            raise DataError(f"(1|{f.name}) has one level: its variance is not identifiable; drop "
                            f"the term")
        if residual and f.m == n_rows:
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
    """Refuse collinear columns (incl. a covariate constant everywhere beside the intercept).

    The first column in the span of those before it is named: the rank of the leading columns
    only grows by one or stays, so the first deficient prefix is found by bisection (a few
    SVDs, not one per column).
    """
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    tol = 1e-9 * max(1.0, np.sqrt(X.shape[0]))

    def full(j: int) -> bool:  # the first j + 1 columns are independent
        return np.linalg.matrix_rank(Xs[:, :j + 1], tol=tol) == j + 1

    if X.shape[1] == 0 or full(X.shape[1] - 1):
        return
    lo, hi = 0, X.shape[1] - 1  # the first deficient prefix ends in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if full(mid) else (lo, mid)
    j = lo
    if not np.any(X[:, j]):
        raise DataError(f"the fixed-effects column '{terms[j]}' is all zero (a level "
                        f"absent from the data?): drop it")
    others = ", ".join(terms[:j]) or "nothing"
    raise DataError(f"the fixed-effects column '{terms[j]}' is a linear combination of "
                    f"{others} (collinear or constant): drop it or recode")


def _spread_check(X: np.ndarray, terms: list[str]) -> None:
    """A column whose values' squares under- or overflow float64 is named with that cause."""
    from varcomp.models.data import MAX_ABS, MIN_SPREAD

    for j, t in enumerate(terms):
        top = float(np.abs(X[:, j]).max()) if X.shape[0] else 0.0
        if top > MAX_ABS:
            raise DataError(f"the fixed-effects column '{t}' reaches {top:.3g}: beyond "
                            f"{MAX_ABS:.0e} its sums of squares overflow float64; rescale it")
        if 0 < top < MIN_SPREAD:
            raise DataError(f"the fixed-effects column '{t}' is at most {top:.3g} in size: its "
                            f"squares underflow float64 (below {MIN_SPREAD:.0e}); multiply the "
                            f"column by a power of ten (its coefficient scales inversely)")


MAX_FIXED_COLUMNS = 1000
"""Most fixed-effect columns a design may have. Beyond it the k x k cross-products (one per cell
on the statistics path), the rank checks (O(N k^2)) and the sampler's k coefficients make a fit
impractical; a factor with that many levels is a grouping: write ``(1|id)``."""


def categorical_columns(fixed: str, sample: pd.DataFrame) -> list[str]:
    """Columns the fixed part treats as categorical: inside C(), or text."""
    import formulae

    out = []
    for t in formulae.model_description(fixed).common_terms:
        for c in getattr(t, "components", []):
            name = getattr(c, "name", "")
            if type(c).__name__ == "Call" and name.startswith("C("):
                out.append(name[2:-1].split(",")[0].strip().strip("`"))
            elif type(c).__name__ == "Variable" and name in sample and not (
                    pd.api.types.is_numeric_dtype(sample[name])):
                out.append(name)
    return sorted(set(out))


def size_check(fixed: str, n_levels: dict[str, int], n_rows: int | None) -> None:
    """Refuse a design of more than :data:`MAX_FIXED_COLUMNS` columns, or one beyond memory.

    Counted before the design is built: each term has the product of its categorical columns'
    level counts (an upper bound of formulae's coding) columns.
    """
    import formulae

    from varcomp.models.data import memory_budget

    cols, worst = 0, ("", 0)
    for t in formulae.model_description(fixed).common_terms:
        size = 1
        for c in getattr(t, "components", []):
            name = getattr(c, "name", "")
            key = name[2:-1].split(",")[0].strip().strip("`") if name.startswith("C(") else name
            size *= n_levels.get(key, 1)
        cols += size
        worst = max(worst, (str(t.name) if hasattr(t, "name") else str(t), size),
                    key=lambda w: w[1])
    need = (n_rows or 0) * cols * 8
    if cols > MAX_FIXED_COLUMNS or need > memory_budget():
        raise DataError(f"the fixed effects would have about {cols:,} columns ({worst[0]} "
                        f"alone {worst[1]:,}){f', {need / 2**30:.1f} GiB' if n_rows else ''}: "
                        f"more than {MAX_FIXED_COLUMNS:,} columns (or the memory budget) is "
                        f"not a fixed effect; write a factor with many levels as a group term "
                        f"(1|{worst[0].removeprefix('C(').split(')')[0].split(',')[0]})")


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


def kept_columns(parsed: Parsed) -> list[str]:
    """The columns besides the response and the grouping whose missing values drop a row."""
    gvars = {v for g in parsed.groups for v in g}
    return [v for v in parsed.variables if v not in gvars and v not in parsed.response_vars]


def row_filter(df: pd.DataFrame, parsed: Parsed, *, whole: bool = True, y=None,
               extras=()) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``df`` are kept, and the fitted response: the one row filter.

    Used by the in-memory load (:func:`from_formula`) and, part by part, by the chunked and
    Dask loads (:mod:`models.formula_stats`). A row is kept when its response (transformed,
    offsets subtracted) is finite and every other column the formula reads is observed: a
    numeric column finite, any other not missing. A missing grouping label is an error; a
    covariate outside ``C()`` must be numeric (:func:`numeric_covariates`). ``whole``: ``df``
    holds all the rows, so a missing label names its first rows and a response or covariate
    with no observed value at all is an error (a part may lack them). ``y``: the response
    already read (a GLMM's counts, :func:`models.responses.glm_rows`) instead of
    :func:`response_values`; ``extras``: further per-row arrays (trials, offsets) that must be
    finite too (None entries are ignored).
    """
    for v in sorted({v for g in parsed.groups for v in g}):
        if missing := int(df[v].isna().sum()):
            rows = np.flatnonzero(df[v].isna().to_numpy())[:5] + 1
            where = f" (first data rows {rows.tolist()})" if whole else ""
            raise DataError(f"{missing} row(s) have no '{v}' label{where}: fill them in or "
                            f"remove those rows")
    numeric_covariates(df, parsed.fixed)
    if y is None:
        y = response_values(df, parsed)
    if whole and len(df) and not np.isfinite(y).any():
        raise DataError(f"the response {parsed.label} has no finite value in any row")
    keep = np.isfinite(y)
    for extra in extras:
        if extra is not None:
            keep &= np.isfinite(extra)
    for v in kept_columns(parsed):
        col = df[v]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            ok = np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            ok = col.notna().to_numpy()
        if whole and len(df) and not ok.any():
            raise DataError(f"covariate '{v}' has no observed value (every row is missing or "
                            f"not finite): drop it from the formula or fill it in")
        keep &= ok
    return keep, y


def offset_notes(parsed: Parsed) -> list[str]:
    """What a summary says of the offsets: fixed at 1, subtracted, and the scale of the fit."""
    return [f"{o} is an offset (coefficient fixed at 1): the model is fitted to {parsed.label}; "
            f"its estimates and predictions are on that scale" for o, _ in parsed.offsets[:1]]


def random_terms(frame: pd.DataFrame, parsed: Parsed, factors) -> tuple[Term, ...]:
    """Each random-effects term over the kept rows, with its coefficient columns' values.

    Ones for the intercept; a slope column must be numeric.
    """
    by_name = {f.name: f for f in factors}
    out = []
    for names, cols in parsed.random:
        values = np.ones((len(frame), len(cols)))
        for j, c in enumerate(cols):
            if c == INTERCEPT:
                continue
            col = frame[c]
            if not pd.api.types.is_numeric_dtype(col) or col.dtype.kind in "cmM":
                raise DataError(f"the random slope '{c}' in ({c}|{':'.join(names)}) is not a "
                                f"numeric column ({col.dtype}): a slope is a number per row; for "
                                f"effects that vary by its levels write (1|{':'.join(names)}) + "
                                f"(1|{':'.join(names)}:{c})")
            values[:, j] = col.to_numpy(dtype=np.float64)
        out.append(Term(by_name[":".join(names)], cols, values))
    return tuple(out)

def from_formula(df: pd.DataFrame, formula: str, *, source: str = "<frame>",
                 family: str | None = None, link: str | None = None, event: str | None = None):
    """Validate ``df`` for ``formula``; a :class:`~models.data.ClusteredData`.

    The returned data carry a :class:`Design` (the family that fits them is
    :func:`models.forms.family_of`'s decision); their ``codes``/``groups`` are the top-level
    factor's. ``family``, ``link``, ``event``: the response distribution
    (:mod:`models.responses`; ``p(s, n)`` implies binomial).
    """
    import formulae

    from varcomp.models.data import ClusteredData
    from varcomp.models.formula_guard import env

    parsed = parse(formula)
    missing = [v for v in parsed.variables if v not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} of the formula not found; columns present: "
                        f"{', '.join(map(str, df.columns))}")
    gvars = sorted({v for g in parsed.groups for v in g})
    kind, link, bernoulli = family_and_link(family, link, proportion=parsed.trials is not None,
                                            response=parsed.response)
    trials = offset = y = None
    notes = []
    if kind == "gaussian":
        if event is not None:
            raise DataError("--event chooses the event level of a Bernoulli response: add "
                            "--family bernoulli")
    else:
        if parsed.trials is None and parsed.response not in parsed.response_vars:
            raise DataError(f"the response {parsed.response} of a {kind} model is transformed: "
                            f"give the column itself (the link does the transforming)")
        y, trials, note = glm_rows(df, parsed.response_vars, parsed.trials, kind, bernoulli,
                                   event)
        offset = offset_values(df, parsed)
        notes = [note] if note else []
    keep, y = row_filter(df, parsed, y=y, extras=(trials, offset))
    frame = df.loc[keep].reset_index(drop=True)
    if len(frame) == 0:
        raise DataError(f"no row has every value of {formula!r} observed")
    cats = categorical_columns(parsed.fixed, frame)
    size_check(parsed.fixed, {c: frame[c].nunique() for c in cats}, len(frame))
    try:
        dm = formulae.design_matrices(parsed.fixed, frame, na_action="pass", env=env())
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
    # a level per row: no residual beside it for a binomial of several trials or a count
    binary = trials is not None and bool(np.all(np.asarray(trials)[keep] <= 1))
    check_factors(factors, len(frame), residual=kind == "gaussian" or binary)
    warnings = []
    if dropped:
        warnings.append(f"{dropped} row(s) with a missing or non-finite response or covariate "
                        f"were dropped")
    warnings += notes + (offset_notes(parsed) if kind == "gaussian" else [
        f"{o} is an offset: it enters the linear predictor with coefficient 1 (rates per unit "
        f"of it)" for o, _ in parsed.offsets[:1]])
    for g in parsed.groups:  # (1|a/b) with b's labels reused across a: fit as written, say so
        if g in _slash_terms(formula):  # (1|a:b) as written: recurring labels are its point
            own = _factor(frame, g[-1:])
            parent = _factor(frame, g[:-1])
            if not nested_in(own, parent):
                warnings.append(f"labels of '{g[-1]}' recur under several levels of "
                                f"'{':'.join(g[:-1])}': ({'|'.join(['1', ':'.join(g)])}) treats "
                                f"them as different cells, as written")
    top = factors[0]
    if kind != "gaussian" and (why := separation_problem(
            yk, None if trials is None else trials[keep], top.codes, top.m)):
        raise DataError(why)
    _spread_check(X, terms)
    _rank_check(X, terms)
    _between_rank_check(X, top, terms)
    design = Design(formula, X, tuple(terms), tuple(factors), nested,
                    tuple(_factor(frame, (v,)) for v in gvars),
                    tuple(o for o, _ in parsed.offsets), random_terms(frame, parsed, factors))
    if 1 < top.m < 3:
        warnings.append(f"only {top.m} levels of '{top.name}': its variance is weakly identified "
                        f"and leans on its prior")
    glm = {} if kind == "gaussian" else {
        "likelihood": kind, "link": link,
        "trials": None if trials is None else trials[keep],
        "offset": offset[keep] if parsed.offsets else None}
    return ClusteredData(y=yk[:, None], codes=top.codes, groups=top.levels,
                         responses=(parsed.label,), group_name=top.name, source=source,
                         dropped_rows=dropped, warnings=tuple(warnings), design=design,
                         rows=np.flatnonzero(keep), **glm)


def load_formula(spec, formula: str, **response):
    """A file or shipped dataset fitted by ``formula`` (group columns read as text).

    ``response``: ``family``, ``link``, ``event`` (:func:`from_formula`).
    """
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
    return from_formula(df, formula, source=source, **response)
