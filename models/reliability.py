r"""Rater reliability from variance components: Shrout-Fleiss ICCs, G and D studies.

Pure numpy functions of variance-component draws (arrays of posterior draws, or one number
each for the REML plug-in). A design's components are named by the facets they involve:
``target``, ``rater``, ``occasion``, their interactions ``target:rater``, ... and ``residual``
(which involves every facet: with one rating per cell the highest interaction is confounded
with it, as in Shrout & Fleiss 1979).

Coefficients (Brennan 2001, *Generalizability Theory*, ch. 4; Shrout & Fleiss 1979, *Psychol.
Bull.* 86:420; McGraw & Wong 1996, *Psychol. Methods* 1:30). For a D study with n' raters (and
n'_o occasions), each component c other than ``target`` is divided by the product of the n' of
its non-target facets:

.. math::
    \sigma^2_\delta = \sum_{c \ni target} \sigma^2_c / n'_c,\qquad
    \sigma^2_\Delta = \sum_{c \ne target} \sigma^2_c / n'_c,\qquad
    E\rho^2 = \frac{\sigma^2_t}{\sigma^2_t + \sigma^2_\delta},\qquad
    \Phi = \frac{\sigma^2_t}{\sigma^2_t + \sigma^2_\Delta}

For the two-way target x rater design: ICC(A,1) = ICC(2,1) = Phi(n'=1) (absolute agreement,
raters random), ICC(C,1) = ICC(3,1) = E rho^2(n'=1) (consistency, raters fixed), and the
k-average forms are the same coefficients at n'=k. ICC(1) and ICC(1,k) come from the one-way
model (each target rated by its own raters): sigma_t^2 / (sigma_t^2 + sigma_w^2 / k).
On a complete balanced table with non-negative estimates the REML components equal the ANOVA
ones, so these plug-in forms equal the published mean-square formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["FACETS", "MEANINGS", "d_study", "design_k", "facets_of", "g_study",
           "icc_forms", "icc_oneway", "smallest_n"]

FACETS = ("target", "rater", "occasion")
"""The facets a reliability design may have (``target`` is the object of measurement)."""

MEANINGS = {
    "ICC(1)": "Agreement of one rating when each target has its own raters (one-way model: "
              "rater differences count as error).",
    "ICC(1,k)": "Reliability of the mean of k ratings when each target has its own raters.",
    "ICC(A,1)": "ICC(2,1), absolute agreement of one rating, raters a random sample: a "
                "rater's leniency counts as error.",
    "ICC(A,k)": "ICC(2,k), absolute agreement of the mean of k random raters.",
    "ICC(C,1)": "ICC(3,1), consistency of one rating, raters fixed: only the targets' ranking "
                "matters, a rater's constant offset does not count as error.",
    "ICC(C,k)": "ICC(3,k), consistency of the mean of the same k fixed raters.",
}
"""One sentence per coefficient: what it measures (agreement or consistency; raters random or
fixed)."""


def facets_of(component: str, design: tuple[str, ...]) -> frozenset[str]:
    """The facets of ``component`` (``residual``: all of ``design``'s)."""
    if component == "residual":
        return frozenset(design)
    parts = frozenset(component.split(":"))
    unknown = parts - set(design)
    if unknown:
        raise ValueError(f"component {component!r} names facets not in the design {design}")
    return parts


def _design(components: Mapping[str, object]) -> tuple[str, ...]:
    found = {f for c in components if c != "residual" for f in c.split(":")}
    return tuple(f for f in FACETS if f in found)


def _arrays(components: Mapping[str, object]) -> dict[str, np.ndarray]:
    out = {c: np.asarray(v, dtype=np.float64) for c, v in components.items()}
    if "target" not in out or "residual" not in out:
        raise ValueError("the components need 'target' and 'residual'")
    return out


def g_study(components: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Each component's share of the total variance (same shapes as the components)."""
    v = _arrays(components)
    total = sum(v.values())
    return {c: x / total for c, x in v.items()}


def d_study(components: Mapping[str, object], n: Mapping[str, float]) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """(E rho^2, Phi) for a D study with ``n[facet]`` levels of each non-target facet.

    Facets not in ``n`` are taken at 1. Returns the relative (generalizability) and absolute
    (dependability) coefficients, each with the components' shape.
    """
    v = _arrays(components)
    design = _design(v)
    rel = np.zeros_like(v["target"])
    ab = np.zeros_like(v["target"])
    for c, x in v.items():
        if c == "target":
            continue
        fs = facets_of(c, design)
        denom = math.prod(float(n.get(f, 1)) for f in fs if f != "target")
        ab = ab + x / denom
        if "target" in fs:
            rel = rel + x / denom
    t = v["target"]
    return t / (t + rel), t / (t + ab)


def icc_oneway(s2_target, s2_within, k: float = 1) -> np.ndarray:
    """ICC(1,k) of the one-way model: sigma_t^2 / (sigma_t^2 + sigma_w^2 / k)."""
    t = np.asarray(s2_target, dtype=np.float64)
    return t / (t + np.asarray(s2_within, dtype=np.float64) / k)


def icc_forms(components: Mapping[str, object], k: float,
              oneway: tuple[object, object] | None = None) -> dict[str, np.ndarray]:
    """The Shrout-Fleiss / McGraw-Wong coefficients for single ratings and k-rating means.

    ``components``: the two-way (or three-facet: then one occasion) design's variances;
    ``oneway``: (sigma_t^2, sigma_w^2) of the one-way model, for ICC(1) and ICC(1,k).
    """
    out = {}
    if oneway is not None:
        out["ICC(1)"] = icc_oneway(*oneway, 1)
        out["ICC(1,k)"] = icc_oneway(*oneway, k)
    c1, a1 = d_study(components, {"rater": 1})
    ck, ak = d_study(components, {"rater": k})
    out.update({"ICC(A,1)": a1, "ICC(A,k)": ak, "ICC(C,1)": c1, "ICC(C,k)": ck})
    return out


def design_k(ratings_per_target) -> float:
    """The design's k: ratings per target if constant, else their harmonic mean.

    The harmonic mean is the usual n' of an unbalanced G study (Brennan 2001, sec. 7.1): the
    error variance of a target's mean scales with the mean of 1/n_t.
    """
    r = np.asarray(ratings_per_target, dtype=np.float64)
    if r.size == 0 or np.any(r < 1):
        raise ValueError("every target needs at least one rating")
    if np.all(r == r[0]):
        return float(r[0])
    return float(r.size / np.sum(1.0 / r))



def smallest_n(components: Mapping[str, object], target: float, prob: float, *,
               facet: str = "rater", kind: str = "phi", fixed: Mapping[str, float] | None = None,
               n_max: int = 1000) -> int | None:
    """The smallest n' of ``facet`` at which P(coefficient >= target) >= prob, or None.

    ``kind``: ``phi`` (absolute) or ``erho2`` (relative); ``fixed``: the other facets' n'.
    The probability is the share of draws (a single value: 0 or 1). The coefficients grow with
    n', so the first n' that qualifies is found by bisection up to ``n_max``.
    """
    if kind not in ("phi", "erho2"):
        raise ValueError(f"kind must be 'phi' or 'erho2', got {kind!r}")
    pick = 1 if kind == "phi" else 0

    def ok(n: int) -> bool:
        coef = d_study(components, {**(fixed or {}), facet: n})[pick]
        return float(np.mean(np.asarray(coef) >= target)) >= prob

    if not ok(n_max):
        return None
    lo, hi = 1, n_max
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
