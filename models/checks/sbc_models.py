"""The models :func:`models.checks.sbc.sbc` calibrates.

Each supplies its design, compiled posterior, prior draws, simulator and test quantities
(:class:`models.checks.sbc.SBCModel`):

- :class:`OnewaySBC`: a one-way form (or its deliberately broken form), L clusters of sizes n.
- :class:`MultivariateSBC`: a multivariate form, optionally with a fixed set of missing cells.
- :class:`MixedSBC`: a mixed family's compiled ``sufficient`` posterior (what ``varcomp fit``
  samples) on a template's design (covariates, nested or crossed factors).

The posterior is compiled once per run (``prepare``): ``backend="numba"`` or ``"c"`` compile the
form's PyMC model and swap each data set into its ``pm.Data`` containers
(:class:`models.sampling.DataSwapper`); ``backend="compiled"`` (``sufficient`` only) builds the
hand-written kernel's parameter block for each data set (:mod:`models.compiled`, machine code
cached on disk: no compilation per run). Each model's log-likelihood quantity is a closed form
independent of the model under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from varcomp.models import mvstats as mv
from varcomp.models.checks.oracles import mv_prior_draw
from varcomp.models.data import ClusteredData
from varcomp.models.density import marginal_logp_terms
from varcomp.models.priors import MvPriors, NormalPrior, Priors, ScalePrior
from varcomp.models.simulate import Simulated, cluster_sizes, simulate_univariate
from varcomp.models.simulate_mv import simulate_multivariate

__all__ = ["SBC_MV_PRIORS", "SBC_PRIORS", "MixedSBC", "MultivariateSBC", "OnewaySBC",
           "default_model", "mv_quantities", "oneway_loglik_draws"]

BACKENDS = ("numba", "c", "compiled")

SBC_PRIORS = Priors(mu=NormalPrior(0.0, 1.0), tau=ScalePrior("halfnormal", 1.0),
                    sigma=ScalePrior("halfnormal", 1.0), center=0.0, scale=1.0)
"""Fixed (not data-scaled) one-way priors for SBC."""

SBC_MV_PRIORS = MvPriors(mu_loc=(0.0, 0.0), mu_scale=(1.0, 1.0), tau_scale=(1.0, 1.0),
                         sigma_scale=(1.0, 1.0), eta_between=2.0, eta_within=2.0,
                         center=(0.0, 0.0), scale=(1.0, 1.0))
"""Fixed (not data-scaled) bivariate priors for SBC: the defaults' families on unit scales."""


def _form(family: str, name: str):
    """The family's form ``name``, or its deliberately broken form (by its own name)."""
    from varcomp.models.checks.broken import BROKEN
    from varcomp.models.forms import family_named

    if name == BROKEN[family].name:
        return BROKEN[family]
    return family_named(family).form(name)


def _posterior(form, template, priors, backend: str):
    """``posterior(data)``: the form's model for data of ``template``'s design, compiled once."""
    from varcomp.models.sampling import DataSwapper

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}': choose {', '.join(BACKENDS)}")
    if backend == "compiled":
        if form.compiled is None or form.compiled(template, priors) is None:
            raise ValueError(f"form '{form.name}' has no compiled model for these priors")
        return lambda data: form.compiled(data, priors)
    return DataSwapper(form, template, priors, backend)


def oneway_loglik_draws(n, xbar, ss, mu, tau, sigma) -> np.ndarray:
    """Log p(X | mu, tau, sigma) for vectors of draws (the closed form, data-dependent)."""
    return marginal_logp_terms(n, xbar, ss, np.asarray(mu)[..., None], np.asarray(tau)[..., None],
                               np.asarray(sigma)[..., None]).sum(-1)


@dataclass
class OnewaySBC:
    """A one-way form: (mu, tau, sigma) ~ ``priors``, ``L`` clusters of sizes ``n``.

    Quantities: mu, tau, sigma, icc and log p(X | mu, tau, sigma). ``form`` may be the
    deliberately broken ``"broken_tau_not_squared"``.
    """

    form: str = "sufficient"
    L: int = 8
    n: int | Sequence[int] = 5
    priors: Priors = SBC_PRIORS
    backend: str = "numba"
    var_names: tuple[str, ...] = ("mu", "tau", "sigma")
    sizes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.sizes = cluster_sizes(self.L, self.n)

    @property
    def name(self) -> str:
        """The label of the results."""
        return self.form

    @property
    def details(self) -> dict:
        """The design, for the result's details and text."""
        return {"family": "oneway", "form": self.form, "L": self.L, "sizes": self.sizes.tolist(),
                "backend": self.backend, "design": f"L={self.L}, "}

    def prepare(self, rng):
        """Simulate the design once; return ``posterior(data)`` (compiled once)."""
        template = simulate_univariate(self.L, self.sizes, mu=0.0, tau=1.0, sigma=1.0,
                                       rng=rng).data()
        return _posterior(_form("oneway", self.form), template, self.priors, self.backend)

    def draw(self, rng) -> dict:
        """One draw of the parameters from the prior."""
        return self.priors.draw(rng)

    def simulate(self, theta, rng):
        """Data of the design at ``theta``."""
        return simulate_univariate(self.L, self.sizes, rng=rng, **theta).data()

    def quantities(self, values, data) -> dict[str, np.ndarray]:
        """The test quantities of stacked values (leading axis: draws)."""
        mu, tau, sigma = (np.asarray(values[k]).reshape(-1) for k in ("mu", "tau", "sigma"))
        nn, xbar, ss = data.stats.column(0)
        return {"mu": mu, "tau": tau, "sigma": sigma, "icc": tau**2 / (tau**2 + sigma**2),
                "loglik": oneway_loglik_draws(nn, xbar, ss, mu, tau, sigma)}


def mv_quantities(theta) -> dict[str, np.ndarray]:
    """{label: (...) array}: mu[k], V[k,k], Sigma[k,k], icc[k], corr_between/within[i,j]."""
    mu, V, S = (np.asarray(theta[k]) for k in ("mu", "V", "Sigma"))
    p = mu.shape[-1]
    out = {}
    for k in range(p):
        out[f"mu[{k}]"] = mu[..., k]
    for k in range(p):
        out[f"V[{k},{k}]"] = V[..., k, k]
    for k in range(p):
        out[f"Sigma[{k},{k}]"] = S[..., k, k]
    for k in range(p):
        out[f"icc[{k}]"] = V[..., k, k] / (V[..., k, k] + S[..., k, k])
    for name, M in (("corr_between", V), ("corr_within", S)):
        for i in range(p):
            for j in range(i + 1, p):
                out[f"{name}[{i},{j}]"] = M[..., i, j] / np.sqrt(M[..., i, i] * M[..., j, j])
    return out


def _fixed_mask(frame: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the template's missing cells set missing (the same design)."""
    out = frame.copy()
    cols = [c for c in frame.columns if c != "group"]
    values = out[cols].to_numpy(dtype=np.float64, copy=True)
    values[~np.isfinite(template[cols].to_numpy(dtype=np.float64))] = np.nan
    out[cols] = values
    return out


@dataclass
class MultivariateSBC:
    """A multivariate form: (mu, V, Sigma) ~ ``priors`` (:func:`mv_prior_draw`).

    ``L`` clusters of sizes ``n``; with ``missing`` > 0 a fixed set of cells (drawn once by
    :func:`models.simulate_mv.drop_components`) is missing in every data set. Quantities: mu[k],
    V[k,k], Sigma[k,k], icc[k], corr_between, corr_within (:func:`mv_quantities`) and
    log p(X | mu, V, Sigma) (:func:`models.mvstats.loglik_draws`). ``form`` may be the
    deliberately broken ``"broken_V_not_scaled_by_n"``.
    """

    form: str = "sufficient"
    L: int = 8
    n: int | Sequence[int] = 5
    missing: float = 0.0
    priors: MvPriors = SBC_MV_PRIORS
    backend: str = "numba"
    var_names: tuple[str, ...] = ("mu", "V", "Sigma")
    sizes: np.ndarray = field(init=False, repr=False)
    _frame0: pd.DataFrame | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.sizes = cluster_sizes(self.L, self.n)

    @property
    def name(self) -> str:
        """The label of the results."""
        return f"multivariate {self.form}"

    @property
    def details(self) -> dict:
        """The design, for the result's details and text."""
        miss = f", {self.missing:.0%} cells missing (fixed)" if self.missing > 0 else ""
        return {"family": "multivariate", "form": self.form, "L": self.L, "p": self.priors.p,
                "sizes": self.sizes.tolist(), "missing": self.missing, "backend": self.backend,
                "design": f"L={self.L}, p={self.priors.p}{miss}, "}

    def prepare(self, rng):
        """Simulate the design once; return ``posterior(data)`` (compiled once)."""
        from varcomp.models.simulate_mv import drop_components

        p = self.priors.p
        template = simulate_multivariate(self.L, self.sizes, np.zeros(p), np.eye(p), np.eye(p),
                                         rng)
        self._frame0 = (drop_components(template.frame, self.missing, rng) if self.missing > 0
                        else template.frame)
        tdata = Simulated(self._frame0, template.effects, template.params).data()
        return _posterior(_form("multivariate", self.form), tdata, self.priors, self.backend)

    def draw(self, rng) -> dict:
        """One draw of the parameters from the prior."""
        return mv_prior_draw(self.priors, rng)

    def simulate(self, theta, rng):
        """Data of the design at ``theta``."""
        sim = simulate_multivariate(self.L, self.sizes, theta["mu"], theta["V"], theta["Sigma"],
                                    rng)
        return Simulated(_fixed_mask(sim.frame, self._frame0), sim.effects, sim.params).data()

    def quantities(self, values, data) -> dict[str, np.ndarray]:
        """The test quantities of stacked values (leading axis: draws)."""
        out = mv_quantities(values)
        out["loglik"] = mv.loglik_draws(mv.pattern_stats(data), values["mu"], values["V"],
                                        values["Sigma"])
        return out


def _tau_matrix(tau, draws: int, n_factors: int) -> np.ndarray:
    return np.asarray(tau, dtype=np.float64).reshape(draws, n_factors)


@dataclass
class MixedSBC:
    """A mixed family's compiled ``sufficient`` posterior on ``template``'s design.

    The design (X and the factors) is kept; (beta, tau, sigma) ~ ``priors`` (default:
    :meth:`LmmPriors.default` of the template, fixed for all simulations); y is simulated by
    :func:`models.checks.lmm.simulate_mixed`; each data set gets its own parameter block of the
    cached kernel (no compilation). Quantities: every beta, tau, sigma and the log-likelihood
    (the production kernels' closed form of the clean, unbroken block). ``broken`` samples the
    deliberately wrong kernel (tau for tau^2).
    """

    template: ClusteredData
    priors: object = None
    broken: bool = False
    var_names: tuple[str, ...] = ("beta", "tau", "sigma")

    def __post_init__(self):
        from varcomp.models.forms import family_of
        from varcomp.models.lmm import LmmPriors

        self.priors = self.priors or LmmPriors.default(self.template)
        self.family = family_of(self.template).name
        self.n_f = len(self.template.design.factors)

    @property
    def name(self) -> str:
        """The label of the results."""
        return f"{self.family} sufficient" + (" (BROKEN kernel)" if self.broken else "")

    @property
    def details(self) -> dict:
        """The design, for the result's details and text."""
        return {"family": self.family, "form": "sufficient", "broken": self.broken,
                "rows": self.template.n_obs, "backend": "compiled",
                "design": f"{self.template.n_obs} rows, "}

    def _block(self, data, broken: bool):
        from varcomp.models.cells import nested_of, strata_of
        from varcomp.models.compiled import lmm
        from varcomp.models.compiled.lmm_nested import pack_nested
        from varcomp.models.compiled.lmm_strata import pack_strata

        if data.design.nested:
            st = nested_of(data)
            kind = lmm.KERNEL_NESTED if broken or st.depth > 1 else lmm.KERNEL_FAST
            return pack_nested(st, broken=broken), kind
        return pack_strata(strata_of(data), broken=broken), lmm.KERNEL_STRATA

    def prepare(self, rng):
        """Simulate the design once; return ``posterior(data)`` (compiled once)."""
        from varcomp.models.compiled import lmm

        def posterior(data):
            block, kind = self._block(data, self.broken)
            return lmm._model(self.priors, block, kind, self.n_f)

        return posterior

    def draw(self, rng) -> dict:
        """One draw of the parameters from the prior."""
        return self.priors.draw(rng)

    def simulate(self, theta, rng):
        """Data of the design at ``theta``."""
        from dataclasses import replace

        from varcomp.models.checks.lmm import simulate_mixed

        y = simulate_mixed(self.template, theta["beta"], theta["tau"], theta["sigma"], rng)
        return replace(self.template, y=np.asarray(y, dtype=np.float64)[:, None])

    def quantities(self, values, data) -> dict[str, np.ndarray]:
        """The test quantities of stacked values (leading axis: draws)."""
        from varcomp.models.compiled.lmm_nested import nested_loglik
        from varcomp.models.compiled.lmm_strata import strata_loglik

        beta = np.asarray(values["beta"], dtype=np.float64)
        m = beta.shape[0]
        beta = beta.reshape(m, -1)
        tau = _tau_matrix(values["tau"], m, self.n_f)
        sigma = np.asarray(values["sigma"], dtype=np.float64).reshape(m)
        out = {f"beta[{t}]": beta[:, j] for j, t in enumerate(self.priors.terms)}
        out |= {f"tau[{f}]": tau[:, i] for i, f in enumerate(self.priors.factors)}
        out["sigma"] = sigma
        clean, _ = self._block(data, False)
        f = nested_loglik if data.design.nested else strata_loglik
        out["loglik"] = np.array([f(b, t**2, s * s, clean)[0]
                                  for b, t, s in zip(beta, tau, sigma, strict=True)])
        return out


def default_model(family: str):
    """The ``sufficient`` form of ``"oneway"`` or ``"multivariate"`` at its default design."""
    models = {"oneway": OnewaySBC, "multivariate": MultivariateSBC}
    if family not in models:
        raise ValueError(f"no default SBC model for '{family}': give an SBC model "
                         "(models.checks.sbc_models)")
    return models[family]()
