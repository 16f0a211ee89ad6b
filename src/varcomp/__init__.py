"""varcomp: Bayesian variance components for clustered data, on PyMC and ArviZ.

One import name holds everything: :mod:`varcomp.models` (the statistics: data, priors, model
families and their forms, densities, checks) and :mod:`varcomp.analyses` (fitting, reports, the
``varcomp`` command line). The repository keeps ``models/`` and ``analyses/`` at its top; the build
maps them here (``pyproject.toml``, ``[tool.setuptools] package-dir``), so a user's own
``models.py`` or ``analyses/`` can never shadow them.

Names are resolved on first use (PEP 562): ``import varcomp`` imports neither numpy nor PyMC.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "DataError": "varcomp.models.errors",
}


def __getattr__(name: str) -> Any:
    """Import a public name or a subpackage (``varcomp.models``, ``varcomp.analyses``) on use."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("models", "analyses"):
        return importlib.import_module(f"varcomp.{name}")
    raise AttributeError(f"module 'varcomp' has no attribute '{name}'")


__all__ = ["DataError", "__version__"]
