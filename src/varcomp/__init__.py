"""varcomp: Bayesian variance components for clustered data, on PyMC and ArviZ.

In a notebook::

    import varcomp
    r = varcomp.fit(df, "y ~ x + (1|g)")     # a DataFrame, a path or a shipped dataset's name
    r                                        # the at-a-glance card and the diagnostics verdict
    r.summary(); r.shares(); r.plot("icc"); r.report("out/")

:func:`fit`, :func:`compare`, :func:`describe`, :func:`datasets`, :func:`load_dataset` and
:func:`check` are :mod:`varcomp.analyses.api`'s; :class:`Result` and :class:`Comparison`
:mod:`varcomp.analyses.result`'s; bad input raises :class:`DataError` (a ValueError) with one line.

One import name holds everything: :mod:`varcomp.models` (the statistics: data, priors, model
families and their forms, densities, checks) and :mod:`varcomp.analyses` (fitting, reports, the
``varcomp`` command line). The repository keeps ``models/`` and ``analyses/`` at its top; the build
maps them here (``pyproject.toml``, ``[tool.setuptools] package-dir``), so a user's own
``models.py`` or ``analyses/`` can never shadow them.

Names are resolved on first use (PEP 562): ``import varcomp`` imports neither numpy nor PyMC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and readers; at run time __getattr__ imports on use
    from varcomp.analyses.api import check, compare, datasets, describe, fit, load_dataset
    from varcomp.analyses.result import Comparison, Result
    from varcomp.models.errors import DataError

__version__ = "0.2.0"

_LAZY = {
    "DataError": "varcomp.models.errors",
    "fit": "varcomp.analyses.api",
    "compare": "varcomp.analyses.api",
    "describe": "varcomp.analyses.api",
    "datasets": "varcomp.analyses.api",
    "load_dataset": "varcomp.analyses.api",
    "check": "varcomp.analyses.api",
    "Result": "varcomp.analyses.result",
    "Comparison": "varcomp.analyses.result",
}


def __getattr__(name: str) -> Any:
    """Import a public name or a subpackage (``varcomp.models``, ``varcomp.analyses``) on use."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("models", "analyses"):
        return importlib.import_module(f"varcomp.{name}")
    raise AttributeError(f"module 'varcomp' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The public names (lazy ones included), for tab completion."""
    return sorted({*globals(), *_LAZY, "models", "analyses"})


__all__ = ["Comparison", "DataError", "Result", "__version__", "check", "compare", "datasets",
           "describe", "fit", "load_dataset"]
