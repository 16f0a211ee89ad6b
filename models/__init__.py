"""The statistics of varcomp: data, priors, model families and their forms, densities, checks.

:func:`models.forms.family_of` decides which family fits a data set; each family's forms (the
parameterisations) are records of functions (:mod:`models.forms.base`) that the checks, the fit,
the report and the CLI loop over. PyMC is imported lazily, so loading data stays light.
"""

from __future__ import annotations

from models.data import DATASETS, ClusteredData, DataError
from models.data import load as _load_columns
from models.estimate import PointEstimate, fit_ml, fit_reml
from models.forms import FORM_NAMES, family_of


def load(spec, *, group=None, response=None, formula=None) -> ClusteredData:
    """A shipped dataset by name, or a CSV/Parquet file.

    By ``group`` and ``response`` columns (:func:`models.data.load`), or by a mixed-model
    ``formula`` such as ``"y ~ x + C(z) + (1|g)"`` (:func:`models.design.load_formula`).
    """
    if formula is not None:
        if group is not None or response:
            raise DataError("give either a formula or group/response columns, not both")
        from models.design import load_formula

        return load_formula(spec, formula)
    return _load_columns(spec, group=group, response=response)

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
