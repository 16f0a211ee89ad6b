"""Per-group sufficient statistics of the one-way model (counts, means, within sums of squares)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GroupStats", "group_stats"]


@dataclass(frozen=True)
class GroupStats:
    """Per-group sufficient statistics of the one-way model, for each response column.

    Attributes
    ----------
    n : (L, p) int
        Observed count per group and response (equal across columns without missing values).
    mean : (L, p) float
        Group means (NaN where a group has no observation of a response).
    ss : (L, p) float
        Within-group sums of squares about the group mean.
    scatter : (p, p) float
        Pooled within-group scatter matrix W = sum_l sum_j (x_lj - xbar_l)(x_lj - xbar_l)^T over
        rows whose outcomes are all observed (the diagonal of a univariate fit is ``ss.sum()``).
    """

    n: np.ndarray
    mean: np.ndarray
    ss: np.ndarray
    scatter: np.ndarray

    @property
    def n_groups(self) -> int:
        """Number of groups L."""
        return int(self.n.shape[0])

    def column(self, k: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(n, mean, ss)`` of response ``k`` over the groups that observe it."""
        keep = self.n[:, k] > 0
        return self.n[keep, k].astype(np.float64), self.mean[keep, k], self.ss[keep, k]

    @staticmethod
    def combine(a: GroupStats, b: GroupStats) -> GroupStats:
        """Merge statistics of two disjoint row sets over the same groups (Chan et al. 1979).

        The scatter matrix is merged for complete rows only through its own update; this method
        serves the univariate (diagonal) statistics used by chunked reading.
        """
        n = a.n + b.n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where((a.n > 0) & (b.n > 0), b.mean - a.mean, 0.0)
            wb = np.where(n > 0, b.n / np.maximum(n, 1), 0.0)
            mean = np.where(a.n > 0, a.mean, 0.0) + np.where(b.n > 0, delta * wb, 0.0)
            mean = np.where((a.n == 0) & (b.n > 0), b.mean, mean)
            mean = np.where(n == 0, np.nan, mean)
            ss = (np.nan_to_num(a.ss) + np.nan_to_num(b.ss)
                  + delta**2 * np.where(n > 0, a.n * b.n / np.maximum(n, 1), 0.0))
        return GroupStats(n=n, mean=mean, ss=ss, scatter=a.scatter + b.scatter)


def group_stats(y: np.ndarray, codes: np.ndarray, n_groups: int) -> GroupStats:
    """Sufficient statistics in one vectorised pass (no Python loop over groups).

    Stable by construction: the corrected two-pass formula sum (x - xbar)^2 (never
    sum x^2 - n xbar^2), so an offset of 1e9 leaves the within-group sums of squares unchanged
    to the rounding of the data themselves.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    codes = np.asarray(codes, dtype=np.int64)
    N, p = y.shape
    obs = np.isfinite(y)
    n = np.zeros((n_groups, p), dtype=np.int64)
    mean = np.full((n_groups, p), np.nan)
    ss = np.zeros((n_groups, p))
    for k in range(p):  # loop over responses (p is small), never over groups
        o = obs[:, k]
        c, v = codes[o], y[o, k]
        nk = np.bincount(c, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            # sum of v / n_l, not sum of v: no overflow for values up to 1e300
            m = np.bincount(c, weights=v / nk[c], minlength=n_groups)
            # corrected two-pass (Chan, Golub & LeVeque 1983): add back the mean residual, so
            # a large common offset costs no accuracy in the mean or in sum (x - xbar)^2
            m = m + np.bincount(c, weights=v - m[c], minlength=n_groups) / nk
        r = v - m[c]
        n[:, k] = nk
        with np.errstate(over="ignore", under="ignore"):  # refused by require_identifiable
            ss[:, k] = np.bincount(c, weights=r * r, minlength=n_groups)
        mean[:, k] = np.where(nk > 0, m, np.nan)
    complete = obs.all(axis=1)
    if complete.any():
        resid = y[complete] - mean[codes[complete]]
        # group means of complete rows can differ from per-column means when data are missing
        if not obs.all():
            cc = codes[complete]
            nc = np.bincount(cc, minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                mc = np.stack([np.bincount(cc, weights=resid[:, k], minlength=n_groups)
                               for k in range(p)], axis=1) / nc[:, None]
            resid = resid - mc[cc]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            scatter = resid.T @ resid
    else:
        scatter = np.zeros((p, p))
    return GroupStats(n=n, mean=mean, ss=ss, scatter=scatter)
