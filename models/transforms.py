"""Sampler coordinates that standardise the data's scale without changing the model."""

from __future__ import annotations

import math

import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

__all__ = ["Affine", "ScaledLog"]


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
