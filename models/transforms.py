"""Sampler coordinates that standardise the data's scale without changing the model."""

from __future__ import annotations

import math

import numpy as np
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

__all__ = ["Affine", "OutcomeAffine", "ScaledLog"]


class Affine(Transform):
    """Unconstrained y = (x - center) / scale; log |dx/dy| = log(scale)."""

    name = "std"

    def __init__(self, center: float, scale: float):
        self.center, self.scale = float(center), float(scale)

    def forward(self, value, *inputs):
        """Constrained -> unconstrained."""
        return (value - self.center) / self.scale

    def backward(self, value, *inputs):
        """Unconstrained -> constrained."""
        return self.center + self.scale * value

    def log_jac_det(self, value, *inputs):
        """Log |Jacobian| of ``backward``."""
        return pt.zeros_like(value) + math.log(self.scale)


class ScaledLog(Transform):
    """Unconstrained y = log(x / scale) for x > 0; log |dx/dy| = y + log(scale)."""

    name = "log_std"

    def __init__(self, scale: float):
        self.log_scale = math.log(float(scale))

    def forward(self, value, *inputs):
        """Constrained -> unconstrained."""
        return pt.log(value) - self.log_scale

    def backward(self, value, *inputs):
        """Unconstrained -> constrained."""
        return pt.exp(value + self.log_scale)

    def log_jac_det(self, value, *inputs):
        """Log |Jacobian| of ``backward``."""
        return value + self.log_scale


class OutcomeAffine(Transform):
    """Unconstrained y = (x - center) / scale with one center and scale per outcome (last axis).

    ``event_ndim=0`` for elementwise variables (``mu``), 1 for a multivariate variable whose
    last axis is the outcome (the centred ``group_effect``): log |dx/dy| is then summed over it.
    """

    name = "std"

    def __init__(self, center, scale, *, event_ndim: int = 0):
        self.center = np.asarray(center, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.event_ndim = int(event_ndim)

    def forward(self, value, *inputs):
        """Constrained -> unconstrained."""
        return (value - self.center) / self.scale

    def backward(self, value, *inputs):
        """Unconstrained -> constrained."""
        return self.center + self.scale * value

    def log_jac_det(self, value, *inputs):
        """Log |Jacobian| of ``backward``."""
        log_scale = np.log(self.scale)
        if self.event_ndim == 0:
            return pt.zeros_like(value) + log_scale
        return pt.zeros_like(value[..., 0]) + float(log_scale.sum())

