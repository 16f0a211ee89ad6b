"""What the Python API accepts as data, resolved in one place for fit, compare and describe.

``data`` is a pandas DataFrame, a pyarrow Table (converted with ``to_pandas``), a path to a
CSV/Parquet file, a shipped dataset's name, or already loaded :class:`models.ClusteredData`.
The model's columns are given by a ``formula`` (``"y ~ x + (1|g)"``) or by ``group`` and
``response`` (the formula ``response ~ 1 + (1|group)``), exactly as ``varcomp fit`` takes
``--formula`` or ``--group/--response``; shipped datasets default to their natural columns.
Frames go through the same validation as files (:meth:`models.ClusteredData.from_frame`,
:func:`models.design.from_formula`), so every bad input is one :class:`DataError` line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from varcomp.models.errors import DataError

__all__ = ["as_frame", "resolve"]


def as_frame(data):
    """``data`` as a pandas DataFrame if it is a table (pandas, pyarrow), else None."""
    import sys

    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__ or ""
    if module.startswith("pyarrow") and hasattr(data, "to_pandas"):
        return data.to_pandas()
    return None


def _response(response: str | Sequence[str] | None):
    if response is None or isinstance(response, str):
        return response
    if not isinstance(response, Sequence) or not all(isinstance(r, str) for r in response):
        raise TypeError(f"response must be a column name or a list of names, got "
                        f"{type(response).__name__}")
    names = list(response)
    return names[0] if len(names) == 1 else names


def resolve(data, formula: str | None = None, *, group: str | None = None,
            response: str | Sequence[str] | None = None, **glm):
    """``data`` and its model columns as validated :class:`models.ClusteredData`.

    Raises :class:`DataError` (one line) for bad input and :class:`TypeError` for an argument
    of the wrong kind (``data`` neither a table, a path nor a name; a formula that is not text).
    ``glm``: ``family``, ``link``, ``event`` of :func:`models.load` (None: not given).
    """
    from varcomp.models.data import ClusteredData

    if formula is not None and not isinstance(formula, str):
        raise TypeError(f"formula must be text such as 'y ~ x + (1|g)', got "
                        f"{type(formula).__name__}")
    if group is not None and not isinstance(group, str):
        raise TypeError(f"group must be a column name, got {type(group).__name__}")
    response = _response(response)
    if formula is not None and (group is not None or response):
        raise DataError("give either a formula or group/response columns, not both")
    if isinstance(data, ClusteredData):
        if formula is not None or group is not None or response or any(
                v is not None for v in glm.values()):
            raise DataError("the data are already loaded with their columns: pass them alone, "
                            "or pass the DataFrame or file with formula= or group=/response=")
        return data
    frame = as_frame(data)
    if frame is not None or isinstance(data, (str, os.PathLike)):
        from varcomp.models import load  # the one loader of frames, files and shipped names

        return load(data if frame is None else frame, group=group, response=response,
                    formula=formula, **glm)
    raise TypeError(f"data must be a pandas DataFrame, a pyarrow Table, a file path or a "
                    f"shipped dataset's name, got {type(data).__name__}")
