"""The response distributions (likelihoods) a model can have; each is one module here.

:data:`LIKELIHOODS` lists the registered ones by name. A new one (binomial, Poisson) is one
module defining its :class:`~models.likelihoods.base.Likelihood` record and one line here.
"""

from __future__ import annotations

from varcomp.models.likelihoods.base import Likelihood
from varcomp.models.likelihoods.binomial import BINOMIAL
from varcomp.models.likelihoods.gaussian import GAUSSIAN
from varcomp.models.likelihoods.poisson import POISSON

__all__ = ["BINOMIAL", "FAMILY_NAMES", "GAUSSIAN", "LIKELIHOODS", "POISSON", "Likelihood"]

LIKELIHOODS: dict[str, Likelihood] = {GAUSSIAN.name: GAUSSIAN, BINOMIAL.name: BINOMIAL,
                                      POISSON.name: POISSON}

FAMILY_NAMES = ("gaussian", "bernoulli", "binomial", "poisson")
"""What ``--family`` / ``family=`` accept; ``bernoulli`` is the binomial record with one trial
per row."""
