"""The statistics of varcomp: data, priors, model families and their forms, densities, checks.

:func:`models.forms.family_of` decides which family fits a data set; each family's forms (the
parameterisations) are records of functions (:mod:`models.forms.base`) that the checks, the fit,
the report and the CLI loop over. PyMC is imported lazily, so loading data stays light.
"""

from __future__ import annotations

from models.data import DATASETS, ClusteredData, DataError, load
from models.estimate import PointEstimate, fit_ml, fit_reml
from models.forms import FORM_NAMES, family_of

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
