"""What every check returns, and the one way the checks evaluate a model's log density.

A check returns a verdict, the numbers behind it and a summary; log densities are evaluated at
constrained values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["AGREES", "DISAGREES", "UNRELIABLE", "CheckResult"]

AGREES, UNRELIABLE, DISAGREES = "agrees", "unreliable here", "DISAGREES"


@dataclass
class CheckResult:
    """The outcome of a check: a verdict, the numbers behind it and a short summary.

    ``details`` holds machine-readable extras (per-form status, maxima) for reports and JSON.
    """

    name: str
    passed: bool
    table: pd.DataFrame
    text: str
    details: dict = field(default_factory=dict)

    @property
    def verdicts(self) -> dict[str, str]:
        """Per-form verdict text (agrees / unreliable here / DISAGREES), when the check has one."""
        status = self.details.get("status", {})
        return {k: (v if isinstance(v, str) else str(v.get("status", v)))
                for k, v in status.items()}


def constrained_logp(model, mode: str | None = None, *,
                      prior_names: Sequence[str] = ("mu", "tau", "sigma"),
                      ) -> tuple[Callable[[dict], tuple], list[str]]:
    """Compile ``model``'s log density (no Jacobian) as a function of constrained values.

    Each value variable is replaced by the transform's ``forward`` of a new input, so the
    function takes ``{"mu": .., "tau": .., ...}`` on the model's own scale. (The transforms of
    :mod:`models.transforms`, PyMC's log transform and its LKJ-Cholesky transform use no RV
    inputs in ``forward``.) The function returns ``(total, prior)``: the whole log density and
    the terms of ``prior_names``. Each term is summed separately and the terms are added in
    Python (PyTensor's Python linker cannot add more than 32 terms in one Elemwise).
    """
    import pytensor
    from pytensor.graph.replace import graph_replace

    names, inputs, replace = [], [], {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        x = value.type(name=rv.name)
        tr = model.rvs_to_transforms.get(rv)
        replace[value] = x if tr is None else tr.forward(x)
        names.append(rv.name)
        inputs.append(x)
    prior_vars = [model[v] for v in prior_names]
    terms = [t.sum() for t in model.logp(jacobian=False, sum=False)]
    prior_terms = [t.sum() for t in model.logp(vars=prior_vars, jacobian=False, sum=False)]
    outs = graph_replace(terms + prior_terms, replace, strict=False)
    fn = pytensor.function(inputs, outs, on_unused_input="ignore", mode=mode)

    def f(point: dict) -> tuple[float, float]:
        out = fn(*[np.asarray(point[n], dtype=np.float64) for n in names])
        return float(sum(out[:len(terms)])), float(sum(out[len(terms):]))

    return f, names
