r"""Grouped moments: per-group counts, means and centred cross-products, mergeable exactly.

Every model of the package reduces its rows to per-cluster (or per-cell) statistics of a few
columns (responses and covariates): the count :math:`n_g`, the mean vector :math:`\bar v_g` and
the centred cross-product matrix

.. math::
    M_g = \sum_{i \in g} (v_i - \bar v_g)(v_i - \bar v_g)^\top .

:class:`GroupedMoments` holds them for all groups at once, computed in one vectorised pass
(corrected two-pass means, cross-products from residuals, never sums of squares of raw values),
and merges two row sets by Chan, Golub & LeVeque's (1979) pairwise rule

.. math::
    n = n_a + n_b,\quad \delta = \bar v_b - \bar v_a,\quad
    \bar v = \bar v_a + \delta\, n_b / n,\quad
    M = M_a + M_b + \delta\delta^\top n_a n_b / n,

so partial statistics of chunks, files or Dask partitions (:mod:`models.distributed`) combine
into those of all rows, to rounding, whatever the split. Group keys are text: ``"07"`` and
``"7"`` are different groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np
import pandas as pd

from varcomp.models.groupstats import GroupStats

__all__ = ["GroupedMoments", "Moments"]


@dataclass(frozen=True, eq=False)
class Moments:
    r"""Count, mean and centred cross-products of one set of rows (no grouping).

    Attributes
    ----------
    n : int
        Number of rows.
    mean : (d,) float64
        Column means (NaN when ``n == 0``).
    m2 : (d, d) float64
        Centred cross-products :math:`\sum_i (v_i - \bar v)(v_i - \bar v)^\top`.
    columns : tuple of str
        The d column names.
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray
    columns: tuple[str, ...]

    @property
    def cov(self) -> np.ndarray:
        """The unbiased covariance matrix ``m2 / (n - 1)`` (NaN when ``n < 2``)."""
        if self.n < 2:
            return np.full_like(self.m2, np.nan)
        return self.m2 / (self.n - 1)


@dataclass(frozen=True, eq=False)
class GroupedMoments:
    r"""Per-group count, mean vector and centred cross-product matrix of d columns.

    Attributes
    ----------
    keys : (G,) or (G, m) object array of str
        Group labels as text, one row per group (``m`` columns for compound keys such as
        (school, class)). Unique.
    n : (G,) int64
        Rows per group (every group has at least one).
    mean : (G, d) float64
        Group means :math:`\bar v_g`.
    m2 : (G, d, d) float64
        Centred cross-products :math:`M_g = \sum_{i \in g} (v_i - \bar v_g)(v_i - \bar v_g)^\top`.
    columns : tuple of str
        The d column names.
    mean_lo : (G, d) float64
        The rounding residual of ``mean``: the group mean is ``mean + mean_lo`` to about
        1e-30 relative (a double-double pair; zeros if not given). A float64 mean at 1e6 is
        known only to 1e-10, so the merge term :math:`\delta\delta^\top n_a n_b / n` would be
        off by ~1e-11 relative per merge; carrying the residual keeps merges at rounding
        (measured in ``tests/test_moments.py``).
    dropped : int
        Rows left out before the moments were taken (missing or non-finite values), as the
        caller counted them; summed by :meth:`merge` and :meth:`concat`.

    Notes
    -----
    Values must be finite: rows with a missing or infinite value are the caller's decision
    (drop them, or refuse the data); :meth:`from_arrays` raises ``ValueError`` on them.
    """

    keys: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    columns: tuple[str, ...]
    mean_lo: np.ndarray | None = None
    dropped: int = 0

    def __post_init__(self) -> None:
        G, d = self.n.shape[0], len(self.columns)
        if self.mean_lo is None:
            object.__setattr__(self, "mean_lo", np.zeros_like(self.mean, dtype=np.float64))
        elif self.mean_lo.shape != self.mean.shape:
            raise ValueError(f"mean_lo of shape {self.mean_lo.shape} for mean {self.mean.shape}")
        if (self.keys.shape[0] != G or self.keys.ndim not in (1, 2) or self.mean.shape != (G, d)
                or self.m2.shape != (G, d, d)):
            raise ValueError(f"inconsistent shapes: keys {self.keys.shape}, n {self.n.shape}, "
                             f"mean {self.mean.shape}, m2 {self.m2.shape} for {d} columns")

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, columns: Sequence[str], key_width: int = 1) -> GroupedMoments:
        """No groups: the identity of :meth:`merge`."""
        columns = tuple(str(c) for c in columns)
        d = len(columns)
        keys = np.empty((0,) if key_width == 1 else (0, key_width), dtype=object)
        return cls(keys=keys, n=np.zeros(0, np.int64), mean=np.zeros((0, d)),
                   m2=np.zeros((0, d, d)), columns=columns)

    @classmethod
    def from_arrays(cls, keys, values, columns: Sequence[str]) -> GroupedMoments:
        r"""Compute grouped moments in one vectorised pass (no loop over rows or groups).

        Means by the corrected two-pass formula (the mean, plus the mean of the residuals about
        it), then :math:`M_g` from the residuals about those means, so an offset of 1e6 costs
        no accuracy: :math:`\sum x^2 - n\bar x^2` is never formed.

        Parameters
        ----------
        keys : (N,) or (N, m) array-like
            Group label of each row (a column per key part for compound keys). Each label is
            turned into text with ``str``; missing labels are refused.
        values : (N, d) or (N,) array-like of float
            Finite values of the d columns.
        columns : sequence of str
            The d column names.

        Returns
        -------
        GroupedMoments
            Groups in order of first appearance.

        Raises
        ------
        ValueError
            On a missing key, a shape mismatch or a non-finite value (the message names the
            column and the count).
        """
        columns = tuple(str(c) for c in columns)
        d = len(columns)
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 1 and d == 1:
            v = v[:, None]
        if v.ndim != 2 or v.shape[1] != d:
            raise ValueError(f"values of shape {v.shape} do not match {d} columns {list(columns)}")
        codes, first, group_keys = _key_codes(keys)
        if codes.shape[0] != v.shape[0]:
            raise ValueError(f"{codes.shape[0]} keys for {v.shape[0]} rows of values")
        bad = ~np.isfinite(v)
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            raise ValueError(f"column '{columns[j]}' has {int(bad[:, j].sum())} non-finite "
                             f"value(s); GroupedMoments takes finite values only: drop or fill "
                             f"those rows first")
        G = first.size
        n = np.bincount(codes, minlength=G).astype(np.int64)
        mean, lo = np.empty((G, d)), np.empty((G, d))
        for j in range(d):  # loop over columns, never over rows or groups
            m = np.bincount(codes, weights=v[:, j], minlength=G) / n
            # corrected two-pass (Chan, Golub & LeVeque 1983): add back the mean residual,
            # keeping the sum's rounding error as the low part of the mean
            c = np.bincount(codes, weights=v[:, j] - m[codes], minlength=G) / n
            mean[:, j], lo[:, j] = _two_sum(m, c)
        r = (v - mean[codes]) - lo[codes]  # residuals about the (double-double) group mean
        m2 = np.empty((G, d, d))
        for j in range(d):
            for k in range(j, d):  # M_g[j, k] = sum_i r_ij r_ik, symmetric by construction
                m2[:, j, k] = np.bincount(codes, weights=r[:, j] * r[:, k], minlength=G)
                m2[:, k, j] = m2[:, j, k]
        return cls(keys=group_keys, n=n, mean=mean, m2=m2, columns=columns, mean_lo=lo)

    # ------------------------------------------------------------------ views
    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return int(self.n.shape[0])

    @property
    def n_obs(self) -> int:
        """Number of rows, summed over groups."""
        return int(self.n.sum())

    @property
    def within(self) -> np.ndarray:
        r"""Pooled within-group scatter :math:`W = \sum_g M_g`, (d, d)."""
        return self.m2.sum(axis=0)

    def to_group_stats(self) -> GroupStats:
        """Return the statistics as :class:`models.data.GroupStats` (equal counts per column)."""
        d = len(self.columns)
        ss = np.diagonal(self.m2, axis1=1, axis2=2).copy()
        return GroupStats(n=np.repeat(self.n[:, None], d, axis=1), mean=self.mean.copy(),
                          ss=ss, scatter=self.within)

    def sorted(self) -> GroupedMoments:
        """Return the same groups ordered by key (text order; compound keys part by part)."""
        if self.keys.ndim == 1:
            order = np.argsort(self.keys.astype(str), kind="stable")
        else:
            order = np.lexsort(self.keys.astype(str).T[::-1])
        return self._take(order)

    def pooled(self) -> Moments:
        r"""Count, mean and centred cross-products of all rows together.

        The k-group form of the pairwise rule: the grand mean by the corrected two-pass formula
        over group means, then within plus between scatter,

        .. math::
            M = \sum_g M_g + \sum_g n_g (\bar v_g - \bar v)(\bar v_g - \bar v)^\top,

        so no raw sum of squares is formed.
        """
        d = len(self.columns)
        N = int(self.n.sum())
        if N == 0:
            return Moments(n=0, mean=np.full(d, np.nan), m2=np.zeros((d, d)),
                           columns=self.columns)
        w = self.n.astype(np.float64)
        mu = w @ self.mean / N
        mu, mu_lo = _two_sum(mu, w @ ((self.mean - mu) + self.mean_lo) / N)
        dev = (self.mean - mu) + (self.mean_lo - mu_lo)  # group mean minus grand mean
        m2 = self.within + np.einsum("g,gj,gk->jk", w, dev, dev)
        return Moments(n=N, mean=mu, m2=m2, columns=self.columns)

    # ------------------------------------------------------------------ merging
    @staticmethod
    def merge(a: GroupedMoments, b: GroupedMoments) -> GroupedMoments:
        """Statistics of the union of two disjoint row sets (Chan, Golub & LeVeque's rule).

        Groups are matched by key (vectorised); a group in only one operand is copied as is,
        so merging with an empty ``GroupedMoments`` is the identity. Associative and
        commutative up to rounding (the group order follows first appearance: ``a``'s, then
        ``b``'s new ones; use :meth:`sorted` for a canonical order).
        """
        if a.columns != b.columns:
            raise ValueError(f"cannot merge moments of columns {list(a.columns)} and "
                             f"{list(b.columns)}")
        if b.n_groups == 0:
            return replace(a, dropped=a.dropped + b.dropped)
        if a.n_groups == 0:
            return replace(b, dropped=a.dropped + b.dropped)
        if a.keys.ndim != b.keys.ndim or a.keys.shape[1:] != b.keys.shape[1:]:
            raise ValueError(f"cannot merge keys of shapes {a.keys.shape[1:]} and "
                             f"{b.keys.shape[1:]}")
        codes, first = _factorize(np.concatenate([a.keys, b.keys]))
        ca, cb = codes[: a.n_groups], codes[a.n_groups:]
        U = first.size
        n = np.zeros(U, np.int64)
        d = len(a.columns)
        mean, lo, m2 = np.empty((U, d)), np.empty((U, d)), np.empty((U, d, d))
        n[ca], mean[ca], lo[ca], m2[ca] = a.n, a.mean, a.mean_lo, a.m2
        in_a = np.zeros(U, bool)
        in_a[ca] = True
        both = in_a[cb]  # b's groups that a has too
        only = cb[~both]
        n[only], mean[only], lo[only], m2[only] = (b.n[~both], b.mean[~both], b.mean_lo[~both],
                                                   b.m2[~both])
        if both.any():
            t = cb[both]
            na, nb = n[t].astype(np.float64), b.n[both].astype(np.float64)
            tot = na + nb
            # delta = mean_b - mean_a, both as double-double (the high parts cancel exactly)
            delta = (b.mean[both] - mean[t]) + (b.mean_lo[both] - lo[t])
            mean[t], lo[t] = _two_sum(mean[t], lo[t] + delta * (nb / tot)[:, None])
            m2[t] = (m2[t] + b.m2[both]
                     + np.einsum("g,gj,gk->gjk", na * nb / tot, delta, delta))
            n[t] = n[t] + b.n[both]
        return GroupedMoments(keys=np.concatenate([a.keys, b.keys])[first], n=n, mean=mean,
                              m2=m2, columns=a.columns, mean_lo=lo,
                              dropped=a.dropped + b.dropped)

    @staticmethod
    def merge_all(parts: Sequence[GroupedMoments]) -> GroupedMoments:
        """Merge several partial statistics left to right (one node of a tree reduction)."""
        if not parts:
            raise ValueError("nothing to merge")
        return reduce(GroupedMoments.merge, parts)

    @staticmethod
    def concat(parts: Sequence[GroupedMoments]) -> GroupedMoments:
        """Stack statistics of disjoint group sets (e.g. after a shuffle by key); no merging.

        Raises ``ValueError`` when a key occurs in more than one part: those groups were split
        and need :meth:`merge`.
        """
        dropped = sum(p.dropped for p in parts)
        parts = [p for p in parts if p.n_groups] or list(parts[:1])
        if not parts:
            raise ValueError("nothing to concatenate")
        keys = np.concatenate([p.keys for p in parts])
        codes, first = _factorize(keys)
        if first.size != keys.shape[0]:
            raise ValueError(f"{keys.shape[0] - first.size} group(s) occur in more than one "
                             f"part: merge them instead of concatenating")
        return GroupedMoments(keys=keys, n=np.concatenate([p.n for p in parts]),
                              mean=np.concatenate([p.mean for p in parts]),
                              m2=np.concatenate([p.m2 for p in parts]),
                              columns=parts[0].columns,
                              mean_lo=np.concatenate([p.mean_lo for p in parts]),
                              dropped=dropped)

    def _take(self, index: np.ndarray) -> GroupedMoments:
        return replace(self, keys=self.keys[index], n=self.n[index], mean=self.mean[index],
                       m2=self.m2[index], mean_lo=self.mean_lo[index])


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``s, e`` with ``s = fl(a + b)`` and ``a + b = s + e`` exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


# ------------------------------------------------------------------------------ keys
def _key_text(keys) -> np.ndarray:
    """Keys as an object array of ``str`` ((N,) or (N, m)); missing labels are refused."""
    if isinstance(keys, pd.DataFrame):
        parts, compound = [keys.iloc[:, j] for j in range(keys.shape[1])], True
    elif isinstance(keys, pd.Series):
        parts, compound = [keys], False
    else:
        arr = np.asarray(keys, dtype=object)
        if arr.ndim not in (1, 2):
            raise ValueError(f"keys must be (N,) or (N, m), got shape {arr.shape}")
        compound = arr.ndim == 2
        parts = ([pd.Series(arr[:, j], dtype=object) for j in range(arr.shape[1])] if compound
                 else [pd.Series(arr, dtype=object)])
    cols = []
    for j, s in enumerate(parts):
        missing = s.isna().to_numpy()
        if missing.any():
            raise ValueError(f"{int(missing.sum())} row(s) have no group label (key part {j}, "
                             f"first rows {np.flatnonzero(missing)[:5].tolist()})")
        cols.append(s.astype(str).to_numpy(dtype=object))  # text, e.g. "07" stays "07"
    if not compound:
        return cols[0]
    return np.stack(cols, axis=1) if cols else np.empty((0, 0), dtype=object)


def _key_codes(keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group codes of each row, each group's first row and its key as text.

    The same groups and text as factorising :func:`_key_text`'s per-row text, but a column
    with a typed dtype (integers, Arrow strings, categories) is factorised on its values and
    only its distinct values are turned into text (a 10^6-row partition of integer labels:
    ~15x faster); values whose text coincides are then one group, as the text says. Object
    columns go through the per-row text.
    """
    if isinstance(keys, pd.Series):
        parts = [keys]
    elif isinstance(keys, pd.DataFrame):
        parts = [keys.iloc[:, j] for j in range(keys.shape[1])]
    else:
        text = _key_text(keys)
        codes, first = _factorize(text)
        return codes, first, text[first]
    col_codes, col_text = [], []
    for j, s in enumerate(parts):
        if s.dtype == object or pd.api.types.is_float_dtype(s.dtype):  # 0.0 and -0.0: two
            c, u = pd.factorize(_key_text(s), sort=False)
            col_codes.append(c.astype(np.int64))
            col_text.append(np.asarray(u, dtype=object))
            continue
        c, u = pd.factorize(s, sort=False, use_na_sentinel=True)
        if (c < 0).any():
            missing = np.flatnonzero(c < 0)
            raise ValueError(f"{missing.size} row(s) have no group label (key part {j}, first "
                             f"rows {missing[:5].tolist()})")
        t = pd.Series(u).astype(str).to_numpy(dtype=object)
        ct, ut = pd.factorize(t, sort=False)  # distinct values with the same text: one group
        col_codes.append(ct.astype(np.int64)[c])
        col_text.append(np.asarray(ut, dtype=object))
    codes = _combine_codes([(c, len(t)) for c, t in zip(col_codes, col_text, strict=True)])
    first = _first_rows(codes)
    if len(parts) == 1:
        return codes, first, col_text[0][col_codes[0][first]]
    return codes, first, np.stack([t[c[first]] for c, t in zip(col_codes, col_text,
                                                                strict=True)], axis=1)


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """Each code's first row, for codes numbered in order of first appearance."""
    # a row is a code's first exactly when its code exceeds every earlier one
    new = np.ones(codes.size, bool)
    new[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    return np.flatnonzero(new)


def _factorize(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of text keys (order of first appearance) and each code's first row.

    Compound keys are factorised part by part and the codes combined pairwise
    (``code_1 * L_2 + code_2``, refactorised after each step so the product stays below N^2).
    """
    columns = [text] if text.ndim == 1 else [text[:, j] for j in range(text.shape[1])]
    parts = []
    for col in columns:
        cj, uj = pd.factorize(col, sort=False)
        parts.append((cj, len(uj)))
    codes = _combine_codes(parts)
    return codes, _first_rows(codes)


def _combine_codes(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Codes of compound keys from each part's (codes, number of levels).

    All codes are numbered in order of first appearance: ``code_1 * L_2 + code_2``,
    refactorised after each step so the product stays below N^2.
    """
    codes = parts[0][0]
    for c, levels in parts[1:]:
        codes, _ = pd.factorize(codes * np.int64(levels) + c, sort=False)
    return np.asarray(codes, dtype=np.int64)
