"""Compiling a PyMC model for nutpie (the hook where compiled functions can be cached)."""

from __future__ import annotations

__all__ = ["compile_nutpie"]


def compile_nutpie(model):
    """Compile ``model`` for nutpie's numba backend."""
    import nutpie

    return nutpie.compile_pymc_model(model)
