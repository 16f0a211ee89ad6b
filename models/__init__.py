"""The statistics of varcomp: data, priors, model families and their forms, densities, checks.

:func:`models.forms.family_of` decides which family fits a data set; each family's forms (the
parameterisations) are records of functions (:mod:`models.forms.base`) that the checks, the fit,
the report and the CLI loop over.

Everything here is imported lazily (PEP 562): ``import models.errors`` (all the command line
needs before it has parsed its arguments) pulls in neither pandas nor scipy, and PyMC is
imported only by the forms that sample through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and readers; at run time __getattr__ imports on use
    from varcomp.models.data import DATASETS, ClusteredData, DataError
    from varcomp.models.estimate import PointEstimate, fit_ml, fit_reml
    from varcomp.models.forms import FORM_NAMES, family_of

_LAZY = {
    "DATASETS": "varcomp.models.data",
    "ClusteredData": "varcomp.models.data",
    "DataError": "varcomp.models.errors",
    "PointEstimate": "varcomp.models.estimate",
    "fit_ml": "varcomp.models.estimate",
    "fit_reml": "varcomp.models.estimate",
    "FORM_NAMES": "varcomp.models.forms",
    "family_of": "varcomp.models.forms",
}


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule such as ``models.mvstats``) on first use."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"varcomp.models.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"varcomp.models.{name}":
            raise
        raise AttributeError(f"module 'varcomp.models' has no attribute '{name}'") from None


FRAME_SOURCE = "<DataFrame>"
"""``data.source`` of data given as a frame (summary.json's ``data.source``)."""


def load(spec, *, group=None, response=None, formula=None, family=None, link=None,
         event=None) -> ClusteredData:
    """A shipped dataset by name, a CSV/Parquet file, or a pandas DataFrame.

    By ``group`` and ``response`` columns (:func:`models.data.load`), or by a mixed-model
    ``formula`` such as ``"y ~ x + C(z) + (1|g)"`` (:func:`models.design.load_formula`).
    ``family`` (``gaussian``, ``bernoulli``, ``binomial``, ``poisson``), ``link`` and ``event``
    choose the response distribution (:mod:`models.responses`); a non-Gaussian one by columns
    is the formula ``response ~ 1 + (1|group)``.
    """
    import os

    from varcomp.models.errors import DataError

    glm = {k: v for k, v in (("family", family), ("link", link), ("event", event))
           if v is not None}
    if formula is None and family not in (None, "gaussian"):
        if group is None or not isinstance(response, str):
            raise DataError(f"--family {family} takes one --response column and --group (or a "
                            f"--formula)")
        formula = f"{_quoted(response)} ~ 1 + (1|{_quoted(group)})"
        group = response = None
    elif formula is None and (link is not None or event is not None):
        raise DataError("--link and --event are for a non-Gaussian --family")

    frame = _is_frame(spec)
    if not (frame or isinstance(spec, (str, os.PathLike))):
        raise TypeError(f"models.load takes a file path, a shipped dataset name or a pandas "
                        f"DataFrame, not {type(spec).__name__}")
    if formula is not None:
        if group is not None or response:
            raise DataError("give either a formula or group/response columns, not both")
        if frame:
            from varcomp.models.design import from_formula

            return from_formula(spec, formula, source=FRAME_SOURCE, **glm)
        from varcomp.models.design import load_formula

        return load_formula(spec, formula, **glm)
    if frame:
        from varcomp.models.data import ClusteredData

        if group is None or not response:
            missing = "group=" if group is None else "response="
            raise DataError(f"{missing} is required for a DataFrame (or give formula='y ~ 1 + "
                            f"(1|g)'); columns present: {', '.join(map(str, spec.columns))}")
        return ClusteredData.from_frame(spec, group=group, response=response,
                                        source=FRAME_SOURCE)
    from varcomp.models.data import load as load_columns

    return load_columns(spec, group=group, response=response)


def _quoted(column: str) -> str:
    """A column name as a formula writes it (backquoted unless a plain name)."""
    return column if column.isidentifier() else f"`{column}`"


def _is_frame(obj) -> bool:
    """Whether ``obj`` is a pandas DataFrame (without importing pandas for a path)."""
    if "pandas" not in type(obj).__module__:
        return False
    import pandas as pd

    return isinstance(obj, pd.DataFrame)


__all__ = [
    "DATASETS",
    "FORM_NAMES",
    "ClusteredData",
    "DataError",
    "PointEstimate",
    "family_of",
    "fit_ml",
    "fit_reml",
    "load",
]
