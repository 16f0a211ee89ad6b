"""Checks that every parameterisation of a family is one posterior.

- :mod:`~models.checks.logp`: exact log densities against independent oracles
  (:mod:`~models.checks.oracles`: scipy's MvNormal of each cluster's stacked vector, an
  independent LKJ prior), and the compiled forms against the PyMC ones.
- :mod:`~models.checks.posteriors`: posterior agreement of fits within Monte Carlo error, and
  against the quadrature posterior of :mod:`~models.reference`.
- :mod:`~models.checks.sbc`: simulation-based calibration, one driver; the models it calibrates
  (:mod:`~models.checks.sbc_models`) supply their design, posterior, prior draws and simulator.
- :mod:`~models.checks.broken`: a deliberately wrong form per family, which these must fail.

Each check returns a :class:`~models.checks.base.CheckResult` (``name``, ``passed``, ``table``,
``text``, ``details``).
"""

from __future__ import annotations

from varcomp.models.checks.base import AGREES, DISAGREES, UNRELIABLE, CheckResult
from varcomp.models.checks.broken import BROKEN
from varcomp.models.checks.logp import compare_compiled, compare_logp
from varcomp.models.checks.posteriors import compare_posteriors
from varcomp.models.checks.sbc import SBCResult, plot_sbc, rank_uniformity, sbc
from varcomp.models.checks.sbc_models import MixedSBC, MultivariateSBC, OnewaySBC
from varcomp.models.reference import ReferencePosterior, reference_posterior

__all__ = ["AGREES", "BROKEN", "DISAGREES", "UNRELIABLE", "CheckResult", "MixedSBC",
           "MultivariateSBC", "OnewaySBC", "ReferencePosterior", "SBCResult", "compare_compiled",
           "compare_logp", "compare_posteriors", "plot_sbc", "rank_uniformity",
           "reference_posterior", "sbc"]
