"""Exact random-intercept LMM log-likelihoods with analytic gradients: nested and crossed kernels.

One import point for :mod:`models.compiled.lmm_nested` (nested factors of any depth, including
the single-factor regression ``y ~ x + (1|g)``, with a size-grouped kernel for D = 1) and
:mod:`models.compiled.lmm_strata` (balanced crossed designs through ANOVA strata). Each of those
modules keeps its own block layout next to its kernels (numba's cache follows source files).
"""

from varcomp.models.compiled.lmm_nested import (
    NESTED_LAYOUT,
    NestedStats,
    nested_loglik,
    nested_loglik_grad,
    nested_loglik_grad_fast,
    nested_loglik_grad_work,
    nested_stats,
    nested_work_size,
    pack_nested,
)
from varcomp.models.compiled.lmm_strata import (
    STRATA_LAYOUT,
    StrataStats,
    pack_strata,
    strata_loglik,
    strata_loglik_grad,
    strata_stats,
)

__all__ = ["NESTED_LAYOUT", "STRATA_LAYOUT", "NestedStats", "StrataStats", "nested_loglik",
           "nested_loglik_grad", "nested_loglik_grad_fast", "nested_loglik_grad_work",
           "nested_stats", "nested_work_size", "pack_nested", "pack_strata", "strata_loglik",
           "strata_loglik_grad", "strata_stats"]
