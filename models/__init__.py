"""The statistics of varcomp: data layer, priors, builders, densities, simulators, checks.

``PARAMETERISATIONS`` maps each parameterisation's name to its builder
``builder(data, *, priors=None) -> pm.Model``; the checks, the CLI and the report loop over it.
PyMC is imported lazily, so ``models.data`` and ``models.density`` stay light.
"""

from __future__ import annotations

from models.data import DATASETS, ClusteredData, DataError, load
from models.estimate import PointEstimate, fit_ml, fit_reml

__all__ = [
    "DATASETS",
    "PARAMETERISATIONS",
    "ClusteredData",
    "DataError",
    "PointEstimate",
    "build",
    "fit_ml",
    "fit_reml",
    "load",
]

NAMES = ("centred", "noncentred", "marginal", "sufficient")


def build(name: str, data: ClusteredData, *, priors=None):
    """Build parameterisation ``name`` for ``data`` (univariate or multivariate)."""
    if name not in NAMES:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(NAMES)}")
    if data.p == 1:
        from models import univariate as mod
    else:
        from models import multivariate as mod  # type: ignore[no-redef]
    return getattr(mod, f"build_{name}")(data, priors=priors)


def _builder(name: str):
    def builder(data: ClusteredData, *, priors=None):
        return build(name, data, priors=priors)

    builder.__name__ = f"build_{name}"
    builder.__doc__ = f"Build the '{name}' parameterisation (see models.univariate)."
    return builder


PARAMETERISATIONS = {name: _builder(name) for name in NAMES}
