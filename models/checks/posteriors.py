"""Posterior agreement: means and 5/50/95% quantiles within Monte Carlo error (abs(z) <= 4).

Of every pair of fits, and against a reference posterior when the family has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from varcomp.models.checks.base import AGREES, DISAGREES, UNRELIABLE, CheckResult
from varcomp.models.reference import PROBS, STATS, ReferencePosterior
from varcomp.models.sampling import Fit, diagnose

__all__ = ["compare_posteriors"]


def _draws(idata, var: str) -> dict[str, np.ndarray]:
    """``{label: (chain, draw) array}`` for ``var``, flattening any extra dims (``mu[a]``).

    A matrix over (outcome, outcome_bis) is symmetric: only its upper triangle is kept
    (``V[a,b]`` for a <= b, as ``summary.json`` names them), and for a correlation matrix only
    the off-diagonal (its diagonal is 1).
    """
    post = idata.posterior
    if var not in post:
        return {}
    da = post[var]
    extra = [d for d in da.dims if d not in ("chain", "draw")]
    if not extra:
        return {var: da.values}
    if len(extra) == 2 and extra[1].endswith("_bis"):
        a, b = extra
        labels = list(da[a].values)
        first = 1 if var.startswith("corr") else 0
        return {f"{var}[{la},{labels[j]}]": da.isel({a: i, b: j}).values
                for i, la in enumerate(labels) for j in range(i + first, len(labels))}
    flat = da.stack(_elem=extra)
    return {f"{var}[{','.join(map(str, np.atleast_1d(lab)))}]": flat.isel(_elem=i).values
            for i, lab in enumerate(flat["_elem"].values)}


def _estimates(x: np.ndarray) -> dict[str, tuple[float, float]]:
    """``{stat: (estimate, MCSE)}`` for the mean and the 5/50/95% quantiles (ArviZ MCSE)."""
    import arviz as az
    import xarray as xr

    ds = xr.Dataset({"x": (("chain", "draw"), np.asarray(x, dtype=np.float64))})
    out = {"mean": (float(x.mean()), float(az.mcse(ds, method="mean")["x"]))}
    for stat, p in PROBS.items():
        out[stat] = (float(np.quantile(x, p)),
                     float(az.mcse(ds, method="quantile", prob=p)["x"]))
    return out


def _z(diff: float, se: float) -> float:
    if se > 0 and np.isfinite(se):
        return diff / se
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def compare_posteriors(
    fits: Mapping[str, Fit] | Sequence[Fit],
    reference: ReferencePosterior | None = None,
    z_max: float = 4.0,
    *,
    var_names: Sequence[str],
) -> CheckResult:
    r"""Posterior means and 5/50/95% quantiles agree between fits within Monte Carlo error.

    ``var_names`` is the family's ``compare_vars`` (one-way: mu, tau, sigma, icc; multivariate:
    mu[k], the upper triangles of V and Sigma, icc[k], and the off-diagonal corr_between and
    corr_within). For each pair of fits and
    each of ``var_names`` (elements of vectors and matrices separately),
    :math:`z = (\hat\theta_a - \hat\theta_b) / \sqrt{\mathrm{mcse}_a^2 + \mathrm{mcse}_b^2}`
    (ArviZ MCSE: ``method="mean"``, or ``"quantile"`` at the quantile's probability); against
    the ``reference`` the denominator is the fit's MCSE alone. With abs(z) <= 4 about 0.1% of
    ~16 comparisons of one pair falsely fail. Each comparison falsely fails with probability
    6.3e-5 if the MCSEs are exact (two-sided normal tail beyond 4); for p = 2 outcomes one pair
    makes 12 x 4 = 48 comparisons (0.3%), and the four forms' six pairs 288 (about 2%), somewhat
    more in practice since the MCSEs are themselves estimated. A fit failing the diagnostics
    gate (:func:`models.sampling.diagnose` on ``var_names``) is never judged: its rows say
    "not judged" and its status is "unreliable here" with its problems.

    Returns
    -------
    CheckResult
        ``passed`` iff no reliable comparison has abs(z) > ``z_max``. ``table``: one row per
        (a, b, param, stat) with est_a, est_b, diff, se, z and verdict. ``details["status"]``:
        per form "agrees" / "unreliable here" / "DISAGREES" (or "not compared").
    """
    if not isinstance(fits, Mapping):
        fits = {f.name: f for f in fits}
    diags = {nm: (f.diagnostics if f.diagnostics else diagnose(f.idata, var_names))
             for nm, f in fits.items()}
    reliable = {nm: bool(d.get("ok", False)) for nm, d in diags.items()}
    est: dict[str, dict[str, dict]] = {}
    for nm, f in fits.items():
        est[nm] = {}
        for var in var_names:
            for label, x in _draws(f.idata, var).items():
                est[nm][label] = _estimates(x)
    names = list(fits)
    rows = []

    def add(a, b, label, stat, ea, eb, se_a, se_b, judged):
        diff = ea - eb
        se = math.sqrt(se_a**2 + se_b**2)
        z = _z(diff, se)
        verdict = ("ok" if abs(z) <= z_max else "DIFFERS") if judged else "not judged"
        rows.append({"a": a, "b": b, "param": label, "stat": stat, "est_a": ea, "est_b": eb,
                     "diff": diff, "se": se, "z": z, "verdict": verdict})

    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for label in [lab for lab in est[a] if lab in est[b]]:
                for stat in STATS:
                    (ea, sa), (eb, sb) = est[a][label][stat], est[b][label][stat]
                    add(a, b, label, stat, ea, eb, sa, sb, reliable[a] and reliable[b])
        if reference is not None:
            for label in [lab for lab in est[a] if lab in reference.summary.index]:
                for stat in STATS:
                    ea, sa = est[a][label][stat]
                    add(a, "reference", label, stat, ea, reference.value(label, stat), sa, 0.0,
                        reliable[a])
    table = pd.DataFrame(rows, columns=["a", "b", "param", "stat", "est_a", "est_b", "diff",
                                        "se", "z", "verdict"])
    status, lines = {}, []
    for nm in names:
        mine = table[((table.a == nm) | (table.b == nm)) & (table.verdict != "not judged")]
        bad = mine[mine.verdict == "DIFFERS"]
        if not reliable[nm]:
            status[nm] = UNRELIABLE
            lines.append(f"{nm}: {UNRELIABLE} ({'; '.join(diags[nm]['problems'])})")
        elif len(bad):
            status[nm] = DISAGREES
            worst = bad.loc[bad.z.abs().idxmax()]
            other = worst.b if worst.a == nm else worst.a
            lines.append(f"{nm}: {DISAGREES} ({len(bad)} of {len(mine)} comparisons beyond "
                         f"|z| {z_max:g}; worst z {worst.z:+.1f} vs {other} on "
                         f"{worst.param} {worst.stat})")
        elif len(mine) == 0:
            status[nm] = "not compared"
            lines.append(f"{nm}: not compared (no other reliable fit or reference)")
        else:
            status[nm] = AGREES
            lines.append(f"{nm}: {AGREES} (max |z| {mine.z.abs().max():.1f} over {len(mine)} "
                         f"comparisons)")
    judged = table[table.verdict != "not judged"]
    passed = bool((judged.verdict != "DIFFERS").all())
    vs_ref = {nm: bool(reference is not None and reliable[nm] and len(
        table[(table.a == nm) & (table.b == "reference")]) > 0 and (table[
            (table.a == nm) & (table.b == "reference")].verdict == "ok").all()) for nm in names}
    return CheckResult("compare_posteriors", passed, table, "\n".join(lines),
                       {"status": status, "reliable": reliable, "agrees_with_reference": vs_ref,
                        "problems": {nm: list(d.get("problems", [])) for nm, d in diags.items()},
                        "max_abs_z": float(judged.z.abs().max()) if len(judged) else 0.0,
                        "z_max": z_max})
