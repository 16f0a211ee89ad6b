"""Compiling a PyMC model for nutpie, with compiled code cached between runs.

nutpie's default numba backend recompiles its C callback in every process (~6 s for the
smallest model here, 25-60 s with ``pm.MvNormal``). The ``"c"`` backend below instead
compiles the model's log density and gradient with pytensor's C backend, whose compiled
modules are cached on disk (``~/.pytensor``), and hands them to nutpie as Python callables
(``nutpie.compiled_pyfunc.from_pyfunc``, the same route nutpie's JAX backend takes). The
density is PyMC's own graph in both cases; only the compiler differs. A second run of the same
model shape compiles in about a second. Per-gradient overhead is a Python call (~10 us), which
is negligible beside the O(L) sufficient model's and the latent models' work; chains share the
GIL, so for very large models the numba backend (``backend="numba"``) can sample faster.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["compile_nutpie"]


def compile_nutpie(model, backend: str = "c"):
    """Compile ``model`` for nutpie: ``backend="c"`` (cached, default) or ``"numba"``."""
    import nutpie

    if backend == "numba":
        return nutpie.compile_pymc_model(model)
    if backend != "c":
        raise ValueError(f"unknown compile backend '{backend}': choose c or numba")
    return _compile_c(model)


def _compile_c(model):
    # nutpie 0.16's own helpers (pinned in pyproject): the same functions its JAX path uses.
    from nutpie.compile_pymc import _make_functions, _prepare_dims_and_coords, _wrap_with_lock
    from nutpie.compiled_pyfunc import from_pyfunc
    from pymc.initial_point import make_initial_point_fn

    pymc_initial = _wrap_with_lock(make_initial_point_fn(
        model=model, default_strategy="support_point", jitter_rvs=set(model.free_RVs),
        return_transformed=True))
    n_dim, _, logp_fn_pt, expand_fn_pt, initial_point_fn, shape_info = _make_functions(
        model, mode="FAST_RUN", compute_grad=True, join_expanded=False,
        pymc_initial_point_fn=pymc_initial, var_names=None)
    # A compiled pytensor Function keeps its inputs/outputs in shared storage: one lock per
    # function makes concurrent chains safe (they are serialised by the GIL anyway).
    logp_lock, expand_lock = threading.Lock(), threading.Lock()

    def make_logp_func():
        def logp(x, **_shared):
            with logp_lock:
                value, grad = logp_fn_pt(x)
                return float(value), np.array(grad, dtype=np.float64, order="C")

        return logp

    names, _slices, shapes = shape_info
    dtypes = [np.dtype("float64")] * len(names)

    def make_expand_func(seed1, seed2, chain):
        def expand(x, **_shared):
            with expand_lock:
                values = expand_fn_pt(x)
                return {name: np.array(v, dtype=np.float64, order="C").reshape(shape)
                        for name, v, shape in zip(names, values, shapes, strict=True)}

        return expand

    dims, coords = _prepare_dims_and_coords(model, shape_info)
    return from_pyfunc(ndim=n_dim, make_logp_fn=make_logp_func, make_expand_fn=make_expand_func,
                       make_initial_point_fn=initial_point_fn, expanded_dtypes=dtypes,
                       expanded_shapes=shapes, expanded_names=names, dims=dims, coords=coords)
