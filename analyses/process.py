"""Process-wide settings of a ``varcomp`` process (``analyses.cli.main(whole_process=True)``).

The console script's interpreter lives for one command, so it may set what a library call must
not touch: ``import dask`` blocked (:func:`without_dask`) and the cyclic GC paused while the
heavy modules import (:func:`settle_for`, until :func:`settle_heap`).
"""

from __future__ import annotations

import gc
import sys

__all__ = ["settle_for", "settle_heap", "without_dask"]

_GC_PAUSED = []  # settle_for() paused cyclic GC; settle_heap() resumes it


def settle_for(args) -> None:
    """The settings for a command's parsed ``args``.

    Dask blocked unless its engine runs, and the cyclic GC paused until :func:`settle_heap`.
    """
    if getattr(args, "engine", "memory") != "dask":
        without_dask()
    gc.disable()
    _GC_PAUSED.append(True)


def without_dask() -> None:
    """Make ``import dask`` fail in this process (it will hold no Dask array).

    xarray imports ``dask`` and ``dask.array`` when it builds its first Variable (to recognise
    Dask arrays) and ``dask`` and ``distributed`` before every NetCDF write (to ask which
    scheduler runs); measured here, 0.4 s of a 3.6 s Dyestuff fit. Without ``--engine dask``
    nothing in the process is a Dask array, so "Dask is not installed" is the true answer to
    both questions. Only for a whole process: xarray caches the answer, and a notebook that
    calls :func:`analyses.cli.main` may use Dask afterwards.
    """
    if "dask" not in sys.modules:
        sys.modules.update({"dask": None, "distributed": None})


def settle_heap(*, arviz: bool = True) -> None:
    """Cyclic GC back on, with every object made so far frozen out of its sight.

    A whole-process command starts with the collector off (:func:`settle_for`): importing
    numpy, scipy, numba, xarray and ArviZ makes hundreds of thousands of long-lived objects and
    no garbage, yet the collector walked them 660 times during a Dyestuff fit, 0.43-0.59 s of
    its ~3 s (measured with ``gc.callbacks``). The commands that sample call this once their
    data are read: ArviZ is imported (``arviz=False``: not, for a command that does not use
    it), the heap is frozen (``gc.freeze``) and collection resumes for what the fit allocates
    (124 collections, 0.02 s, peak memory unchanged). A library call of
    :func:`analyses.cli.main` leaves the caller's collector alone (this does nothing then).
    """
    if _GC_PAUSED:
        if arviz:
            from varcomp.models.sampling import import_arviz

            import_arviz()
        gc.freeze()
        gc.enable()
        _GC_PAUSED.clear()
