r"""Priors and derived quantities of the random-intercept GLMMs (binomial, Poisson responses).

.. math::
    g(E[y_i]) = \eta_i = x_i^\top\beta + \textstyle\sum_f u_{f, l_f(i)} + \text{offset}_i,
    \qquad u_f \sim N(0, \tau_f^2 I)

:class:`GlmmPriors` is the one prior spec of every GLMM form; :func:`add_derived` adds per draw
the shares of :mod:`models.shares` with the likelihood's distribution-specific variance.
Everything is on the link scale (logit, probit or log units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from varcomp.models.errors import DataError
from varcomp.models.likelihoods import LIKELIHOODS
from varcomp.models.priors import NormalPrior, ScalePrior

__all__ = ["AGQ_NODES", "INTERCEPT_SD", "SLOPE_SD", "TAU_PRIOR", "GlmmMl", "GlmmPriors",
           "add_derived", "estimates", "eta_fixed", "likelihood_of", "parse_glmm_priors"]

INTERCEPT_SD = 2.5
"""The intercept's prior sd on the link scale (rstanarm's default for GLMs)."""
SLOPE_SD = 2.5
"""A slope's prior sd per sd of its covariate, on the link scale (rstanarm's autoscale)."""
TAU_PRIOR = ScalePrior("halfstudentt", 1.0, 3.0)
"""Each factor's sd: HalfStudentT(3, 1) in link units (tau = 1 is a latent logit ICC of 0.23)."""


def likelihood_of(data):
    """The data's response distribution record (:data:`models.likelihoods.LIKELIHOODS`)."""
    return LIKELIHOODS[data.likelihood]


def _center(data) -> float:
    """The link of the pooled mean response: the intercept prior's location."""
    y = data.y[:, 0]
    if data.trials is not None:  # binomial: logit / probit of the pooled proportion
        from scipy import special

        n = float(data.trials.sum())
        p = min(max(float(y.sum()), 0.5), n - 0.5) / n
        return float(special.logit(p) if data.link == "logit" else special.ndtri(p))
    exposure = np.exp(data.offset).sum() if data.offset is not None else data.n_obs
    return float(math.log(max(float(y.sum()), 0.5) / exposure))


@dataclass(frozen=True)
class GlmmPriors:
    r"""The prior of every GLMM form (link scale).

    .. math::
        \alpha \sim N(g(\bar y), 2.5),\quad \beta_j \sim N(0, 2.5 / sd(x_j)),\quad
        \tau_f \sim \text{HalfStudentT}(3, 1)

    alpha is the intercept at the covariates' means (as :class:`models.lmm.LmmPriors`), centred
    at the link of the pooled proportion or rate (the Gaussian prior's mean(y), on the link
    scale); the slopes' scale is rstanarm's autoscale. No sigma.
    """

    terms: tuple[str, ...]
    factors: tuple[str, ...]
    intercept: NormalPrior | None
    slopes: tuple[NormalPrior, ...]
    tau: tuple[ScalePrior, ...]
    x_mean: tuple[float, ...]
    x_scale: tuple[float, ...]

    @property
    def intercept_index(self) -> int | None:
        """Position of the Intercept column in X, or None."""
        return self.terms.index("Intercept") if "Intercept" in self.terms else None

    @property
    def slope_index(self) -> tuple[int, ...]:
        """Positions of the other columns in X."""
        return tuple(j for j, t in enumerate(self.terms) if t != "Intercept")

    @classmethod
    def default(cls, data) -> GlmmPriors:
        """The defaults of the class docstring, scaled to the data's covariates."""
        design = data.design
        X = design.X
        x_mean, x_scale = [], []
        for j in (j for j, t in enumerate(design.terms) if t != "Intercept"):
            s = float(X[:, j].std(ddof=1)) if X.shape[0] > 1 else 0.0
            if not s > 0:
                s = float(np.sqrt(np.mean(X[:, j] ** 2))) or 1.0
            x_mean.append(float(X[:, j].mean()) if design.intercept else 0.0)
            x_scale.append(s)
        return cls(terms=tuple(design.terms), factors=tuple(f.name for f in design.factors),
                   intercept=NormalPrior(_center(data), INTERCEPT_SD) if design.intercept
                   else None,
                   slopes=tuple(NormalPrior(0.0, SLOPE_SD / s) for s in x_scale),
                   tau=tuple(TAU_PRIOR for _ in design.factors),
                   x_mean=tuple(x_mean), x_scale=tuple(x_scale))

    def beta(self, alpha, slopes) -> np.ndarray:
        """The coefficients (..., k) in X's column order from alpha (...), slopes (..., k - 1)."""
        slopes = np.asarray(slopes, dtype=np.float64)
        out = np.zeros((*slopes.shape[:-1], len(self.terms)))
        out[..., list(self.slope_index)] = slopes
        if self.intercept_index is not None:
            out[..., self.intercept_index] = np.asarray(alpha) - slopes @ np.asarray(self.x_mean)
        return out

    def logpdf(self, beta, tau):
        """Joint prior log density at (beta (..., k), tau (..., F)) (numpy), as PyMC's."""
        beta = np.asarray(beta, dtype=np.float64)
        tau = np.asarray(tau, dtype=np.float64).reshape(*beta.shape[:-1], len(self.tau))
        slopes = beta[..., list(self.slope_index)]
        out = np.zeros(beta.shape[:-1])
        for i, p in enumerate(self.slopes):
            out = out + p.logpdf(slopes[..., i])
        if self.intercept is not None:
            out = out + self.intercept.logpdf(beta[..., self.intercept_index]
                                              + slopes @ np.asarray(self.x_mean))
        for i, p in enumerate(self.tau):
            out = out + p.logpdf(tau[..., i])
        return out

    def draw(self, rng: np.random.Generator) -> dict:
        """One draw of (beta, tau) from the prior."""
        slopes = np.array([p.rvs(rng) for p in self.slopes])
        alpha = float(self.intercept.rvs(rng)) if self.intercept is not None else 0.0
        return {"beta": self.beta(alpha, slopes),
                "tau": np.array([p.rvs(rng) for p in self.tau])}

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        out = {}
        if self.intercept is not None:
            out["intercept (at the covariates' means, link scale)"] = self.intercept.describe()
        for j, p in zip(self.slope_index, self.slopes, strict=True):
            out[f"beta[{self.terms[j]}]"] = p.describe()
        for f, p in zip(self.factors, self.tau, strict=True):
            out[f"tau[{f}]"] = p.describe()
        return out

    def create(self):
        """Create ``alpha``, ``slope``, Deterministic ``beta`` (dim ``term``) and ``tau``.

        ``tau`` is a scalar for one factor and has dim ``factor`` otherwise (the names of
        :meth:`models.lmm.LmmPriors.create`). Returns (beta, tau).
        """
        import pymc as pm
        import pytensor.tensor as pt

        from varcomp.models.transforms import Affine, OutcomeAffine

        parts = {}
        if self.slope_index:
            parts["slope"] = pm.Normal(
                "slope", mu=np.array([p.loc for p in self.slopes]),
                sigma=np.array([p.scale for p in self.slopes]), dims="slope_term",
                default_transform=OutcomeAffine(np.zeros(len(self.slopes)),
                                                1.0 / np.asarray(self.x_scale), event_ndim=0))
        if self.intercept is not None:
            parts["alpha"] = pm.Normal("alpha", mu=self.intercept.loc,
                                       sigma=self.intercept.scale,
                                       default_transform=Affine(self.intercept.loc, 1.0))
        cols = []
        for j in range(len(self.terms)):
            if j == self.intercept_index:
                shift = (parts["slope"] @ np.asarray(self.x_mean)) if self.slope_index else 0.0
                cols.append(parts["alpha"] - shift)
            else:
                cols.append(parts["slope"][self.slope_index.index(j)])
        beta = pm.Deterministic("beta", pt.stack(cols), dims="term")
        if len({(p.family, p.nu) for p in self.tau}) != 1:
            raise DataError("the tau priors of the factors must share one family (and nu)")
        scales = np.array([p.scale for p in self.tau])
        kwargs = {} if len(self.tau) == 1 else {"dims": "factor"}
        tau = self.tau[0].pymc("tau", scale=scales if len(self.tau) > 1 else float(scales[0]),
                               **kwargs)
        return beta, tau


def parse_glmm_priors(priors: GlmmPriors, specs) -> GlmmPriors:
    """Apply ``--prior`` overrides (the grammar of :mod:`models.prior_grammar`).

    ``intercept=normal:LOC:SCALE``, ``beta[x]=normal:SCALE``, ``tau=FAMILY:SCALE`` or
    ``tau[f]=...``; no sigma.
    """
    from varcomp.models.prior_grammar import SD_HINTS, apply_priors

    def intercept(p, spec):
        if p.intercept is None:
            raise DataError(f"bad prior '{spec.text}': the formula has no intercept")
        return replace(p, intercept=spec.prior)

    def slopes(p, spec):
        names = [p.terms[j] for j in p.slope_index]
        if spec.label is not None and spec.label not in names:
            raise DataError(f"bad prior '{spec.text}': no fixed-effects column "
                            f"{spec.label!r}; columns: {names}")
        return replace(p, slopes=tuple(spec.prior if spec.label in (None, n) else old
                                       for n, old in zip(names, p.slopes, strict=True)))

    def tau(p, spec):
        if spec.label is not None and spec.label not in p.factors:
            raise DataError(f"bad prior '{spec.text}': no factor {spec.label!r}; factors: "
                            f"{list(p.factors)}")
        return replace(p, tau=tuple(spec.prior if spec.label in (None, f) else old
                                    for f, old in zip(p.factors, p.tau, strict=True)))

    return apply_priors(priors, specs, {"intercept": (NormalPrior, intercept),
                                        "beta": (NormalPrior, slopes),
                                        "tau": (ScalePrior, tau)},
                        {**SD_HINTS, "sigma": "a binomial or Poisson model has no sigma"})


def eta_fixed(data, beta) -> np.ndarray:
    """The mean linear predictor over the rows per draw: mean(X beta) + mean(offset)."""
    eta0 = np.asarray(beta) @ data.design.X.mean(axis=0)
    return eta0 + (float(data.offset.mean()) if data.offset is not None else 0.0)


def add_derived(idata, data, likelihood) -> None:
    """Add the per-draw shares to ``idata.posterior`` (every GLMM form alike).

    With the likelihood's latent variance v (its default: pi^2/3 logit, 1 probit, the
    log-normal ln(1 + 1/lambda) for Poisson; :attr:`Likelihood.latent_variance`): ``icc`` =
    sum tau^2 / (sum tau^2 + v) (latent scale; adjusted for the covariates), ``icc_data`` (data
    scale, at the mean linear predictor, :attr:`Likelihood.data_icc`); with several factors
    ``vpc`` (dim ``component``) per factor and ``residual``; with covariates ``r2_marginal``
    and ``r2_conditional``; Poisson also ``icc_trigamma``, the latent ICC with the trigamma
    variance.
    """
    import xarray as xr

    from varcomp.models import shares
    from varcomp.models.forms import family_of
    from varcomp.models.lmm import fixed_variance

    lik = likelihood
    post = idata.posterior
    dims = ("chain", "draw")
    beta = post["beta"].values
    tau = post["tau"].values
    tau = tau[..., None] if tau.ndim == 2 else tau
    factors = ([str(f) for f in post["tau"].coords["factor"].values]
               if "factor" in post["tau"].dims else [data.design.factors[0].name])
    t2 = {f: tau[..., i] ** 2 for i, f in enumerate(factors)}
    total = sum(t2.values())
    eta0 = eta_fixed(data, beta)
    variances = lik.latent_variance(data.link, eta0, total)
    v = next(iter(variances.values()))
    post["icc"] = xr.DataArray(shares.icc(total, v), dims=dims)
    for name, other in list(variances.items())[1:]:
        post[f"icc_{name}"] = xr.DataArray(shares.icc(total, other), dims=dims)
    post["icc_data"] = xr.DataArray(lik.data_icc(data.link, eta0, total), dims=dims)
    if not family_of(data).scalar_tau:
        parts = shares.vpc(t2, v)
        post["vpc"] = xr.DataArray(np.stack(list(parts.values()), axis=-1),
                                   dims=(*dims, "component"), coords={"component": list(parts)})
    if data.design.k > 1 or not data.design.intercept:
        sf2 = shares.fixed_variance(beta, fixed_variance(data))
        post["r2_marginal"] = xr.DataArray(shares.r2_marginal(total, v, sf2), dims=dims)
        post["r2_conditional"] = xr.DataArray(shares.r2_conditional(total, v, sf2), dims=dims)


@dataclass(frozen=True)
class GlmmMl:
    """A GLMM maximum-likelihood fit (:func:`models.glmm_estimate.fit_glmm`) in summary terms.

    ``as_dict``: ``method`` (``laplace`` or ``agq<K>``), ``beta`` by term, ``tau`` (a number for
    one factor, by factor otherwise), ``icc`` (latent scale, the likelihood's default variance)
    and ``icc_data`` at the estimates (one factor) or ``vpc`` (several), ``criterion`` (the
    deviance -2 log L, constants included), ``boundary`` (bool, or by factor), ``converged``.
    """

    fit: object
    terms: tuple[str, ...]
    factors: tuple[str, ...]
    link: str
    likelihood: object
    eta0: float

    def as_dict(self) -> dict:
        """Plain-dict form for JSON."""
        from varcomp.models import shares

        f = self.fit
        tau = {name: float(t) for name, t in zip(self.factors, f.tau, strict=True)}
        total = sum(t * t for t in tau.values())
        v = float(next(iter(self.likelihood.latent_variance(self.link, self.eta0,
                                                            total).values())))
        out = {"method": "laplace" if f.nagq == 1 else f"agq{f.nagq}",
               "beta": {t: float(b) for t, b in zip(self.terms, f.beta, strict=True)}}
        if len(tau) == 1:
            (name, t), = tau.items()
            out |= {"tau": t, "icc": float(shares.icc(total, v)),
                    "icc_data": float(self.likelihood.data_icc(self.link, self.eta0, total))}
            boundary = bool(t < BOUNDARY_TAU)
        else:
            out["tau"] = tau
            out["vpc"] = {k: float(x) for k, x in shares.vpc(
                {k: t * t for k, t in tau.items()}, v).items()}
            boundary = {k: bool(t < BOUNDARY_TAU) for k, t in tau.items()}
        out |= {"criterion": float(f.deviance), "boundary": boundary,
                "converged": bool(f.converged)}
        return out

    @property
    def boundary(self) -> bool:
        """Whether any variance is estimated at 0."""
        return bool(self.fit.at_boundary)


BOUNDARY_TAU = 1e-4
"""A tau below this is reported at the boundary 0 (``models.glmm_estimate.BOUNDARY_TAU``)."""
AGQ_NODES = 25
"""lme4's usual nAGQ for one grouping factor's adaptive quadrature ML."""


def estimates(data, *, agq: bool = False) -> dict[str, GlmmMl]:
    """ML by Laplace (any factors) and, with ``agq``, adaptive Gauss-Hermite with 25 nodes.

    ``agq`` is the family record's choice (one factor). Keys ``laplace`` and ``agq25``: lme4's
    ``glmer`` nAGQ = 1 and 25 (equal to 1e-3,
    tests/test_glmm_estimate.py).
    """
    from varcomp.models.glmm_estimate import fit_glmm

    d = data.design
    lik = likelihood_of(data)
    args = (data.y[:, 0], data.trials, d.X, data.offset, [f.codes for f in d.factors],
            lik.name, data.link)
    runs = {"laplace": 1, f"agq{AGQ_NODES}": AGQ_NODES} if agq else {"laplace": 1}
    out = {}
    for key, nagq in runs.items():
        fit = fit_glmm(*args, nagq=nagq)
        out[key] = GlmmMl(fit, tuple(d.terms), tuple(f.name for f in d.factors), data.link,
                          lik, float(eta_fixed(data, fit.beta)))
    return out
