"""Sufficient statistics of a linear mixed model with random slopes on one grouping factor.

The model is y = X beta + Z b + e with one grouping factor g of L levels: row i of cluster l has
fixed-effects columns x_i (k of them) and random-effects columns z_i (q of them: the intercept and
the slope columns of ``(1 + x | g)``), b_l ~ N_q(0, V), e ~ N(0, sigma^2 I). Every likelihood,
REML/ML criterion and leave-one-cluster-out density of that model is a function of

- per cluster: Z_l'Z_l (L, q, q), Z_l'X_l (L, q, k), Z_l'y_l (L, q), X_l'X_l (L, k, k),
  X_l'y_l (L, k), y_l'y_l (L,), n_l (L,);
- globally: X'X, X'y, y'y, n (the sums of the per-cluster ones).

:func:`slope_stats` computes them from arrays in memory; :class:`SlopeStatsAccumulator` adds
chunks (rows of any clusters, in any order, labelled by the grouping column's values) and merges
accumulators (Dask partitions reduced in a tree), so chunked and distributed reading give the same
statistics up to the order of floating-point summation. Data layer: numpy only, no model code.

Decision: the cross-products are raw (not centred). Centring would need the global means before the
first chunk is read; the REML/ML criterion (``models.slopes_estimate``) reads y'y minus the fitted
part, which loses about log10(mean^2 / residual variance) digits of 16. A caller with a response
far from zero centres it (and its covariates) first, as the formula layer's stateful transforms do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from varcomp.models.errors import DataError

__all__ = ["SlopeStats", "SlopeStatsAccumulator", "slope_stats"]


@dataclass(frozen=True)
class SlopeStats:
    """Per-cluster cross-products of [Z, X, y] for one grouping factor (see the module).

    ``levels`` names the clusters in the order of the arrays' first axis (None when the
    statistics came from integer codes).
    """

    ZtZ: np.ndarray  # (L, q, q)
    ZtX: np.ndarray  # (L, q, k)
    Zty: np.ndarray  # (L, q)
    XtX_l: np.ndarray  # (L, k, k)
    Xty_l: np.ndarray  # (L, k)
    yty_l: np.ndarray  # (L,)
    n_l: np.ndarray  # (L,) int64
    levels: np.ndarray | None = None

    @property
    def L(self) -> int:
        """Number of clusters."""
        return int(self.ZtZ.shape[0])

    @property
    def q(self) -> int:
        """Number of random-effects columns."""
        return int(self.ZtZ.shape[1])

    @property
    def k(self) -> int:
        """Number of fixed-effects columns."""
        return int(self.ZtX.shape[2])

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.n_l.sum())

    @property
    def XtX(self) -> np.ndarray:
        """X'X over all rows."""
        return self.XtX_l.sum(axis=0)

    @property
    def Xty(self) -> np.ndarray:
        """X'y over all rows."""
        return self.Xty_l.sum(axis=0)

    @property
    def yty(self) -> float:
        """The sum of squares y'y over all rows."""
        return float(self.yty_l.sum())


def _arrays(y, X, Z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    if y.ndim != 1 or X.ndim != 2 or Z.ndim != 2 or not (len(y) == len(X) == len(Z)):
        raise DataError(f"slope statistics need y (n,), X (n, k), Z (n, q) of one length; got "
                        f"{y.shape}, {X.shape}, {Z.shape}")
    if not (np.isfinite(y).all() and np.isfinite(X).all() and np.isfinite(Z).all()):
        raise DataError("slope statistics: y, X and Z must be finite "
                        "(drop or impute missing rows first)")
    return y, X, Z


def _sums(y, X, Z, codes, L: int) -> tuple[np.ndarray, ...]:
    """The per-cluster cross-products of rows with integer ``codes`` in [0, L)."""
    q, k = Z.shape[1], X.shape[1]
    zz = np.zeros((L, q * q))
    zx = np.zeros((L, q * k))
    xx = np.zeros((L, k * k))
    # one row's outer products, summed by cluster (np.add.at: unbuffered, any order of rows)
    np.add.at(zz, codes, (Z[:, :, None] * Z[:, None, :]).reshape(len(y), q * q))
    np.add.at(zx, codes, (Z[:, :, None] * X[:, None, :]).reshape(len(y), q * k))
    np.add.at(xx, codes, (X[:, :, None] * X[:, None, :]).reshape(len(y), k * k))
    zy = np.zeros((L, q))
    xy = np.zeros((L, k))
    np.add.at(zy, codes, Z * y[:, None])
    np.add.at(xy, codes, X * y[:, None])
    yy = np.bincount(codes, weights=y * y, minlength=L)
    n = np.bincount(codes, minlength=L).astype(np.int64)
    return (zz.reshape(L, q, q), zx.reshape(L, q, k), zy, xx.reshape(L, k, k), xy, yy, n)


def slope_stats(y, X, Z, codes, n_levels: int | None = None, levels=None) -> SlopeStats:
    """The statistics of rows in memory: ``codes`` (n,) integers in [0, L) name each row's cluster.

    ``n_levels`` (default: max code + 1) keeps empty clusters (their statistics are zeros).
    """
    y, X, Z = _arrays(y, X, Z)
    codes = np.asarray(codes)
    if codes.shape != y.shape or not np.issubdtype(codes.dtype, np.integer) or (codes < 0).any():
        raise DataError("slope statistics: codes must be non-negative integers, one per row")
    L = int(codes.max()) + 1 if n_levels is None and len(codes) else int(n_levels or 0)
    if len(codes) and codes.max() >= L:
        raise DataError(f"slope statistics: a code {int(codes.max())} is not below n_levels = {L}")
    return SlopeStats(*_sums(y, X, Z, codes.astype(np.intp), L),
                      levels=None if levels is None else np.asarray(levels))


class SlopeStatsAccumulator:
    """Statistics added chunk by chunk, clusters named by their labels (merge with :meth:`merge`).

    ``add(y, X, Z, groups)`` takes one chunk's rows with ``groups`` the grouping column's values
    (sortable labels of one kind); a cluster may span chunks. The clusters are kept in sorted label
    order and merged with vectorised unions (no Python loop over clusters).
    """

    def __init__(self) -> None:
        self._labels: np.ndarray | None = None  # sorted, unique
        self._arrays: list[np.ndarray] = []  # the 7 per-cluster statistics, in label order

    def _check_shape(self, q: int, k: int) -> None:
        if self._labels is not None:
            have = (self._arrays[0].shape[1], self._arrays[1].shape[2])
            if have != (q, k):
                raise DataError(f"slope statistics: a chunk has (q, k) = {(q, k)}, "
                                f"earlier ones {have}")

    def add(self, y, X, Z, groups) -> SlopeStatsAccumulator:
        """Add one chunk of rows; returns self."""
        y, X, Z = _arrays(y, X, Z)
        self._check_shape(Z.shape[1], X.shape[1])
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise DataError("slope statistics: one group label per row is needed")
        if not len(y):
            return self
        labels, codes = np.unique(groups, return_inverse=True)
        self._absorb(labels, list(_sums(y, X, Z, codes.reshape(-1).astype(np.intp), len(labels))))
        return self

    def _absorb(self, labels: np.ndarray, arrays: list[np.ndarray]) -> None:
        if self._labels is None:
            self._labels, self._arrays = labels, arrays
            return
        union = np.union1d(self._labels, labels)
        mine = np.searchsorted(union, self._labels)
        theirs = np.searchsorted(union, labels)
        merged = []
        for a, b in zip(self._arrays, arrays, strict=True):
            out = np.zeros((len(union), *a.shape[1:]), dtype=a.dtype)
            out[mine] += a
            out[theirs] += b
            merged.append(out)
        self._labels, self._arrays = union, merged

    def merge(self, other: SlopeStatsAccumulator) -> SlopeStatsAccumulator:
        """Add another accumulator's statistics (a Dask tree reduction's combine); returns self."""
        if other._labels is not None:
            self._check_shape(other._arrays[0].shape[1], other._arrays[1].shape[2])
            self._absorb(other._labels, other._arrays)
        return self

    def result(self) -> SlopeStats:
        """The statistics, clusters in sorted label order."""
        if self._labels is None:
            raise DataError("slope statistics: no rows were added")
        return SlopeStats(*self._arrays, levels=self._labels)
