r"""The sufficient statistics of the mixed models: per-cell moments of [y, X].

A *cell* is one combination of the grouping columns' levels (the finest partition: for
``(1|a/b)`` the (a, b) pairs, for ``(1|a) + (1|b)`` the (a, b) pairs). Every random-intercept
factor is constant within a cell, so the likelihood depends on the rows only through each cell's
count, its means of y and of X's columns, and its centred cross-products (a
:class:`~models.moments.GroupedMoments` keyed by the cells' labels). From them this module
derives everything the closed forms, the ML/REML fit and leave-one-cluster-out need:

- :func:`nested_of`: the nested recursion's statistics (:class:`NestedStats`),
- :func:`strata_of`: the ANOVA strata of a balanced crossed design (:class:`StrataStats`),
- :func:`unit_moments`: each top-level unit's moments,
- :meth:`CellStats.pooled`: the moments of all rows (centring, priors, Var(X beta)).

The rows pass once, in memory (:func:`cells_of_rows`), in chunks (:mod:`models.chunked`) or on
Dask (:mod:`models.distributed`): whichever, the statistics and everything downstream agree to
rounding. Offset-stable throughout: means and cross-products are centred (Chan et al.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError

__all__ = ["CellStats", "NestedStats", "StrataStats", "cells_of_rows", "factor_codes",
           "level_sizes", "nested_of", "strata_of", "unit_moments", "weighted_level_sizes"]


@dataclass(frozen=True, eq=False)
class CellStats:
    """Per-cell moments of [y, X] and each cell's level of every grouping column.

    Attributes
    ----------
    variables : tuple of str
        The grouping columns.
    labels : (C, V) object array of str
        Each cell's level (text) of each grouping column.
    n : (C,) float64
        Rows per cell.
    mean : (C, 1 + k) float64
        Means of y and of X's k columns.
    m2 : (C, 1 + k, 1 + k) float64
        Centred cross-products within each cell.
    columns : tuple of str
        ``("y", *terms)``.
    """

    variables: tuple[str, ...]
    labels: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    columns: tuple[str, ...]

    @property
    def n_cells(self) -> int:
        """Number of cells C."""
        return int(self.n.size)

    @property
    def n_obs(self) -> int:
        """Number of rows."""
        return int(self.n.sum())

    @cached_property
    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, centred cross-products) of all rows: the between-cell part added exactly."""
        N = float(self.n.sum())
        w = self.n / N
        mean = w @ self.mean
        mean = mean + w @ (self.mean - mean)  # corrected two-pass
        dev = self.mean - mean
        m2 = self.m2.sum(axis=0) + np.einsum("c,ci,cj->ij", self.n, dev, dev)
        return mean, m2

    def covariance(self) -> np.ndarray:
        """Covariance (ddof 1) of [y, X] over the rows."""
        return self.pooled[1] / max(self.n_obs - 1, 1)

    def subset(self, keep: np.ndarray) -> CellStats:
        """The cells where ``keep`` (e.g. all but one top-level unit's)."""
        return CellStats(self.variables, self.labels[keep], self.n[keep], self.mean[keep],
                         self.m2[keep], self.columns)


@dataclass(frozen=True)
class NestedStats:
    """Sufficient statistics of a nested random-intercept regression (centred, offset-stable).

    What :mod:`models.compiled.lmm_nested` packs and its kernels read.

    ``parents[d]`` (d >= 1) maps each unit of level d to its unit at level d-1 (``parents[0]`` is
    empty); the cells are the units of the bottom level. ``y_mean``, ``x_mean``: the centring;
    every other sum is of ``y_c = y - y_mean`` and ``X_c = X - x_mean``.
    """

    names: tuple[str, ...]
    n_obs: int
    y_mean: float
    x_mean: np.ndarray
    yy: float
    xy: np.ndarray
    xx: np.ndarray
    sum_y: float
    sum_x: np.ndarray
    level_sizes: tuple[int, ...]
    parents: tuple[np.ndarray, ...]
    cell_n: np.ndarray
    cell_s: np.ndarray
    cell_t: np.ndarray

    @property
    def k(self) -> int:
        """Columns of X."""
        return int(self.x_mean.size)

    @property
    def depth(self) -> int:
        """Number of nested factors D."""
        return len(self.level_sizes)


@dataclass(frozen=True)
class StrataStats:
    """Per-stratum cross-products of a balanced crossed design (centred, offset-stable).

    What :mod:`models.compiled.lmm_strata` packs and its kernel reads.

    ``strata[s]``: the factor indices of S (``None`` for the within-cell stratum);
    ``coef[s, t]``: n prod_{f not in T_t} m_f if S is contained in T_t, else 0.
    """

    names: tuple[str, ...]
    levels: tuple[int, ...]
    n_rep: int
    terms: tuple[tuple[int, ...], ...]
    n_obs: int
    y_mean: float
    x_mean: np.ndarray
    ybar_c: float
    xbar_c: np.ndarray
    strata: tuple[tuple[int, ...] | None, ...]
    dim: np.ndarray
    coef: np.ndarray
    yy: np.ndarray
    xy: np.ndarray
    xx: np.ndarray

    @property
    def k(self) -> int:
        """Columns of X."""
        return int(self.x_mean.size)


def cells_of_rows(y, X, variables: dict[str, np.ndarray], terms) -> CellStats:
    """The cell statistics of rows in memory (one vectorised pass)."""
    from varcomp.models.moments import GroupedMoments

    names = tuple(variables)
    keys = np.column_stack([np.asarray(v, dtype=object) for v in variables.values()])
    values = np.column_stack([np.asarray(y, dtype=np.float64), np.asarray(X, dtype=np.float64)])
    gm = GroupedMoments.from_arrays(keys if keys.shape[1] > 1 else keys[:, 0], values,
                                    ("y", *terms))
    return from_moments(gm, names)


def from_moments(gm, variables) -> CellStats:
    """:class:`CellStats` from grouped moments keyed by the grouping columns' labels."""
    labels = gm.keys if gm.keys.ndim == 2 else gm.keys[:, None]
    return CellStats(tuple(variables), np.asarray(labels, dtype=object),
                     gm.n.astype(np.float64), gm.mean + gm.mean_lo, gm.m2, tuple(gm.columns))


def factor_codes(cells: CellStats, factor) -> np.ndarray:
    """Each cell's level code of ``factor``, in the order of ``factor.levels``.

    The factor's name joins grouping columns with ``:``.
    """
    cols = [cells.variables.index(v) for v in factor.name.split(":")]
    text = cells.labels[:, cols[0]].astype(str)
    for c in cols[1:]:
        text = np.char.add(np.char.add(text, ":"), cells.labels[:, c].astype(str))
    codes = pd.Index(np.asarray(factor.levels, dtype=object)).get_indexer(text.astype(object))
    if (codes < 0).any():
        raise DataError(f"cells with levels of '{factor.name}' the design does not know")
    return codes.astype(np.int64)


def level_sizes(data) -> list[np.ndarray]:
    """Rows per level of each factor of the design (float64, in the order of its levels)."""
    cells = data.cells
    return [np.bincount(factor_codes(cells, f), weights=cells.n).astype(np.float64)
            for f in data.design.factors]


def weighted_level_sizes(data) -> np.ndarray:
    """Each factor's size-weighted mean level size, sum over levels of n_l^2 / N.

    The design effect of a mean over all rows is 1 + sum_f vpc_f (this - 1) (Kish's, with
    one term per factor: two rows covary by tau_f^2 for every factor whose level they share).
    """
    N = float(data.cells.n.sum())
    return np.array([float((n * n).sum()) / N for n in level_sizes(data)])


def _centred_sums(cells: CellStats):
    """Global means, centred cross-products, and per-cell centred sums of [y, X]."""
    mean, m2 = cells.pooled
    sums = cells.n[:, None] * (cells.mean - mean)
    return mean, m2, sums


def nested_of(data):
    """:class:`NestedStats` of a nested (or one-factor) design.

    The cells are the finest factor's units; each level's parent pointers come from the cells'
    level codes, checked to nest.
    """
    cells, design = data.cells, data.design
    mean, m2, sums = _centred_sums(cells)
    k = len(design.terms)
    codes = [factor_codes(cells, f) for f in design.factors]
    bottom = codes[-1]
    if np.unique(bottom).size != cells.n_cells:  # cells finer than the finest factor: merge
        raise DataError(f"the cells of {cells.variables} do not match the finest factor "
                        f"'{design.factors[-1].name}'")
    order = np.argsort(bottom)
    sizes = tuple(f.m for f in design.factors)
    parents = [np.zeros(0, dtype=np.int64)]
    for d in range(1, len(codes)):
        parent = np.full(sizes[d], -1, dtype=np.int64)
        parent[codes[d]] = codes[d - 1]
        if (parent[codes[d]] != codes[d - 1]).any():
            raise DataError(f"factor '{design.factors[d].name}' is not nested in "
                            f"'{design.factors[d - 1].name}'")
        parents.append(parent)
    return NestedStats(
        names=tuple(f.name for f in design.factors), n_obs=cells.n_obs, y_mean=float(mean[0]),
        x_mean=mean[1:].copy(), yy=float(m2[0, 0]), xy=m2[1:, 0].copy(), xx=m2[1:, 1:].copy(),
        sum_y=float(sums[:, 0].sum()), sum_x=sums[:, 1:].sum(axis=0), level_sizes=sizes,
        parents=tuple(parents), cell_n=cells.n[order], cell_s=sums[order, 0],
        cell_t=sums[order, 1:].reshape(-1, k))


def strata_of(data):
    """:class:`StrataStats` of a balanced crossed design.

    Raises :class:`DataError` (no closed form) when the design is not balanced.
    """
    cells, design = data.cells, data.design
    V = len(cells.variables)
    levels, codes = [], []
    for v in range(V):
        c, u = pd.factorize(pd.Series(cells.labels[:, v], dtype=object), sort=True)
        codes.append(c.astype(np.int64))
        levels.append(int(u.size))
    full = math.prod(levels)
    n = cells.n
    if cells.n_cells != full or np.ptp(n) != 0:
        raise DataError(f"no closed form: the crossed design is unbalanced (every combination "
                        f"of {', '.join(cells.variables)} must appear equally often; "
                        f"{cells.n_cells} of {full} combinations present, "
                        f"{int(n.min())} to {int(n.max())} rows each); the latent forms "
                        f"(centred, noncentred) fit unbalanced crossed designs")
    rep = int(n[0])
    mean, m2, _ = _centred_sums(cells)
    c = cells.mean.shape[1]
    grid = np.empty((*levels, c))
    grid[tuple(codes)] = cells.mean - mean
    terms = [tuple(sorted(cells.variables.index(v) for v in f.name.split(":")))
             for f in design.factors]
    grams, strata, dims = [], [], []
    for mask in range(2 ** V):
        S = tuple(f for f in range(V) if mask >> f & 1)
        R = grid
        for f in range(V):  # P_S: average off S, centre along S
            R = R - R.mean(axis=f, keepdims=True) if f in S else R.mean(axis=f, keepdims=True)
        weight = rep * math.prod(levels[f] for f in range(V) if f not in S)
        R = R.reshape(-1, c)
        grams.append(weight * (R.T @ R))
        strata.append(S)
        dims.append(math.prod(levels[f] - 1 for f in S))
    grams.append(cells.m2.sum(axis=0))
    strata.append(None)
    dims.append(cells.n_obs - full)
    coef = np.zeros((len(strata), len(terms)))
    for s, S in enumerate(strata[:-1]):
        for t, T in enumerate(terms):
            if set(S) <= set(T):
                coef[s, t] = rep * math.prod(levels[f] for f in range(V) if f not in T)
    G = np.asarray(grams)
    return StrataStats(
        names=tuple(cells.variables), levels=tuple(levels), n_rep=rep, terms=tuple(terms),
        n_obs=cells.n_obs, y_mean=float(mean[0]), x_mean=mean[1:].copy(), ybar_c=0.0,
        xbar_c=np.zeros(mean.size - 1), strata=tuple(strata),
        dim=np.asarray(dims, dtype=np.float64), coef=coef, yy=G[:, 0, 0].copy(),
        xy=G[:, 1:, 0].copy(), xx=G[:, 1:, 1:].copy())


def unit_moments(data):
    """Per top-level unit: n, means and centred cross-products of [y, X].

    Units in the order of ``data.groups``, each merged from its cells (the between-cell part
    added exactly).
    """
    cells = data.cells
    top = factor_codes(cells, data.design.factors[0])
    L = data.design.factors[0].m
    n = np.bincount(top, weights=cells.n, minlength=L)
    mean = np.stack([np.bincount(top, weights=cells.n * cells.mean[:, j], minlength=L)
                     for j in range(cells.mean.shape[1])], axis=1) / n[:, None]
    dev = cells.mean - mean[top]
    mean = mean + np.stack([np.bincount(top, weights=cells.n * dev[:, j], minlength=L)
                            for j in range(cells.mean.shape[1])], axis=1) / n[:, None]
    dev = cells.mean - mean[top]
    m2 = np.zeros((L, *cells.m2.shape[1:]))
    np.add.at(m2, top, cells.m2 + cells.n[:, None, None] * dev[:, :, None] * dev[:, None, :])
    return n, mean, m2
