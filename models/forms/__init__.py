"""Model families and their parameterisations.

:func:`family_of` is the one place that decides which family a data set is fitted with.

Each family lives in its own module and defines one :class:`~models.forms.base.Family` record
(``FAMILY``) holding its :class:`~models.forms.base.Form` records. Adding a family is adding
such a module and one line to :func:`family_of`.
"""

from __future__ import annotations

from importlib import import_module

from varcomp.models.forms.base import Family, Form

__all__ = ["FAMILY_MODULES", "FORM_NAMES", "Family", "Form", "family_named", "family_of"]

FORM_NAMES = ("centred", "noncentred", "partial", "marginal", "sufficient")
"""Every form name, in display order. A family has the forms that apply to it (a subset, in this
order): ``partial`` (each factor centred or not by how well its rows pin its levels down) exists
only where that choice differs by factor (crossed designs)."""
"""The parameterisations, in display order: the same four names in every family."""

FAMILY_MODULES = {
    "oneway": "varcomp.models.forms.oneway",
    "multivariate": "varcomp.models.forms.multivariate",
    "regression": "varcomp.models.forms.regression",
    "nested": "varcomp.models.forms.nested",
    "crossed": "varcomp.models.forms.crossed",
    "binomial": "varcomp.models.forms.glmm",
    "poisson": "varcomp.models.forms.glmm",
    "binomial_multilevel": "varcomp.models.forms.glmm",
    "poisson_multilevel": "varcomp.models.forms.glmm",
    "slopes": "varcomp.models.forms.slopes",
}


def family_named(name: str) -> Family:
    """The family record called ``name`` (its module is imported on first use).

    A module defines ``FAMILY``, or ``FAMILIES`` (name -> record) where one module holds
    several (the GLMMs, one per likelihood and structure).
    """
    module = import_module(FAMILY_MODULES[name])
    return module.FAMILIES[name] if hasattr(module, "FAMILIES") else module.FAMILY


def family_of(data) -> Family:
    """The family that fits ``data``: the only place where the kind of data is tested.

    Several response columns: the multivariate model. No formula's design (group and
    response columns), or a formula of rows with an intercept only and one grouping factor:
    the one-way model. A non-Gaussian response (``data.likelihood``): the GLMM family of that
    likelihood, one factor or several (:mod:`models.forms.glmm`). A design with several
    grouping factors: nested or crossed, as the data nest; with one factor and covariates:
    the random-intercept regression. A design of
    statistics only (a file reduced while reading, ``design.X`` None) is fitted by the mixed
    families' cell kernels whatever its terms (the one-way forms need the rows' statistics).
    A design whose random-effects terms have slope columns on one grouping factor: the
    random-slopes family; slopes beside other factors are refused here, naming the term.
    """
    if data.p > 1:
        return family_named("multivariate")
    design = getattr(data, "design", None)
    slopes = [t for t in getattr(design, "random", ()) if t.slopes]
    if slopes:
        from varcomp.models.errors import DataError

        response = getattr(data, "likelihood", "gaussian")
        if len(design.factors) > 1 or design.X is None or response != "gaussian":
            why = ("several grouping factors" if len(design.factors) > 1 else
                   "a file reduced to statistics while reading" if design.X is None else
                   f"a {response} response")
            raise DataError(f"random slopes: {slopes[0].label} with {why} is not fitted yet; "
                            f"slopes are fitted on one grouping factor of a Gaussian response "
                            f"from rows in memory, e.g. y ~ x + (1 + x|{slopes[0].factor.name})")
        return family_named("slopes")
    response = getattr(data, "likelihood", "gaussian")
    if response != "gaussian":  # binomial or Poisson: the GLMM families, by structure
        several = len(design.factors) > 1
        return family_named(f"{response}_multilevel" if several else response)
    if design is None or (design.X is not None and design.terms == ("Intercept",)
                          and len(design.factors) == 1):
        return family_named("oneway")
    if len(design.factors) > 1:
        return family_named("nested" if design.nested else "crossed")
    return family_named("regression")
