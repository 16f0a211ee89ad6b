"""The response of a non-Gaussian model: which distribution and link, and its rows checked.

Data layer (imports no model code). :func:`family_and_link` decides the response distribution
from ``--family``/``family=``, ``--link`` and the formula's response (``p(successes, trials)``
implies ``binomial``); :func:`glm_rows` turns a frame's response columns into counts, trials
and offsets, refusing anything a binomial or Poisson model cannot use with one line.

Decisions (docs/guide/models.md, "Families and links"):

- ``bernoulli`` is the ``binomial`` likelihood with one trial per row; the data record
  ``likelihood="binomial"`` and ``trials`` all 1.
- A Bernoulli column is 0/1 (numbers), true/false, or text of two levels; the event (1) is the
  level that sorts last (``yes`` over ``no``, ``true`` over ``false``) unless ``--event LEVEL``
  says otherwise; the choice is printed as a note.
- ``p(s, n)`` without ``--family`` is binomial; with ``--family binomial`` the same; any other
  ``--family`` with ``p()`` is refused. ``--family binomial`` with a plain column fits it as
  Bernoulli rows (trials 1).
- Links: logit (default) or probit for the binomial kinds, log for Poisson.
- Poisson offsets enter the linear predictor (coefficient 1), they are not subtracted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError

__all__ = ["DEFAULT_LINK", "LINKS", "family_and_link", "glm_rows", "not_gaussian",
           "separation_problem"]

LINKS = {"binomial": ("logit", "probit"), "poisson": ("log",), "gaussian": ("identity",)}
DEFAULT_LINK = {"binomial": "logit", "poisson": "log", "gaussian": "identity"}


def not_gaussian(formula: str | None, family: str | None = None, link: str | None = None,
                 event: str | None = None) -> bool:
    """Whether these settings ask for a non-Gaussian response (never evaluating the formula).

    ``p()`` in the formula, a ``--family`` other than gaussian, or a ``--link``/``--event``.
    """
    from varcomp.models.formula_guard import check

    if family not in (None, "gaussian") or link is not None or event is not None:
        return True
    return family is None and formula is not None and check(formula).trials is not None


def family_and_link(family: str | None, link: str | None, *, proportion: bool,
                    response: str = "") -> tuple[str, str | None, bool]:
    """(likelihood, link, bernoulli) for ``--family``/``--link`` and the formula's response.

    ``proportion``: the response is ``p(successes, trials)``. The likelihood is ``gaussian``,
    ``binomial`` or ``poisson``; ``bernoulli`` marks one trial per row.
    """
    if family is not None and family not in ("gaussian", "bernoulli", "binomial", "poisson"):
        raise DataError(f"unknown family {family!r}: choose gaussian, bernoulli, binomial or "
                        f"poisson")
    if proportion:
        if family not in (None, "binomial"):
            raise DataError(f"the response {response} is binomial (successes, trials): it "
                            f"takes --family binomial (or none), not --family {family}")
        family = "binomial"
    family = family or "gaussian"
    kind = "binomial" if family == "bernoulli" else family
    if link is not None and link not in LINKS[kind]:
        raise DataError(f"--link {link} does not go with --family {family}: choose "
                        f"{' or '.join(LINKS[kind])}")
    if kind == "gaussian":
        return kind, None, False
    return kind, link or DEFAULT_LINK[kind], family == "bernoulli" or not proportion


def _counts(col: pd.Series, name: str, what: str) -> np.ndarray:
    """A column of non-negative integers as float64 (NaN where missing)."""
    from varcomp.models.data import numeric_response

    values = numeric_response(col, name)
    seen = values[np.isfinite(values)]
    bad = seen[(seen < 0) | (seen != np.round(seen))]
    if bad.size:
        raise DataError(f"{what} '{name}' must be non-negative integers (e.g. value "
                        f"{bad[0]:g}): a {'binomial' if what != 'count' else 'Poisson'} "
                        f"response counts")
    return values


def _binary(col: pd.Series, name: str, event: str | None) -> tuple[np.ndarray, str]:
    """0/1 of a Bernoulli column, and a note saying which level is the event."""
    observed = col.dropna()
    if pd.api.types.is_bool_dtype(col) or (observed.size and observed.map(type).eq(bool).all()):
        if event is not None:
            raise DataError(f"--event {event} names a level of a text column; '{name}' is "
                            f"true/false (the event is true)")
        out = np.full(len(col), np.nan)
        mask = col.notna().to_numpy()
        out[mask] = observed.astype(bool).to_numpy(dtype=np.float64)
        return out, f"'{name}' is true/false: the event (1) is true"
    kind = getattr(col.dtype, "kind", "O")
    if kind in "iuf":
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        seen = np.unique(values[np.isfinite(values)])
        if seen.size and not np.isin(seen, (0.0, 1.0)).all():
            raise DataError(f"response '{name}' of a Bernoulli model must be 0/1, true/false or "
                            f"two text levels; it holds {seen.size} values (e.g. "
                            f"{seen[~np.isin(seen, (0.0, 1.0))][0]:g})")
        if event is not None:
            raise DataError(f"--event {event} names a level of a text column; '{name}' is 0/1 "
                            f"(the event is 1)")
        return values, f"'{name}' is 0/1: the event is 1"
    text = col.astype("string")
    levels = sorted(text.dropna().unique())
    if len(levels) > 2:
        raise DataError(f"response '{name}' of a Bernoulli model has {len(levels)} levels "
                        f"({', '.join(map(repr, levels[:4]))}{', ...' if len(levels) > 4 else ''}"
                        f"): it needs two (or 0/1)")
    if event is not None and event not in levels:
        raise DataError(f"--event {event!r} is not a level of '{name}' (levels: "
                        f"{', '.join(map(repr, levels))})")
    chosen = event if event is not None else levels[-1]
    out = np.where(text.isna().to_numpy(dtype=bool), np.nan,
                   (text == chosen).fillna(False).to_numpy(dtype=np.float64))
    how = "(--event)" if event is not None else "(the level that sorts last; --event chooses)"
    return out, f"the event (1) of '{name}' is {chosen!r} {how}"


def glm_rows(df: pd.DataFrame, response_vars: tuple[str, ...], trials: str | None, kind: str,
             bernoulli: bool, event: str | None):
    """(y, trials, note) of a binomial or Poisson response; NaN where a value is missing.

    ``y`` is successes or counts (float64 integers); ``trials`` the binomial trials (all 1 for
    Bernoulli rows), None for Poisson; ``note``: which level is the event, or None.
    """
    if event is not None and not (kind == "binomial" and bernoulli):
        raise DataError("--event chooses the event level of a Bernoulli response: add "
                        "--family bernoulli")
    if kind == "binomial" and trials is not None:
        succ_name = response_vars[0]
        if len(response_vars) < 2:
            raise DataError(f"p({succ_name}, {trials}) names one column twice: write "
                            f"p(successes, trials)")
        s = _counts(df[succ_name], succ_name, "successes")
        n = _counts(df[trials], trials, "trials")
        ok = np.isfinite(s) & np.isfinite(n)
        if (n[ok] == 0).any():
            row = int(np.flatnonzero(ok & (n == 0))[0]) + 1
            raise DataError(f"trials '{trials}' is 0 in {int((n[ok] == 0).sum())} row(s) (first "
                            f"data row {row}): a row of no trials says nothing; remove it")
        above = ok & (s > n)
        if above.any():
            row = int(np.flatnonzero(above)[0]) + 1
            raise DataError(f"successes '{succ_name}' exceed trials '{trials}' in "
                            f"{int(above.sum())} row(s) (first data row {row}: "
                            f"{s[row - 1]:g} of {n[row - 1]:g})")
        return s, n, None
    if len(response_vars) != 1:
        raise DataError("a binomial or Poisson response is a column or p(successes, trials), "
                        "not a transform")
    name = response_vars[0]
    if kind == "binomial":
        y, note = _binary(df[name], name, event)
        return y, np.ones(len(df)), note
    return _counts(df[name], name, "count"), None, None


def separation_problem(y: np.ndarray, trials: np.ndarray | None, codes: np.ndarray,
                       m: int) -> str | None:
    """Why the cluster variance has no information (every cluster all 0 / all 1), or None."""
    s = np.bincount(codes, weights=y, minlength=m)
    if trials is None:
        return ("every count is 0: the rate and its between-cluster variance would rest on "
                "the prior alone") if not s.any() else None
    n = np.bincount(codes, weights=trials, minlength=m)
    if ((s == 0) | (s == n)).all():
        return ("every cluster is all 0 or all 1 (no cluster has both outcomes): the ICC "
                "would rest on the prior alone (the clusters separate perfectly); fit a "
                "model without the group term, or give data where some cluster varies")
    return None
