"""Seeded simulators of the notes' one-way model (and, for p > 1, its multivariate form)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from varcomp.models.data import ClusteredData
from varcomp.models.errors import DataError

__all__ = ["Simulated", "simulate_univariate", "cluster_sizes"]


@dataclass(frozen=True)
class Simulated:
    """Simulated data: the frame (columns ``group``, response(s)), the true effects and params.

    ``formula`` and ``family`` (the GLMM and slopes simulators, :mod:`models.simulate_glmm`)
    say how :meth:`data` reads the frame.
    """

    frame: pd.DataFrame
    effects: np.ndarray
    params: dict
    formula: str | None = None
    family: str | None = None

    def data(self) -> ClusteredData:
        """The frame as :class:`ClusteredData` (through ``formula`` and ``family`` where set)."""
        if self.formula is not None:
            from varcomp.models.design import from_formula

            return from_formula(self.frame, self.formula, source="<simulated>",
                                family=self.family)
        resp = [c for c in self.frame.columns if c != "group"]
        return ClusteredData.from_frame(self.frame, group="group",
                                        response=resp[0] if len(resp) == 1 else resp,
                                        source="<simulated>")


def cluster_sizes(L: int, n: int | Sequence[int]) -> np.ndarray:
    """Validated cluster sizes: one size for all L clusters, or one per cluster."""
    if not (isinstance(L, (int, np.integer)) and L >= 1):
        raise DataError(f"the number of clusters L must be a positive integer, got {L!r}")
    sizes = np.full(int(L), n, dtype=np.int64) if np.ndim(n) == 0 else np.asarray(n)
    if sizes.shape != (int(L),):
        raise DataError(f"give one cluster size or exactly L = {L} sizes, got {np.shape(n)}")
    if not np.issubdtype(sizes.dtype, np.integer):
        if not np.all(np.mod(sizes, 1) == 0):
            raise DataError("cluster sizes must be whole numbers")
        sizes = sizes.astype(np.int64)
    if (sizes < 1).any():
        raise DataError(f"cluster sizes must be >= 1, got min {int(sizes.min())}")
    return sizes


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and np.isfinite(value)):
        raise DataError(f"{name} must be a positive finite standard deviation, got {value}")
    return value


def simulate_univariate(
    L: int,
    n: int | Sequence[int],
    *,
    mu: float = 0.0,
    tau: float = 1.0,
    sigma: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> Simulated:
    """Simulate X_lj = mu + M_l + e_lj, M_l ~ N(0, tau^2), e_lj ~ N(0, sigma^2).

    Parameters
    ----------
    L : int
        Number of clusters.
    n : int or sequence of int
        One cluster size, or one size per cluster (each >= 1).
    mu, tau, sigma : float
        Grand mean, between- and within-cluster standard deviations (tau, sigma > 0).
    rng : numpy Generator or seed

    Returns
    -------
    Simulated
        ``frame`` with columns ``group`` (labels ``g1``..``gL``) and ``y``; ``effects`` M_l.
    """
    sizes = cluster_sizes(L, n)
    tau, sigma = _positive("tau", tau), _positive("sigma", sigma)
    if not np.isfinite(float(mu)):
        raise DataError(f"mu must be a finite number, got {mu}")
    rng = np.random.default_rng(rng)
    effects = rng.normal(0.0, tau, size=sizes.size)
    codes = np.repeat(np.arange(sizes.size), sizes)
    y = mu + effects[codes] + rng.normal(0.0, sigma, size=codes.size)
    labels = np.array([f"g{i + 1}" for i in range(sizes.size)], dtype=object)
    frame = pd.DataFrame({"group": labels[codes], "y": y})
    return Simulated(frame, effects, {"mu": mu, "tau": tau, "sigma": sigma, "sizes": sizes})
