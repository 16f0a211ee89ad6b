"""One prior specification shared by every parameterisation (equal priors, equal posteriors)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from varcomp.models.errors import DataError
from varcomp.models.likelihoods import GAUSSIAN

if TYPE_CHECKING:  # pragma: no cover
    from varcomp.models.data import ClusteredData

__all__ = ["FAMILIES", "NormalPrior", "Priors", "ScalePrior", "check_relative",
           "check_relative_scale", "lkj_log_norm"]

FAMILIES = ("halfnormal", "halfstudentt", "halfcauchy", "exponential")
NU_MAX = 1000.0
"""Largest Student-t degrees of freedom accepted (beyond it use halfnormal)."""
RELATIVE_SCALE = 1e6
"""Prior scales (and a mean's distance from the data's) must lie within this factor of sd(y):
the sampler's coordinates are standardised by sd(y), and a prior 10^6 times narrower or wider
than the data leaves nothing for the sampler to adapt to in float64."""


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
            raise DataError(f"unknown prior family '{self.family}'; choose one of {FAMILIES}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise DataError(f"prior scale must be positive and finite, got {self.scale}")
        if not 0 < self.nu <= NU_MAX:
            raise DataError(f"Student-t degrees of freedom must be in (0, {NU_MAX:g}], got "
                             f"{self.nu} (for a normal tail use halfnormal)")

    def _scipy(self):
        from scipy import stats

        return {
            "halfnormal": stats.halfnorm(scale=self.scale),
            "halfstudentt": None,
            "halfcauchy": stats.halfcauchy(scale=self.scale),
            "exponential": stats.expon(scale=self.scale),
        }[self.family]

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x`` > 0 (numpy, vectorised), identical to the PyMC distribution's.

        Written out (no frozen scipy distribution per call: 16,000 of those cost 11 s):
        HalfNormal log 2 - log(2 pi)/2 - log s - (x/s)^2/2; HalfStudentT log 2 + log
        Gamma((nu+1)/2) - log Gamma(nu/2) - log(nu pi)/2 - log s - (nu+1)/2 log(1 + (x/s)^2/nu);
        HalfCauchy log(2 / (pi s)) - log(1 + (x/s)^2); Exponential -log s - x/s; -inf below 0.
        """
        from scipy.special import gammaln

        x = np.asarray(x, dtype=np.float64)
        s, z = self.scale, x / self.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.family == "halfnormal":
                out = math.log(2.0) - 0.5 * math.log(2.0 * math.pi) - math.log(s) - 0.5 * z * z
            elif self.family == "halfstudentt":
                nu = self.nu
                out = (math.log(2.0) + gammaln(0.5 * (nu + 1.0)) - gammaln(0.5 * nu)
                       - 0.5 * math.log(nu * math.pi) - math.log(s)
                       - 0.5 * (nu + 1.0) * np.log1p(z * z / nu))
            elif self.family == "halfcauchy":
                out = math.log(2.0 / (math.pi * s)) - np.log1p(z * z)
            else:
                out = -math.log(s) - z
        return np.where(x >= 0.0, out, -np.inf)

    def rvs(self, rng: np.random.Generator, size=None) -> np.ndarray:
        """Draws from the prior."""
        if self.family == "halfstudentt":
            return np.abs(self.scale * rng.standard_t(self.nu, size=size))
        return self._scipy().rvs(size=size, random_state=rng)

    def quantile(self, q: float) -> float:
        """Prior quantile (used to size quadrature grids)."""
        from scipy import stats

        if self.family == "halfstudentt":
            return float(stats.t(df=self.nu, scale=self.scale).ppf(0.5 + q / 2))
        return float(self._scipy().ppf(q))

    def pymc(self, name: str, *, scale=None, **kwargs):
        """Create the PyMC random variable ``name`` in the current model context.

        ``scale`` overrides :attr:`scale` (e.g. one scale per element of a vector variable).
        """
        import pymc as pm

        s = self.scale if scale is None else np.asarray(scale, dtype=np.float64)
        if self.family == "halfnormal":
            return pm.HalfNormal(name, sigma=s, **kwargs)
        if self.family == "halfstudentt":
            return pm.HalfStudentT(name, nu=self.nu, sigma=s, **kwargs)
        if self.family == "halfcauchy":
            return pm.HalfCauchy(name, beta=s, **kwargs)
        return pm.Exponential(name, lam=1.0 / s, **kwargs)

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
            raise DataError(f"Normal prior needs a finite loc and positive scale, got "
                             f"({self.loc}, {self.scale})")

    def logpdf(self, x):
        """Log density (numpy, vectorised)."""
        z = (np.asarray(x, dtype=np.float64) - self.loc) / self.scale
        return -0.5 * math.log(2.0 * math.pi) - math.log(self.scale) - 0.5 * z * z

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
    scale"). Override any part with :func:`dataclasses.replace` or
    :func:`models.prior_grammar.parse_prior_overrides`.
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
        center, sd = data.moments(k)  # from the group statistics: no pass over the rows
        sd = GAUSSIAN.prior_scale(center, sd)
        return cls(mu=NormalPrior(center, 2.5 * sd), tau=ScalePrior("halfstudentt", sd),
                   sigma=ScalePrior("halfstudentt", sd), center=center, scale=sd)

    # --------------------------------------------------------------- PyMC
    def create(self):
        """Create ``mu``, ``tau``, ``sigma`` in the current PyMC model; returns the three RVs."""
        import pymc as pm

        from varcomp.models.transforms import Affine, ScaledLog

        mu = pm.Normal("mu", mu=self.mu.loc, sigma=self.mu.scale,
                       default_transform=Affine(self.center, self.scale))
        tau = self.tau.pymc("tau", default_transform=ScaledLog(self.scale))
        sigma = self.sigma.pymc("sigma", default_transform=ScaledLog(self.scale))
        return mu, tau, sigma

    # --------------------------------------------------------------- numpy
    free_names = ("mu", "tau", "sigma")

    def logpdf(self, mu, tau, sigma):
        """Joint prior log density (numpy), the same as the PyMC model's prior terms."""
        return self.mu.logpdf(mu) + self.tau.logpdf(tau) + self.sigma.logpdf(sigma)

    def free_point(self, mu, tau, sigma) -> dict:
        """The free parameters at (mu, tau, sigma) (they are these three)."""
        return {"mu": mu, "tau": tau, "sigma": sigma}

    logpdf_free = logpdf

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """One draw of (mu, tau, sigma) from the prior."""
        return {"mu": float(self.mu.rvs(rng)), "tau": float(self.tau.rvs(rng)),
                "sigma": float(self.sigma.rvs(rng))}

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        return {"mu": self.mu.describe(), "tau": self.tau.describe(),
                "sigma": self.sigma.describe()}


def check_relative_scale(value: float, sd: float, name: str) -> None:
    """A prior scale within :data:`RELATIVE_SCALE` of the data's sd (one-line error)."""
    lo, hi = sd / RELATIVE_SCALE, sd * RELATIVE_SCALE
    if not lo <= value <= hi:
        raise DataError(f"prior {name} {value:g} is outside [{lo:.3g}, {hi:.3g}] (10^-6 to "
                         f"10^6 times the data's sd {sd:.4g}): choose a scale on the data's "
                         f"scale")


def check_relative(priors: Priors) -> None:
    """Scales within :data:`RELATIVE_SCALE` of the data's sd, the mean's location too."""
    sd = priors.scale
    hi = sd * RELATIVE_SCALE
    for name, value in (("mu scale", priors.mu.scale), ("tau scale", priors.tau.scale),
                        ("sigma scale", priors.sigma.scale)):
        check_relative_scale(value, sd, name)
    if not abs(priors.mu.loc - priors.center) <= hi:
        raise DataError(f"prior mu location {priors.mu.loc:g} is more than 10^6 sd(y) from the "
                         f"data's mean {priors.center:.6g}: choose a location near the data")


def lkj_log_norm(p: int, eta: float) -> float:
    """Log c_p of the LKJ(eta) density det(R)^(eta - 1) / c_p (Lewandowski et al. 2009)."""
    from scipy.special import betaln

    out = 0.0
    for k in range(1, p):
        b = eta + (p - k - 1) / 2.0
        out += (2.0 * eta - 2.0 + p - k) * (p - k) * math.log(2.0) + (p - k) * betaln(b, b)
    return out


@dataclass(frozen=True)
class MvPriors:
    r"""The multivariate model's prior, used by every builder in :mod:`models.forms.multivariate`.

    .. math::
        \mu_k \sim \mathrm{Normal}(m_k, s_{\mu,k}),\qquad
        V = \mathrm{diag}(\tau)\,\Omega_V\,\mathrm{diag}(\tau),\quad
        \tau_k \sim \mathrm{HalfNormal}(s_{\tau,k}),\quad \Omega_V \sim \mathrm{LKJ}(\eta_V),

    and Sigma likewise with ``sigma_scale`` and ``eta_within`` (PyMC's ``LKJCholeskyCov``).

    Why these families: the LKJ-Cholesky prior separates scales from correlations, so each
    outcome's sd gets a prior in its own units; ``eta = 2`` gives, for p = 2, a Beta(2, 2)
    density on (r + 1) / 2 for each correlation, which vanishes at r = +-1 and so keeps the sampler
    off singular matrices while staying flat enough not to pull a correlation of 0.8 in. The sd
    priors are HalfNormal, not the univariate HalfStudentT, because nutpie 0.16 cannot
    initialise an ``LKJCholeskyCov`` with a HalfStudentT ``sd_dist`` (DEVELOPERS.md). With the
    default scale sd_k (the outcome's sample sd) each component sd has prior median 0.67 sd_k
    and 95% mass below 1.96 sd_k: since V_kk + Sigma_kk is about sd_k^2, that covers every
    split of the variance. A p = 1 slice of this prior is therefore not the univariate
    :class:`Priors`.

    ``center`` and ``scale`` (per outcome) are the data's location and spread. They do not
    change the prior: the sampler's coordinates are (mu - center) / scale and the Cholesky
    factors of D^-1 V D^-1 and D^-1 Sigma D^-1 (D = diag(scale)), named ``chol_V_std`` and
    ``chol_Sigma_std``, so data in any units sample alike. Their LKJ sd priors are
    HalfNormal(s_tau / scale), which is the prior above on the original scale. The model's log
    density in these coordinates differs from the density of (mu, chol V, chol Sigma) on the
    original scale by the constant :meth:`log_jacobian_constant`; the likelihood itself is
    always evaluated on the original data, so comparisons of likelihoods are exact.
    """

    mu_loc: tuple[float, ...]
    mu_scale: tuple[float, ...]
    tau_scale: tuple[float, ...]
    sigma_scale: tuple[float, ...]
    eta_between: float = 2.0
    eta_within: float = 2.0
    center: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        p = len(self.mu_loc)
        for name in ("mu_loc", "mu_scale", "tau_scale", "sigma_scale", "center", "scale"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(float(v) for v in np.atleast_1d(value))
            object.__setattr__(self, name, value)
            if len(value) != p:
                raise DataError(f"MvPriors.{name} needs {p} values (one per outcome), got "
                                 f"{len(value)}")
            if not all(math.isfinite(v) for v in value):
                raise DataError(f"MvPriors.{name} must be finite, got {value}")
            if name not in ("mu_loc", "center") and not all(v > 0 for v in value):
                raise DataError(f"MvPriors.{name} must be positive, got {value}")
        if p < 2:
            raise DataError("MvPriors is for p >= 2 outcomes; use Priors for one response")
        for name in ("eta_between", "eta_within"):
            eta = float(getattr(self, name))
            if not (eta > 0 and math.isfinite(eta)):
                raise DataError(f"MvPriors.{name} (LKJ shape) must be positive, got {eta}")
        if self.center is None:
            object.__setattr__(self, "center", self.mu_loc)
        if self.scale is None:
            object.__setattr__(self, "scale", self.mu_scale)

    @property
    def p(self) -> int:
        """Number of outcomes."""
        return len(self.mu_loc)

    @classmethod
    def default(cls, data: ClusteredData) -> MvPriors:
        """Weakly informative defaults scaled to each outcome's observed values.

        mu_k ~ Normal(mean_k, 2.5 sd_k); tau_k, sigma_k ~ HalfNormal(sd_k); LKJ(eta=2) on both
        correlation matrices (reasons in the class docstring).
        """
        center, sd = [], []
        for k in range(data.p):
            y = data.y[:, k]
            y = y[np.isfinite(y)]
            c = float(np.mean(y)) if y.size else 0.0
            s = GAUSSIAN.prior_scale(c, float(np.std(y, ddof=1)) if y.size > 1 else 0.0)
            center.append(c)
            sd.append(s)
        return cls(mu_loc=tuple(center), mu_scale=tuple(2.5 * s for s in sd),
                   tau_scale=tuple(sd), sigma_scale=tuple(sd), center=tuple(center),
                   scale=tuple(sd))

    # --------------------------------------------------------------- PyMC
    def create(self):
        """Create the parameters and the derived Deterministics in the current PyMC model.

        The model needs coords ``outcome`` and ``outcome_bis``. Creates the free variables
        ``mu`` (dim outcome), ``chol_V_std`` and ``chol_Sigma_std`` (packed LKJ Cholesky
        factors on the standardised scale), and the Deterministics ``V``, ``Sigma``
        (outcome, outcome_bis), ``tau``, ``sigma``, ``icc`` (outcome; icc_k = V_kk / (V_kk +
        Sigma_kk)), ``corr_between``, ``corr_within`` (outcome, outcome_bis).

        Returns
        -------
        mu, chol_V, chol_Sigma
            Tensors on the data's scale; chol_V and chol_Sigma are lower-triangular (p, p).
        """
        import pymc as pm
        import pytensor.tensor as pt

        from varcomp.models.transforms import OutcomeAffine

        p = self.p
        scale = np.asarray(self.scale)
        mu = pm.Normal("mu", mu=np.asarray(self.mu_loc), sigma=np.asarray(self.mu_scale),
                       dims="outcome",
                       default_transform=OutcomeAffine(self.center, self.scale, event_ndim=0))
        chols = []
        for name, sds, eta in (("V", self.tau_scale, self.eta_between),
                               ("Sigma", self.sigma_scale, self.eta_within)):
            packed = pm.LKJCholeskyCov(
                f"chol_{name}_std", n=p, eta=float(eta),
                sd_dist=pm.HalfNormal.dist(sigma=np.asarray(sds) / scale, shape=p),
                compute_corr=False)
            chols.append(scale[:, None] * pm.expand_packed_triangular(p, packed, lower=True))
        chol_V, chol_Sigma = chols
        dims2 = ("outcome", "outcome_bis")
        V = pm.Deterministic("V", chol_V @ chol_V.T, dims=dims2)
        Sigma = pm.Deterministic("Sigma", chol_Sigma @ chol_Sigma.T, dims=dims2)
        # sqrt(diag) as row norms of the Cholesky factor (no pt.diagonal: its gradient breaks
        # pytensor 2.38's C backend)
        tau = pm.Deterministic("tau", pt.sqrt(pt.sum(chol_V**2, axis=1)), dims="outcome")
        sigma = pm.Deterministic("sigma", pt.sqrt(pt.sum(chol_Sigma**2, axis=1)), dims="outcome")
        # models.shares.icc (the definition) in the graph's algebra; tests/test_shares.py: equal
        pm.Deterministic("icc", tau**2 / (tau**2 + sigma**2), dims="outcome")
        pm.Deterministic("corr_between", V / (tau[:, None] * tau[None, :]), dims=dims2)
        pm.Deterministic("corr_within", Sigma / (sigma[:, None] * sigma[None, :]), dims=dims2)
        return mu, chol_V, chol_Sigma

    def point(self, mu, V, Sigma) -> dict[str, np.ndarray]:
        """The free variables' (constrained) values for given ``mu``, ``V``, ``Sigma``."""
        scale = np.asarray(self.scale)
        out = {"mu": np.asarray(mu, dtype=np.float64)}
        rows, cols = np.tril_indices(self.p)  # PyMC's packing: the lower triangle by rows
        for name, m in (("V", V), ("Sigma", Sigma)):
            std = np.asarray(m, dtype=np.float64) / np.outer(scale, scale)
            out[f"chol_{name}_std"] = np.linalg.cholesky(std)[rows, cols]
        return out

    def log_jacobian_constant(self) -> float:
        """Log abs(d(original) / d(standardised)) of the map to the sampler's coordinates.

        Row k of a Cholesky factor (k + 1 packed entries) is multiplied by scale_k, for both V
        and Sigma; mu is handled by its transform, whose Jacobian PyMC includes. So
        log p(chol V, chol Sigma) = log p(chol_V_std, chol_Sigma_std) - this constant.
        """
        return float(2.0 * sum((k + 1) * math.log(s) for k, s in enumerate(self.scale)))

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        def fmt(xs):
            return "[" + ", ".join(f"{x:.4g}" for x in xs) + "]"

        return {
            "mu": f"Normal(loc={fmt(self.mu_loc)}, scale={fmt(self.mu_scale)})",
            "V": f"LKJCholeskyCov(eta={self.eta_between:g}, sd=HalfNormal({fmt(self.tau_scale)}))",
            "Sigma": f"LKJCholeskyCov(eta={self.eta_within:g}, "
                     f"sd=HalfNormal({fmt(self.sigma_scale)}))",
        }


__all__ += ["MvPriors"]


@dataclass(frozen=True)
class PartitionPriors:
    r"""A prior on the variance-partition scale for the one-way model.

    ``--variance-prior partition``: priors on the total sd and the share of the variance
    between clusters.

    .. math::
        \mu \sim N(m, s_\mu),\quad T = \sqrt{\tau^2 + \sigma^2} \sim p_T,\quad
        \mathrm{ICC} = \tau^2 / T^2 \sim \mathrm{Beta}(a, b),\quad
        \tau = T\sqrt{\mathrm{ICC}},\ \sigma = T\sqrt{1 - \mathrm{ICC}}

    Defaults: T ~ HalfStudentT(3, sd(y)), ICC ~ Beta(1, 1) (uniform). Prefer it when the question
    is the ICC itself and there are few clusters: the default sd priors imply a prior on the ICC
    that is not uniform (it piles up near 0 and 1 for sd priors of equal scale), whereas here the
    ICC's prior is stated directly and the data's total variance is kept separate from how it
    splits. The free parameters are ``mu``, ``total_sd`` and ``share`` (= icc); ``tau`` and
    ``sigma`` are Deterministics, so every form and report reads the same names.
    """

    mu: NormalPrior
    total: ScalePrior
    a: float = 1.0
    b: float = 1.0
    center: float = 0.0
    scale: float = 1.0

    free_names = ("mu", "total_sd", "share")

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            v = float(getattr(self, name))
            if not (0 < v <= 1e3 and math.isfinite(v)):
                raise DataError(f"the ICC's Beta prior needs 0 < {name} <= 1000, got {v}")

    @classmethod
    def default(cls, data: ClusteredData) -> PartitionPriors:
        """Defaults: mu as :meth:`Priors.default`; T ~ HalfStudentT(3, sd(y)); ICC ~ Beta(1, 1)."""
        base = Priors.default(data)
        return cls(mu=base.mu, total=ScalePrior("halfstudentt", base.scale),
                   center=base.center, scale=base.scale)

    def create(self):
        """``mu``, ``total_sd``, ``share`` in the current PyMC model; returns (mu, tau, sigma)."""
        import pymc as pm
        import pytensor.tensor as pt

        from varcomp.models.transforms import Affine, ScaledLog

        mu = pm.Normal("mu", mu=self.mu.loc, sigma=self.mu.scale,
                       default_transform=Affine(self.center, self.scale))
        total = self.total.pymc("total_sd", default_transform=ScaledLog(self.scale))
        share = pm.Beta("share", alpha=self.a, beta=self.b)
        tau = pm.Deterministic("tau", total * pt.sqrt(share))
        sigma = pm.Deterministic("sigma", total * pt.sqrt(1.0 - share))
        return mu, tau, sigma

    def free_point(self, mu, tau, sigma) -> dict:
        """The free parameters at (mu, tau, sigma)."""
        t2 = np.asarray(tau) ** 2
        total2 = t2 + np.asarray(sigma) ** 2
        return {"mu": mu, "total_sd": np.sqrt(total2), "share": t2 / total2}

    def logpdf_free(self, mu, tau, sigma):
        """Log density of (mu, T, ICC), the parameters the prior is written for (PyMC's terms)."""
        p = self.free_point(mu, tau, sigma)
        from scipy import stats

        return (self.mu.logpdf(mu) + self.total.logpdf(p["total_sd"])
                + stats.beta(self.a, self.b).logpdf(p["share"]))

    def logpdf(self, mu, tau, sigma):
        """Log density of (mu, tau, sigma): :meth:`logpdf_free` + log(2 tau sigma / T^3)."""
        p = self.free_point(mu, tau, sigma)
        return (self.logpdf_free(mu, tau, sigma)
                + np.log(2.0 * np.asarray(tau) * np.asarray(sigma) / p["total_sd"] ** 3))

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """One draw of (mu, tau, sigma) from the prior."""
        total = float(self.total.rvs(rng))
        share = float(rng.beta(self.a, self.b))
        return {"mu": float(self.mu.rvs(rng)), "tau": total * math.sqrt(share),
                "sigma": total * math.sqrt(1.0 - share)}

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        return {"mu": self.mu.describe(), "total sd": self.total.describe(),
                "icc": f"Beta(a={self.a:g}, b={self.b:g})"}


__all__ += ["PartitionPriors"]
