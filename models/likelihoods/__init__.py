"""The response distributions (likelihoods) a model can have; each is one module here.

:data:`LIKELIHOODS` lists the registered ones by name. A new one (binomial, Poisson) is one
module defining its :class:`~models.likelihoods.base.Likelihood` record and one line here.
"""

from __future__ import annotations

from varcomp.models.likelihoods.base import Likelihood
from varcomp.models.likelihoods.gaussian import GAUSSIAN

__all__ = ["GAUSSIAN", "LIKELIHOODS", "Likelihood"]

LIKELIHOODS: dict[str, Likelihood] = {GAUSSIAN.name: GAUSSIAN}
