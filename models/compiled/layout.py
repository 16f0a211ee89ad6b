"""The float64 parameter block of a compiled form: one explicit layout for packer, kernels, tests.

A compiled density reads everything it needs (constants, prior settings, statistics) from one
contiguous float64 array handed to nutpie as ``user_data``. A :class:`Layout` names the block's
header scalars and its arrays, in order. :meth:`Layout.pack` writes the header (the scalars, then
each array's offset, then the block's total length) followed by the arrays; the kernels read a
scalar at its index and an array from the offset stored in its slot, both taken from the same
``Layout`` object, and the tests unpack a block with :meth:`Layout.unpack`.

The ``Layout`` of a kernel module is defined *in that module* and its index constants derived
there at import time: numba's on-disk cache invalidates a compiled function when its own source
file changes, not when a constant imported from another module does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    """Header scalars, then one offset slot per array, then the total length; then the arrays.

    Attributes
    ----------
    scalars : tuple of str
        Header entries, in order (index ``i`` is ``scalars[i]``).
    arrays : tuple of str
        Arrays after the header, in order; the offset of ``arrays[j]`` is stored at
        ``len(scalars) + j``.
    """

    scalars: tuple[str, ...]
    arrays: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = list(self.scalars) + list(self.arrays)
        if len(set(names)) != len(names):
            raise ValueError(f"layout names repeat: {names}")

    @property
    def header(self) -> int:
        """Number of header entries (scalars, array offsets, total length)."""
        return len(self.scalars) + len(self.arrays) + 1

    @property
    def size_slot(self) -> int:
        """Index of the header entry holding the block's total length."""
        return self.header - 1

    def index(self, name: str) -> int:
        """Header index of scalar ``name``, or of the offset slot of array ``name``."""
        if name in self.scalars:
            return self.scalars.index(name)
        return len(self.scalars) + self.arrays.index(name)

    def pack(self, scalars: Mapping[str, float], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """The block: every scalar and array of the layout, no more, no fewer."""
        missing = (set(self.scalars) - set(scalars)) | (set(self.arrays) - set(arrays))
        extra = (set(scalars) - set(self.scalars)) | (set(arrays) - set(self.arrays))
        if missing or extra:
            raise ValueError(f"block does not match its layout: missing {sorted(missing)}, "
                             f"unknown {sorted(extra)}")
        head = np.zeros(self.header)
        for i, name in enumerate(self.scalars):
            head[i] = float(scalars[name])
        parts: list[np.ndarray] = [head]
        at = self.header
        for j, name in enumerate(self.arrays):
            flat = np.ascontiguousarray(arrays[name], dtype=np.float64).ravel()
            head[len(self.scalars) + j] = at
            parts.append(flat)
            at += flat.size
        head[self.size_slot] = at
        return np.ascontiguousarray(np.concatenate(parts))

    def unpack(self, block: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Scalars and (flat) arrays of a packed block (for tests and debugging)."""
        block = np.asarray(block, dtype=np.float64)
        scalars = {name: float(block[i]) for i, name in enumerate(self.scalars)}
        ends = [int(block[len(self.scalars) + j]) for j in range(len(self.arrays))]
        ends.append(int(block[self.size_slot]))
        arrays = {name: block[ends[j]:ends[j + 1]] for j, name in enumerate(self.arrays)}
        return scalars, arrays

    def constants(self, names: Sequence[str] | None = None) -> tuple[int, ...]:
        """Header indices of ``names`` (default: every scalar then every array slot)."""
        names = list(self.scalars) + list(self.arrays) if names is None else list(names)
        return tuple(self.index(n) for n in names)
