"""One prior specification shared by every parameterisation (equal priors, equal posteriors)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:  # pragma: no cover
    from models.data import ClusteredData

__all__ = ["FAMILIES", "NormalPrior", "Priors", "ScalePrior", "parse_prior_overrides"]

FAMILIES = ("halfnormal", "halfstudentt", "halfcauchy", "exponential")


@dataclass(frozen=True)
class ScalePrior:
    """A prior on a standard deviation: ``family`` with ``scale`` (for exponential, its mean).

    Families: HalfNormal(scale), HalfStudentT(nu, scale), HalfCauchy(scale),
    Exponential(rate = 1 / scale).
    """

    family: str = "halfstudentt"
    scale: float = 1.0
    nu: float = 3.0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown prior family '{self.family}'; choose one of {FAMILIES}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"prior scale must be positive and finite, got {self.scale}")
        if not self.nu > 0:
            raise ValueError(f"Student-t degrees of freedom must be positive, got {self.nu}")

    def _scipy(self):
        return {
            "halfnormal": stats.halfnorm(scale=self.scale),
            "halfstudentt": None,
            "halfcauchy": stats.halfcauchy(scale=self.scale),
            "exponential": stats.expon(scale=self.scale),
        }[self.family]

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x`` > 0 (numpy), identical to the PyMC distribution's."""
        x = np.asarray(x, dtype=np.float64)
        if self.family == "halfstudentt":
            return np.log(2.0) + stats.t(df=self.nu, scale=self.scale).logpdf(x)
        return self._scipy().logpdf(x)

    def rvs(self, rng: np.random.Generator, size=None) -> np.ndarray:
        """Draws from the prior."""
        if self.family == "halfstudentt":
            return np.abs(self.scale * rng.standard_t(self.nu, size=size))
        return self._scipy().rvs(size=size, random_state=rng)

    def quantile(self, q: float) -> float:
        """Prior quantile (used to size quadrature grids)."""
        if self.family == "halfstudentt":
            return float(stats.t(df=self.nu, scale=self.scale).ppf(0.5 + q / 2))
        return float(self._scipy().ppf(q))

    def pymc(self, name: str, **kwargs):
        """Create the PyMC random variable ``name`` in the current model context."""
        import pymc as pm

        if self.family == "halfnormal":
            return pm.HalfNormal(name, sigma=self.scale, **kwargs)
        if self.family == "halfstudentt":
            return pm.HalfStudentT(name, nu=self.nu, sigma=self.scale, **kwargs)
        if self.family == "halfcauchy":
            return pm.HalfCauchy(name, beta=self.scale, **kwargs)
        return pm.Exponential(name, lam=1.0 / self.scale, **kwargs)

    def describe(self) -> str:
        """Human-readable form, e.g. ``HalfStudentT(nu=3, scale=49.2)``."""
        if self.family == "halfstudentt":
            return f"HalfStudentT(nu={self.nu:g}, scale={self.scale:.4g})"
        label = {"halfnormal": "HalfNormal", "halfcauchy": "HalfCauchy",
                 "exponential": "Exponential"}[self.family]
        arg = "mean" if self.family == "exponential" else "scale"
        return f"{label}({arg}={self.scale:.4g})"


@dataclass(frozen=True)
class NormalPrior:
    """Normal(loc, scale) prior on the grand mean."""

    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale) and math.isfinite(self.loc)):
            raise ValueError(f"Normal prior needs a finite loc and positive scale, got "
                             f"({self.loc}, {self.scale})")

    def logpdf(self, x):
        """Log density (numpy)."""
        return stats.norm(self.loc, self.scale).logpdf(x)

    def rvs(self, rng: np.random.Generator, size=None):
        """Draws from the prior."""
        return rng.normal(self.loc, self.scale, size=size)

    def describe(self) -> str:
        """Human-readable form."""
        return f"Normal(loc={self.loc:.6g}, scale={self.scale:.4g})"


@dataclass(frozen=True)
class Priors:
    r"""The prior of the one-way model, used by every builder.

    .. math::
        \mu \sim \mathrm{Normal}(m, s_\mu),\quad \tau \sim p_\tau,\quad \sigma \sim p_\sigma

    ``center`` and ``scale`` are the data's location and spread. They do not change the prior:
    they set the sampler's unconstrained coordinates, (mu - center) / scale and
    log(tau / scale), log(sigma / scale), so a response measured in 1e-6 or offset by 1e9
    samples exactly like a standardised one ("standardise internally, report on the original
    scale"). Override any part with :func:`dataclasses.replace` or :func:`parse_prior_overrides`.
    """

    mu: NormalPrior = NormalPrior()
    tau: ScalePrior = ScalePrior()
    sigma: ScalePrior = ScalePrior()
    center: float = 0.0
    scale: float = 1.0

    @classmethod
    def default(cls, data: ClusteredData, k: int = 0) -> Priors:
        """Weakly informative defaults scaled to response ``k`` of the data.

        mu ~ Normal(mean(y), 2.5 sd(y)); tau, sigma ~ HalfStudentT(nu=3, sd(y)). The Student-t
        scale sd(y) puts the prior median of each sd at 0.77 sd(y) while leaving 5% mass above
        3.2 sd(y): it rules out nothing a sensible model could produce, and because every scale
        is a multiple of sd(y) the posterior of the ICC is invariant to the units of y.
        """
        y = data.y[:, k]
        y = y[np.isfinite(y)]
        center = float(np.mean(y))
        sd = float(np.std(y, ddof=1)) if y.size > 1 else 0.0
        if not (sd > 0 and math.isfinite(sd)):
            sd = abs(center) if center != 0 else 1.0
        return cls(mu=NormalPrior(center, 2.5 * sd), tau=ScalePrior("halfstudentt", sd),
                   sigma=ScalePrior("halfstudentt", sd), center=center, scale=sd)

    # --------------------------------------------------------------- PyMC
    def create(self):
        """Create ``mu``, ``tau``, ``sigma`` in the current PyMC model; returns the three RVs."""
        import pymc as pm

        from models.transforms import Affine, ScaledLog

        mu = pm.Normal("mu", mu=self.mu.loc, sigma=self.mu.scale,
                       default_transform=Affine(self.center, self.scale))
        tau = self.tau.pymc("tau", default_transform=ScaledLog(self.scale))
        sigma = self.sigma.pymc("sigma", default_transform=ScaledLog(self.scale))
        return mu, tau, sigma

    # --------------------------------------------------------------- numpy
    def logpdf(self, mu, tau, sigma):
        """Joint prior log density (numpy), the same as the PyMC model's prior terms."""
        return self.mu.logpdf(mu) + self.tau.logpdf(tau) + self.sigma.logpdf(sigma)

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """One draw of (mu, tau, sigma) from the prior."""
        return {"mu": float(self.mu.rvs(rng)), "tau": float(self.tau.rvs(rng)),
                "sigma": float(self.sigma.rvs(rng))}

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        return {"mu": self.mu.describe(), "tau": self.tau.describe(),
                "sigma": self.sigma.describe()}


def parse_prior_overrides(priors: Priors, specs: list[str] | None) -> Priors:
    """Apply ``NAME=FAMILY:SCALE[:NU]`` or ``mu=normal:LOC:SCALE`` overrides.

    Examples: ``tau=halfnormal:10``, ``sigma=exponential:2``, ``tau=halfstudentt:5:4``,
    ``mu=normal:1500:200``.
    """
    for spec in specs or []:
        try:
            name, rhs = spec.split("=", 1)
            parts = rhs.split(":")
            family = parts[0].strip().lower()
            nums = [float(x) for x in parts[1:]]
            if name == "mu":
                if family != "normal" or len(nums) != 2:
                    raise ValueError
                priors = replace(priors, mu=NormalPrior(nums[0], nums[1]))
            elif name in ("tau", "sigma"):
                if family not in FAMILIES or len(nums) not in (1, 2):
                    raise ValueError
                if family != "halfstudentt" and len(nums) == 2:
                    raise ValueError
                new = ScalePrior(family, nums[0], *(nums[1:] or []))
                priors = replace(priors, **{name: new})
            else:
                raise ValueError
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ValueError(
                f"bad prior '{spec}'{detail}: use mu=normal:LOC:SCALE or "
                f"tau|sigma=FAMILY:SCALE[:NU] with FAMILY in {', '.join(FAMILIES)}") from None
    return priors
