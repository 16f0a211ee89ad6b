"""The one module that relies on nutpie's internals (nutpie 0.16, pinned in pyproject).

Two routes to a nutpie model:

- :data:`LOGP_SIGNATURE`, :data:`EXPAND_SIGNATURE`, :func:`logp_status`: the C signatures and the
  status codes of nutpie's callbacks, shared by the three compiled kernels
  (:mod:`models.compiled.oneway`, :mod:`models.compiled.lmm`, :mod:`models.compiled.multivariate`).
- :func:`nutpie_model`: hand-written compiled callbacks (:mod:`models.compiled.oneway`,
  :mod:`models.compiled.multivariate`) wrapped in nutpie's ``CompiledPyMCModel`` dataclass, as
  nutpie's own numba backend does (logp/expand numba ``cfunc`` s with nutpie's C signatures,
  ``user_data`` = the float64 parameter block). No PyMC or pytensor is imported.
- :func:`compile_pymc`: a PyMC model compiled by nutpie's numba backend (fastest per gradient,
  free of the GIL across chains), or by pytensor's C backend (``backend="c"``), whose compiled
  modules are cached on disk (``~/.pytensor``) and handed to nutpie as Python callables
  (``nutpie.compiled_pyfunc.from_pyfunc``, the route nutpie's JAX backend takes): ~1 s compiles on
  re-runs but a Python call per gradient, so it samples ~20x slower on small models.

``tests/test_compiled_oneway.py`` and ``tests/test_compiled_multivariate.py`` sample through
both, so a nutpie upgrade that changes them fails there.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
from numba import types

__all__ = ["EXPAND_SIGNATURE", "LOGP_SIGNATURE", "compile_pymc", "logp_status", "nutpie_model"]

LOGP_SIGNATURE = types.int64(types.uint64, types.CPointer(types.double),
                             types.CPointer(types.double), types.CPointer(types.double),
                             types.voidptr)
"""nutpie's logp callback: ``(dim, x, grad_out, logp_out, user_data) -> status``."""

EXPAND_SIGNATURE = types.int64(types.uint64, types.uint64, types.CPointer(types.double),
                               types.CPointer(types.double), types.voidptr)
"""nutpie's expand callback: ``(dim, n_expanded, x, out, user_data) -> status``."""


@numba.njit(cache=True, error_model="numpy")
def logp_status(value, grad, logp_):
    """Write ``value`` to nutpie's logp pointer; the status nutpie reads.

    0 on success, 3 for a non-finite gradient, 4 for a non-finite value (nutpie then rejects the
    point). The compiled kernels' logp callbacks end with it; each callback stays a module-level
    ``cfunc`` of its kernel's module, so numba caches it on disk.
    """
    numba.carray(logp_, (1,))[0] = value
    for i in range(grad.size):
        if not math.isfinite(grad[i]):
            return 3
    if not math.isfinite(value):
        return 4
    return 0


def nutpie_model(layout, block: np.ndarray, c_logp, c_expand, start: np.ndarray, *,
                 dims=None, coords=None):
    """A ``nutpie.compile_pymc.CompiledPyMCModel`` around compiled callbacks.

    ``layout``: the expanded variables ``[(name, shape), ...]`` in the order ``c_expand`` writes
    them; ``block``: the float64 array the callbacks read (``user_data``, kept alive by the
    model); ``start``: the unconstrained initial point, jittered by U(-1, 1) per chain as PyMC's
    initial points are.
    """
    from nutpie.compile_pymc import CompiledPyMCModel

    def initial_point(seed=None):
        return start + np.random.default_rng(seed).uniform(-1.0, 1.0, size=start.size)

    names = [n for n, _ in layout]
    shapes = [tuple(s) for _, s in layout]
    slices, at = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        slices.append(slice(at, at + size))
        at += size
    return CompiledPyMCModel(
        _n_dim=int(start.size), dims=dims or {}, _coords=coords or {},
        _shapes=dict(zip(names, shapes, strict=True)),
        compiled_logp_func=c_logp, compiled_expand_func=c_expand,
        initial_point_func=initial_point, shared_data={}, user_data=block,
        n_expanded=at, shape_info=(names, slices, shapes), logp_func=None, expand_func=None)


def compile_pymc(model, backend: str = "numba"):
    """Compile PyMC ``model`` for nutpie: ``backend="numba"`` or ``"c"`` (cached on disk)."""
    import nutpie

    if backend == "numba":
        return nutpie.compile_pymc_model(model)
    if backend != "c":
        raise ValueError(f"unknown compile backend '{backend}': choose numba or c")
    return _compile_c(model)


def _compile_c(model):
    # nutpie 0.16's own helpers: the same functions its JAX path uses
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
