r"""Cluster-trial planning from an ICC: design effects, clusters needed, assurance.

Formulas (each a function below):

- design effect with mean cluster size m and coefficient of variation CV of the sizes
  (Eldridge, Ashby & Kerry 2006, *Int. J. Epidemiol.* 35:1292; CV = 0 gives Kish's
  1 + (m - 1) ICC): :math:`DE = 1 + ((1 + CV^2)\,m - 1)\,ICC`;
- individually randomised sample size per arm for a standardised difference d, two-sided
  alpha and power 1 - beta (normal approximation): :math:`n = 2 (z_{1-\alpha/2} + z_{1-\beta})^2
  / d^2`; clusters per arm :math:`\lceil n\,DE / m \rceil` (Donner & Klar 2000, ch. 5);
- a mean to a given standard error: with k clusters of mean size m and outcome sd s,
  :math:`SE^2 = s^2\,DE/(k\,m)`, so :math:`k = \lceil s^2\,DE / (m\,SE^2) \rceil`.

Given draws of the ICC (a posterior or a prior), the *assurance* of a design with k clusters is
the share of draws under which k clusters reach the target (O'Hagan, Stevens & Campbell 2005,
*Pharm. Stat.* 4:187): P(k_needed(ICC) <= k), a non-decreasing curve in k.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["assurance", "clusters_for_se", "clusters_per_arm", "design_effect",
           "n_individual", "needed", "smallest_assured"]


def design_effect(icc, m: float, cv: float = 0.0):
    """Eldridge's design effect 1 + ((1 + CV^2) m - 1) ICC (Kish's for CV = 0)."""
    return 1.0 + ((1.0 + cv * cv) * m - 1.0) * np.asarray(icc, dtype=np.float64)


def n_individual(d: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Participants per arm of an individually randomised two-arm trial, unrounded."""
    z = NormalDist().inv_cdf
    return 2.0 * (z(1.0 - alpha / 2.0) + z(power)) ** 2 / (d * d)


def clusters_per_arm(icc, m: float, d: float, *, cv: float = 0.0, alpha: float = 0.05,
                     power: float = 0.8):
    """Clusters per arm, ceil(n DE / m), for each ICC value (an int array, or an int)."""
    k = np.ceil(n_individual(d, alpha, power) * design_effect(icc, m, cv) / m - 1e-9)
    return int(k) if np.ndim(k) == 0 else k.astype(np.int64)


def clusters_for_se(icc, m: float, se: float, sd: float, *, cv: float = 0.0):
    """Clusters for the mean's standard error to be at most ``se``: ceil(sd^2 DE / (m se^2))."""
    k = np.ceil(sd * sd * design_effect(icc, m, cv) / (m * se * se) - 1e-9)
    return int(k) if np.ndim(k) == 0 else k.astype(np.int64)


def needed(icc, m: float, *, cv: float = 0.0, d: float | None = None, alpha: float = 0.05,
           power: float = 0.8, se: float | None = None, sd: float = 1.0):
    """Clusters needed (per arm for a comparison ``d``; in all for a standard error ``se``)."""
    if (d is None) == (se is None):
        raise ValueError("give either an effect size d or a standard error se")
    if d is not None:
        return clusters_per_arm(icc, m, d, cv=cv, alpha=alpha, power=power)
    return clusters_for_se(icc, m, se, sd, cv=cv)


def assurance(k_needed, ks) -> np.ndarray:
    """For each cluster count in ``ks``: the share of draws whose k_needed is at most it."""
    kn = np.sort(np.asarray(k_needed).ravel())
    return np.searchsorted(kn, np.asarray(ks), side="right") / kn.size


def smallest_assured(k_needed, level: float) -> int:
    """The fewest clusters whose assurance is at least ``level`` (the draws' level-quantile)."""
    kn = np.sort(np.asarray(k_needed).ravel())
    i = max(int(math.ceil(level * kn.size)) - 1, 0)
    return int(kn[i])
