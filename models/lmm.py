r"""Priors and derived quantities of random-intercept mixed models (covariates, several factors).

.. math::
    y = X\beta + \sum_f Z_f u_f + e,\qquad u_f \sim N(0, \tau_f^2 I),\qquad e \sim N(0, \sigma^2 I)

:class:`LmmPriors` is the one prior spec every form of these families uses (PyMC builders and
compiled code alike); :func:`add_derived` adds, per draw and identically for every form, the
quantities the report and summary.json show: for one factor the adjusted ICC, the unadjusted ICC
and marginal and conditional R^2 (Nakagawa & Schielzeth 2013); for several factors each
component's share of the variance (VPC) and the correlation of rows that share factors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from varcomp.models import shares
from varcomp.models.errors import DataError
from varcomp.models.likelihoods import GAUSSIAN, Likelihood
from varcomp.models.priors import NormalPrior, ScalePrior, check_relative_scale
from varcomp.models.terms import sd_coords

__all__ = ["LmmPriors", "add_derived", "fixed_variance", "parse_lmm_priors"]


@dataclass(frozen=True)
class LmmPriors:
    r"""The prior of the mixed models with covariates, used by every form.

    .. math::
        \alpha \sim N(m_\alpha, s_\alpha),\quad \beta_j \sim N(m_j, s_j)\ (j \ne \text{Intercept}),
        \quad \tau_f \sim p_\tau(s_{\tau,f}),\quad \sigma \sim p_\sigma

    alpha is the intercept at the covariates' means (rstanarm's convention: the intercept's prior
    does not depend on where the covariates happen to be centred), so
    beta[Intercept] = alpha - sum_j beta_j xbar_j. Defaults (:meth:`default`): alpha ~
    N(mean(y), 2.5 sd(y)); beta_j ~ N(0, 2.5 sd(y) / sd(x_j)) (rstanarm's autoscale: a change of one
    sd in x_j moves y by at most a few sd(y) a priori, whatever the units); tau_f, sigma ~
    HalfStudentT(3, sd(y)) as in the one-way model. The sampler's coordinates are standardised:
    (alpha - mean y) / sd(y), beta_j sd(x_j) / sd(y), log(tau_f / sd(y)), log(sigma / sd(y)).
    """

    terms: tuple[str, ...]
    factors: tuple[str, ...]
    intercept: NormalPrior | None
    slopes: tuple[NormalPrior, ...]
    tau: tuple[ScalePrior, ...]
    sigma: ScalePrior
    center: float
    scale: float
    x_mean: tuple[float, ...]
    x_scale: tuple[float, ...]
    scalar_tau: bool = False
    """tau is one number per draw (the family's :attr:`~models.forms.base.Family.scalar_tau`),
    not a vector over the ``factor`` dim."""

    @property
    def intercept_index(self) -> int | None:
        """Position of the Intercept column in X, or None."""
        return self.terms.index("Intercept") if "Intercept" in self.terms else None

    @property
    def slope_index(self) -> tuple[int, ...]:
        """Positions of the other columns in X."""
        return tuple(j for j, t in enumerate(self.terms) if t != "Intercept")

    @classmethod
    def default(cls, data) -> LmmPriors:
        """Weakly informative defaults scaled to the data (see the class docstring)."""
        design = data.design
        mean, m2 = data.cells.pooled  # moments of [y, X] over the rows
        N = data.cells.n_obs
        center = float(mean[0])
        sd = GAUSSIAN.prior_scale(center, math.sqrt(m2[0, 0] / max(N - 1, 1)))
        slope_cols = [j for j, t in enumerate(design.terms) if t != "Intercept"]
        x_mean, x_scale = [], []
        for j in slope_cols:
            m = float(mean[1 + j])
            s = math.sqrt(m2[1 + j, 1 + j] / max(N - 1, 1))
            if not s > 0:  # no intercept: a constant column; its root mean square
                s = math.sqrt(m2[1 + j, 1 + j] / N + m * m) or 1.0
            x_mean.append(m if design.intercept else 0.0)
            x_scale.append(s)
        from varcomp.models.forms import family_of

        half = ScalePrior("halfstudentt", sd)
        names = sd_coords(design.random) or [design.factors[0].name]  # tau's output names
        return cls(terms=tuple(design.terms), factors=tuple(names),
                   intercept=NormalPrior(center, 2.5 * sd) if design.intercept else None,
                   slopes=tuple(NormalPrior(0.0, 2.5 * sd / s) for s in x_scale),
                   tau=tuple(half for _ in design.factors), sigma=half, center=center, scale=sd,
                   x_mean=tuple(x_mean), x_scale=tuple(x_scale),
                   scalar_tau=family_of(data).scalar_tau)

    def tau_at(self, tau, d: int):
        """Factor ``d``'s tau from the model's ``tau`` (a scalar, or a vector over ``factor``)."""
        return tau if self.scalar_tau else tau[d]

    # --------------------------------------------------------------- numpy
    def beta(self, alpha, slopes) -> np.ndarray:
        """Return beta (..., k) in X's column order from alpha (...) and the slopes (..., k - 1)."""
        slopes = np.asarray(slopes, dtype=np.float64)
        out = np.zeros((*slopes.shape[:-1], len(self.terms)))
        out[..., list(self.slope_index)] = slopes
        i0 = self.intercept_index
        if i0 is not None:
            out[..., i0] = np.asarray(alpha) - slopes @ np.asarray(self.x_mean)
        return out

    def logpdf(self, beta, tau, sigma):
        """Joint prior log density at (beta, tau, sigma) (numpy), as the PyMC models'.

        Vectorised over leading axes: ``beta`` (..., k), ``tau`` (..., F) (or (...) for one
        factor), ``sigma`` (...).
        """
        beta = np.asarray(beta, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        tau = np.asarray(tau, dtype=np.float64).reshape(*sigma.shape, len(self.tau))
        slopes = beta[..., list(self.slope_index)]
        out = sum((p.logpdf(slopes[..., i]) for i, p in enumerate(self.slopes)),
                  np.zeros(sigma.shape))
        if self.intercept is not None:
            alpha = beta[..., self.intercept_index] + slopes @ np.asarray(self.x_mean)
            out = out + self.intercept.logpdf(alpha)
        for i, p in enumerate(self.tau):
            out = out + p.logpdf(tau[..., i])
        out = out + self.sigma.logpdf(sigma)
        return float(out) if out.ndim == 0 else out

    def draw(self, rng: np.random.Generator) -> dict:
        """One draw of (beta, tau, sigma) from the prior."""
        slopes = np.array([p.rvs(rng) for p in self.slopes])
        alpha = float(self.intercept.rvs(rng)) if self.intercept is not None else 0.0
        return {"beta": self.beta(alpha, slopes), "tau": np.array([p.rvs(rng) for p in self.tau]),
                "sigma": float(self.sigma.rvs(rng))}

    def describe(self) -> dict[str, str]:
        """Each parameter's prior as text (for reports)."""
        out = {}
        if self.intercept is not None:
            out["intercept (at the covariates' means)"] = self.intercept.describe()
        for j, p in zip(self.slope_index, self.slopes, strict=True):
            out[f"beta[{self.terms[j]}]"] = p.describe()
        for f, p in zip(self.factors, self.tau, strict=True):
            out[f"tau[{f}]"] = p.describe()
        out["sigma"] = self.sigma.describe()
        return out

    # --------------------------------------------------------------- PyMC
    def create(self):
        """Create the parameters in the current PyMC model; returns (beta, tau, sigma).

        Free variables: ``alpha`` (if the design has an intercept), ``slope`` (dim ``slope_term``,
        if it has other columns), ``tau`` (scalar for one factor, dim ``factor`` otherwise),
        ``sigma``; ``beta`` (dim ``term``) is a Deterministic. The model needs coords ``term``,
        ``slope`` and (several factors) ``factor``.
        """
        from varcomp.models.transforms import ScaledLog

        beta = self.create_beta()
        if len({(p.family, p.nu) for p in self.tau}) != 1:
            raise DataError("the tau priors of the factors must share one family (and nu)")
        one = self.tau[0]
        scales = np.array([p.scale for p in self.tau])
        kwargs = {} if self.scalar_tau else {"dims": "factor"}
        tau = one.pymc("tau", scale=float(scales[0]) if self.scalar_tau else scales,
                       default_transform=ScaledLog(self.scale), **kwargs)
        sigma = self.sigma.pymc("sigma", default_transform=ScaledLog(self.scale))
        return beta, tau, sigma

    def create_beta(self):
        """Create ``alpha``, ``slope`` and the Deterministic ``beta`` (dim ``term``); returns beta.

        The fixed part of :meth:`create`, shared with the random-slopes family's priors.
        """
        import pymc as pm
        import pytensor.tensor as pt

        from varcomp.models.transforms import Affine, OutcomeAffine

        parts = {}
        if self.slope_index:
            loc = np.array([p.loc for p in self.slopes])
            sd = np.array([p.scale for p in self.slopes])
            parts["slope"] = pm.Normal("slope", mu=loc, sigma=sd, dims="slope_term",
                                       default_transform=OutcomeAffine(
                                           np.zeros(sd.size), self.scale / np.asarray(self.x_scale),
                                           event_ndim=0))
        if self.intercept is not None:
            parts["alpha"] = pm.Normal("alpha", mu=self.intercept.loc, sigma=self.intercept.scale,
                                       default_transform=Affine(self.center, self.scale))
        cols = []
        for j in range(len(self.terms)):
            if j == self.intercept_index:
                shift = (parts["slope"] @ np.asarray(self.x_mean)) if self.slope_index else 0.0
                cols.append(parts["alpha"] - shift)
            else:
                cols.append(parts["slope"][self.slope_index.index(j)])
        return pm.Deterministic("beta", pt.stack(cols), dims="term")


def parse_lmm_priors(priors: LmmPriors, specs: Sequence[str] | None) -> LmmPriors:
    """Apply ``--prior`` overrides (the grammar of :mod:`models.prior_grammar`).

    ``beta=normal:SCALE`` (every slope), ``beta[x]=normal:SCALE`` or ``normal:LOC:SCALE``,
    ``intercept=normal:LOC:SCALE``, ``tau=FAMILY:SCALE[:NU]`` (every factor),
    ``tau[f]=FAMILY:SCALE[:NU]``, ``sigma=FAMILY:SCALE[:NU]``.
    """
    from varcomp.models.prior_grammar import SD_HINTS, PriorSpec, apply_priors

    def intercept(p: LmmPriors, spec: PriorSpec) -> LmmPriors:
        if p.intercept is None:
            raise DataError(f"bad prior '{spec.text}': the formula has no intercept")
        return replace(p, intercept=spec.prior)

    def slopes(p: LmmPriors, spec: PriorSpec) -> LmmPriors:
        names = [p.terms[j] for j in p.slope_index]
        if spec.label is not None and spec.label not in names:
            raise DataError(f"bad prior '{spec.text}': no fixed-effects column "
                            f"{spec.label!r}; columns: {names}")
        return replace(p, slopes=tuple(spec.prior if spec.label in (None, n) else old
                                       for n, old in zip(names, p.slopes, strict=True)))

    def tau(p: LmmPriors, spec: PriorSpec) -> LmmPriors:
        if spec.label is not None and spec.label not in p.factors:
            raise DataError(f"bad prior '{spec.text}': no factor {spec.label!r}; factors: "
                            f"{list(p.factors)}")
        return replace(p, tau=tuple(spec.prior if spec.label in (None, f) else old
                                    for f, old in zip(p.factors, p.tau, strict=True)))

    def sigma(p: LmmPriors, spec: PriorSpec) -> LmmPriors:
        return replace(p, sigma=spec.prior)

    priors = apply_priors(priors, specs, {"intercept": (NormalPrior, intercept),
                                          "beta": (NormalPrior, slopes),
                                          "tau": (ScalePrior, tau),
                                          "sigma": (ScalePrior, sigma)},
                          {**SD_HINTS, "mu": "a formula's mean is intercept=normal:LOC:SCALE"})
    for p in (*priors.tau, priors.sigma):
        check_relative_scale(p.scale, priors.scale, "tau/sigma scale")
    if len({(p.family, p.nu) for p in priors.tau}) != 1:
        raise DataError("the tau priors of the factors must share one family (and nu); give "
                         "tau=FAMILY:SCALE for all, then tau[f]=FAMILY:SCALE per factor")
    return priors


def fixed_variance(data) -> np.ndarray:
    """Cov(X) over the rows (k x k, ddof 1): sigma_f^2 = beta' Cov(X) beta = Var(X beta)."""
    return data.cells.covariance()[1:, 1:]


def add_derived(idata, data, likelihood: Likelihood) -> None:
    """Add the per-draw derived quantities to ``idata.posterior`` (every form alike).

    Each share is computed by :mod:`models.shares` (their one definition):

    One factor: ``icc`` = tau^2 / (tau^2 + sigma^2) (adjusted: the share of the residual
    variance left after the fixed effects that lies between clusters); ``icc_unadjusted`` =
    tau^2 / (sigma_f^2 + tau^2 + sigma^2) with sigma_f^2 = Var(X beta) over the rows;
    ``r2_marginal`` = sigma_f^2 / total; ``r2_conditional`` = (sigma_f^2 + tau^2) / total.
    Several factors: ``vpc`` (dim ``component``: each factor, then ``residual``; sums to 1)
    = tau_f^2 / (sum tau^2 + sigma^2); ``corr`` (dim ``shared``): the correlation of two rows in
    the same level of a factor (nested: the same units down to that level and different ones
    below; crossed: that factor only); ``deff``, the design effect of a mean over all rows
    (given the covariates), 1 + sum_f vpc_f (n_f - 1) with n_f = sum over f's levels of
    n_l^2 / N (:func:`models.cells.weighted_level_sizes`); ``r2_marginal`` and
    ``r2_conditional`` as above.
    """
    import xarray as xr

    from varcomp.models.cells import weighted_level_sizes
    from varcomp.models.forms import family_of

    post = idata.posterior
    sf2 = shares.fixed_variance(post["beta"].values, fixed_variance(data))
    tau = post["tau"].values
    s2 = np.asarray(likelihood.residual_variance(post))  # sigma^2 (Gaussian)
    dims = ("chain", "draw")
    if family_of(data).scalar_tau:  # tau is a scalar per draw
        t2 = tau**2
        values = {"icc": shares.icc(t2, s2), "icc_unadjusted": shares.icc_unadjusted(t2, s2, sf2),
                  "r2_marginal": shares.r2_marginal(t2, s2, sf2),
                  "r2_conditional": shares.r2_conditional(t2, s2, sf2)}
        for name, v in values.items():
            post[name] = xr.DataArray(v, dims=dims)
        return
    factors = list(post["tau"].coords["factor"].values)
    t2 = {f: tau[..., i] ** 2 for i, f in enumerate(factors)}
    parts = shares.vpc(t2, s2)
    post["vpc"] = xr.DataArray(np.stack(list(parts.values()), axis=-1), dims=(*dims, "component"),
                               coords={"component": list(parts)})
    sizes = dict(zip(factors, weighted_level_sizes(data), strict=True))
    post["deff"] = xr.DataArray(shares.deff_components(t2, s2, sizes), dims=dims)
    corr = shares.corr(t2, s2, bool(data.design.nested))
    post["corr"] = xr.DataArray(np.stack(list(corr.values()), axis=-1), dims=(*dims, "shared"),
                                coords={"shared": factors})
    if data.design.k == 1 and data.design.intercept:  # no covariates: R^2 marginal is 0
        return
    t2_sum = sum(t2.values())
    post["r2_marginal"] = xr.DataArray(shares.r2_marginal(t2_sum, s2, sf2), dims=dims)
    post["r2_conditional"] = xr.DataArray(shares.r2_conditional(t2_sum, s2, sf2), dims=dims)


def _sum_into(values: np.ndarray, index: np.ndarray, m: int) -> np.ndarray:
    """(S, C) values summed into (S, m) columns by ``index`` (C,).

    A sparse product, not ``np.add.at`` (which is ~50x slower on (draws, cells) arrays).
    """
    from scipy import sparse

    if index.size == m and np.array_equal(index, np.arange(m)):
        return values
    M = sparse.csr_matrix((np.ones(index.size), (np.arange(index.size), index)),
                          shape=(index.size, m))
    return np.asarray((M.T @ values.T).T)


def top_effect_moments(data, beta, tau, sigma, st=None):
    r"""Conditional mean and variance of each top-level effect u_i given the data, per draw.

    From the nested recursion (:mod:`models.compiled.lmm_nested`): with the top unit's
    A_i = sum of its children's a and B_i = sum of their b (the residuals' weighted sums),
    u_i | y ~ N(tau_1^2 B_i / g_i, tau_1^2 / g_i), g_i = 1 + tau_1^2 A_i. For one factor this is
    n tau^2 rbar / (sigma^2 + n tau^2) and tau^2 sigma^2 / (sigma^2 + n tau^2). ``beta`` (S, k),
    ``tau`` (S, F), ``sigma`` (S,) for S draws; returns (S, L) means and variances. ``st``:
    the design's :func:`models.cells.nested_of`, to evaluate many chunks of draws.
    """
    from varcomp.models.cells import nested_of

    st = nested_of(data) if st is None else st
    beta = np.atleast_2d(beta)
    t2 = np.atleast_2d(np.asarray(tau, dtype=np.float64).reshape(beta.shape[0], -1)) ** 2
    s2 = np.asarray(sigma, dtype=np.float64).reshape(-1, 1) ** 2
    delta = st.y_mean - beta @ st.x_mean  # (S,)
    A = st.cell_n[None, :] / s2
    B = (st.cell_s[None, :] - beta @ st.cell_t.T + st.cell_n[None, :] * delta[:, None]) / s2
    for d in range(st.depth - 1, 0, -1):  # fold every level below the top into its parent
        g = 1.0 + t2[:, d:d + 1] * A
        m = st.level_sizes[d - 1]
        A, B = _sum_into(A / g, st.parents[d], m), _sum_into(B / g, st.parents[d], m)
    g = 1.0 + t2[:, :1] * A
    return t2[:, :1] * B / g, t2[:, :1] / g


CHUNK_VALUES = 2_000_000
"""Draws x cells evaluated at once by :func:`add_top_effects` (16 MB per array)."""


def add_top_effects(idata, data, *, seed: int | None = 0, values: int = CHUNK_VALUES) -> None:
    """Group effects of the top-level factor for a form that integrated them out.

    Exact conditional draws (:func:`top_effect_moments`) while chains x draws x L is at most
    :data:`models.effects.MAX_DRAW_VALUES` (``group_effect``, dim ``group``); above that their
    Rao-Blackwellised posterior mean and sd (group ``group_effects``), as the one-way model does.
    The lower factors' effects of a nested design are left to the latent forms.
    """
    import warnings

    import xarray as xr

    from varcomp.models.cells import nested_of
    from varcomp.models.effects import MAX_DRAW_VALUES, SUMMARY_GROUP, draw_blocks

    post = idata.posterior
    if "group_effect" in post or SUMMARY_GROUP in idata.groups():
        return
    shape = post["sigma"].shape
    S = int(np.prod(shape))
    beta = post["beta"].values.reshape(S, -1)
    tau = post["tau"].values.reshape(S, -1)
    sigma = post["sigma"].values.reshape(S)
    labels = [str(g) for g in data.groups]
    L = len(labels)
    rng = np.random.default_rng(seed)
    st = nested_of(data)
    # arrays are draws x cells (the finest level): 10^5 of them, 20 draws at a time
    blocks = draw_blocks(S, max(st.cell_n.size, L), values)
    if S * L <= MAX_DRAW_VALUES:
        draws = np.empty((S, L))
        for b in blocks:
            m, v = top_effect_moments(data, beta[b], tau[b], sigma[b], st)
            draws[b] = m + np.sqrt(v) * rng.standard_normal(m.shape)
        post["group_effect"] = xr.DataArray(
            draws.reshape(*shape, L), dims=("chain", "draw", "group"),
            coords={"chain": post.chain, "draw": post.draw, "group": labels})
        return
    s1, s2_ = np.zeros(L), np.zeros(L)
    for b in blocks:
        m, v = top_effect_moments(data, beta[b], tau[b], sigma[b], st)
        s1 += m.sum(axis=0)
        s2_ += (v + m * m).sum(axis=0)
    mean = s1 / S
    sd = np.sqrt(np.maximum(s2_ / S - mean * mean, 0.0))
    summary = xr.Dataset({"mean": ("group", mean), "sd": ("group", sd)},
                         coords={"group": labels},
                         attrs={"method": "Rao-Blackwellised posterior mean and sd of the "
                                          "top-level effects over all draws", "draws": S})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata.add_groups({SUMMARY_GROUP: summary})


@dataclass(frozen=True)
class MixedEstimate:
    """An ML/REML fit (:func:`models.lmm_estimate.fit_lmm`) in summary.json's terms.

    ``as_dict``: ``beta`` by term, ``tau`` (a number for one factor, by factor otherwise),
    ``sigma``, ``icc`` (one factor; the adjusted ICC) or ``vpc`` (several: by factor and
    ``residual``), ``criterion`` (lme4's), ``boundary`` (bool, or by factor).
    """

    fit: object

    def as_dict(self) -> dict:
        """Plain-dict form for JSON."""
        d = self.fit.as_dict()
        t2 = {f: t * t for f, t in d["tau"].items()}
        s2 = GAUSSIAN.residual_variance(d)  # ML/REML: the Gaussian model's sigma^2
        if len(t2) == 1:
            (name, tau), = d["tau"].items()
            d["tau"], d["boundary"] = tau, d["boundary"][name]
            d["icc"] = shares.icc(tau * tau, s2)
        else:
            d["vpc"] = shares.vpc(t2, s2)
        return d

    @property
    def boundary(self) -> bool:
        """Whether any variance is estimated at 0."""
        return any(self.fit.boundary.values())


def estimates(data) -> dict[str, MixedEstimate]:
    """REML and ML estimates of a mixed model's design (lme4's optima).

    From the per-cell statistics (:func:`models.lmm_estimate.fit_lmm_cells`): the same numbers
    whether the rows were read in memory, in chunks or on Dask.
    """
    from varcomp.models.cells import factor_codes
    from varcomp.models.lmm_estimate import fit_lmm_cells

    d, cells = data.design, data.cells
    args = (cells.n, cells.mean, cells.m2, [factor_codes(cells, f) for f in d.factors])
    kw = {"terms": list(d.terms), "names": [f.name for f in d.factors]}
    return {"reml": MixedEstimate(fit_lmm_cells(*args, reml=True, **kw)),
            "ml": MixedEstimate(fit_lmm_cells(*args, reml=False, **kw))}


def unit_loglik_prepared(data):
    """The statistics :func:`unit_loglik` reads (computed once for all chunks of draws)."""
    from varcomp.models.cells import nested_of, unit_moments

    return nested_of(data), unit_moments(data)


def unit_loglik(data, beta, tau, sigma, *, prepared=None) -> np.ndarray:
    r"""(S, L) log density of each top-level unit's rows, its effects integrated out.

    The nested closed form split by top unit: -n_i/2 log(2 pi sigma^2) - RSS_i / (2 sigma^2) plus
    the recursion's terms -log(g_u)/2 + tau_d^2 B_u^2 / (2 g_u) of the unit and every unit
    inside it. RSS_i(beta) comes from the unit's centred moments of [y, X]:
    RSS_i = M_yy - 2 beta'M_xy + beta'M_xx beta + n_i (ybar_i - xbar_i'beta)^2.
    ``prepared``: :func:`unit_loglik_prepared`'s statistics, to evaluate many chunks of draws.
    """
    st, (n, mean, m2) = prepared or unit_loglik_prepared(data)
    beta = np.atleast_2d(np.asarray(beta, dtype=np.float64))
    S = beta.shape[0]
    t2 = np.asarray(tau, dtype=np.float64).reshape(S, -1) ** 2
    s2 = np.asarray(sigma, dtype=np.float64).reshape(S, 1) ** 2
    fit = beta @ mean[:, 1:].T  # (S, L) xbar_i' beta
    rss = (m2[None, :, 0, 0] - 2.0 * beta @ m2[:, 1:, 0].T
           + np.einsum("si,lij,sj->sl", beta, m2[:, 1:, 1:], beta)
           + n[None, :] * (mean[None, :, 0] - fit) ** 2)
    out = -0.5 * n[None, :] * np.log(2.0 * np.pi * s2) - 0.5 * rss / s2
    delta = st.y_mean - beta @ st.x_mean
    A = st.cell_n[None, :] / s2
    B = (st.cell_s[None, :] - beta @ st.cell_t.T + st.cell_n[None, :] * delta[:, None]) / s2
    ancestor = [np.arange(st.level_sizes[0])]  # each level's units -> their top-level unit
    for d in range(1, st.depth):
        ancestor.append(ancestor[d - 1][st.parents[d]])
    L = st.level_sizes[0]
    for d in range(st.depth - 1, -1, -1):  # bottom level (cells) first
        g = 1.0 + t2[:, d:d + 1] * A
        out = out + _sum_into(-0.5 * np.log(g) + 0.5 * t2[:, d:d + 1] * B * B / g,
                              ancestor[d], L)
        if d == 0:
            break
        m = st.level_sizes[d - 1]
        A, B = _sum_into(A / g, st.parents[d], m), _sum_into(B / g, st.parents[d], m)
    return out
