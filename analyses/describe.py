"""``varcomp describe``: cluster sizes, the one-way ANOVA and moment estimates of loaded data.

:func:`describe` computes them (plain data) and :func:`text` writes the command's lines; the
command line (:func:`analyses.cli.cmd_describe`) prints that text and the Python API
(:func:`varcomp.describe`) returns a :class:`Description` holding both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Description", "describe", "text"]


def describe(data) -> dict:
    """Sizes, dropped rows, warnings and each response's one-way ANOVA of ``data``."""
    sizes = np.asarray(data.sizes)
    uniq, counts = np.unique(sizes, return_counts=True)
    return {
        "source": data.source, "group": data.group_name, "responses": list(data.responses),
        "n_obs": int(data.n_obs), "n_groups": int(data.n_groups),
        "dropped_rows": int(data.dropped_rows),
        "sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                  "max": int(sizes.max()), "balanced": bool(uniq.size == 1),
                  "counts": {int(u): int(c) for u, c in zip(uniq, counts, strict=True)}},
        "singletons": int((sizes == 1).sum()),
        "warnings": list(data.warnings),
        # a wholly missing response has no ANOVA (None); scale_problem names float underflow
        "anova": {r: (dict(data.anova(k)) if data.stats.n[:, k].any() else None)
                  for k, r in enumerate(data.responses)},
        "problems": {r: data.scale_problem(k) for k, r in enumerate(data.responses)
                     if data.stats.n[:, k].any()},
    }


def _g(x: float, width: int, spec: str) -> str:
    """A number for the ANOVA table; '-' where it is undefined (never 'nan')."""
    return f"{x:>{width}{spec}}" if math.isfinite(x) else f"{'-':>{width}}"


def text(d: dict) -> str:
    """The lines ``varcomp describe`` prints for :func:`describe`'s ``d``."""
    s = d["sizes"]
    dist = ", ".join(f"{u}x{c}" for u, c in s["counts"].items())
    lines = [f"data: {d['source']}   group: {d['group']}   response: {', '.join(d['responses'])}",
             f"N = {d['n_obs']} rows, L = {d['n_groups']} clusters, rows dropped: "
             f"{d['dropped_rows']}",
             f"cluster sizes: min {s['min']}, median {s['median']:g}, max {s['max']} "
             f"({'balanced' if s['balanced'] else 'unbalanced'}; size x count: "
             f"{dist if len(s['counts']) <= 12 else '...'})",
             f"singletons: {d['singletons']}"]
    lines += [f"note: {w}" for w in d["warnings"]]
    for r, a in d["anova"].items():
        if a is None:
            lines += ["", f"{r}: no observed value (drop it from --response)"]
            continue
        lines += ["", f"one-way ANOVA of {r}",
                  f"  {'source':<8} {'SS':>14} {'df':>6} {'mean square':>14} {'F':>9}",
                  f"  {'between':<8} {_g(a['ss_between'], 14, '.6g')} {a['df_between']:>6g} "
                  f"{_g(a['ms_between'], 14, '.6g')} {_g(a['F'], 9, '.4g')}",
                  f"  {'within':<8} {_g(a['ss_within'], 14, '.6g')} {a['df_within']:>6g} "
                  f"{_g(a['ms_within'], 14, '.6g')}"]
        problem = d.get("problems", {}).get(r)
        if problem or not all(math.isfinite(a[key]) for key in ("n0", "tau2", "sigma2", "icc")):
            why = problem or (
                "every cluster has a single row: no within-cluster mean square"
                if a["df_within"] <= 0 else "one cluster: no between-cluster mean square"
                if a["df_between"] <= 0 else "the response is constant: no variance")
            lines.append(f"  method of moments: undefined ({why})")
            continue
        lines.append(f"  method of moments (n0 = {a['n0']:.4g}): tau^2 = {a['tau2']:.6g}, "
                     f"sigma^2 = {a['sigma2']:.6g}, ICC = {a['icc']:.4f}")
        if a["truncated"]:
            lines.append("  note: MSB < MSW, so the moment estimate of tau^2 is negative and "
                         "was truncated at 0 (the data show no between-cluster variance beyond "
                         "noise)")
    return "\n".join(lines)


@dataclass(frozen=True)
class Description:
    """What ``varcomp describe`` shows, for Python: ``info`` (plain data) and ``anova`` (a table).

    Its ``repr`` is the command's text.
    """

    info: dict

    @property
    def anova(self):
        """The one-way ANOVA and moment estimates, one row per response (a pandas DataFrame)."""
        import pandas as pd

        rows = {r: a for r, a in self.info["anova"].items() if a is not None}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "response"
        return frame

    def __repr__(self) -> str:
        return text(self.info)
