"""The one SBC driver (models.checks.sbc.sbc): its ranks, its alpha convention, its models.

The driver's loop is tested with an exact conjugate model whose posterior draws come from the
closed form (no sampler): it must pass, and the same model with a posterior shifted by half a
posterior sd must fail. The families' models are tested on their quantities and simulators.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import xarray as xr

from varcomp.models import checks
from varcomp.models.checks.oracles import scipy_loglik
from varcomp.models.checks.sbc_models import MixedSBC, OnewaySBC, default_model

# the module (the package's ``sbc`` attribute is the function)
sbc_module = importlib.import_module("varcomp.models.checks.sbc")


class Conjugate:
    """theta ~ N(0, 1), y_i ~ N(theta, 1), i = 1..n; posterior N(sum y / (n + 1), 1 / (n + 1))."""

    name = "conjugate"
    var_names = ("theta",)
    details = {"design": "n=4, "}
    n = 4

    def __init__(self, shift: float = 0.0):
        self.shift = shift

    def prepare(self, rng):
        return lambda y: y

    def draw(self, rng):
        return {"theta": float(rng.normal())}

    def simulate(self, theta, rng):
        return rng.normal(theta["theta"], 1.0, self.n)

    def quantities(self, values, data):
        theta = np.asarray(values["theta"]).reshape(-1)
        loglik = -0.5 * ((data[None, :] - theta[:, None]) ** 2).sum(1) - 0.5 * self.n * np.log(
            2 * np.pi)
        return {"theta": theta, "loglik": loglik}


def _exact_fit(shift):
    def fit(y, rng, names, *, draws, tune, chains, cores, target_accept):
        prec = y.size + 1.0
        mean = y.sum() / prec + shift / np.sqrt(prec)
        x = rng.normal(mean, 1.0 / np.sqrt(prec), (chains, draws))
        return xr.Dataset({"theta": (("chain", "draw"), x)}), {"divergences": 0,
                                                                 "min_ess_bulk": float(x.size)}
    return fit


@pytest.mark.parametrize("shift, passes", [(0.0, True), (0.5, False)])
def test_driver_passes_the_exact_posterior_and_fails_a_shifted_one(monkeypatch, shift, passes):
    monkeypatch.setattr(sbc_module, "sbc_fit", _exact_fit(shift))
    res = checks.sbc(Conjugate(), n_sims=200, draws=100, chains=2, thin=2, seed=3)
    assert res.n_ranks == 100 and len(res.ranks) == 200
    assert list(res.ranks.columns) == ["theta", "loglik"]
    assert res.ranks.to_numpy().min() >= 0 and res.ranks.to_numpy().max() <= 100
    # one convention: alpha family-wise, Bonferroni over the Q = 2 quantities
    assert res.details["alpha"] == 0.05 and res.details["alpha_per_quantity"] == 0.025
    assert res.passed is passes, res.text
    if not passes:
        assert res.pvalues["theta"] < 0.025
        assert "FAILS uniformity for theta" in res.text


def test_driver_ranks_count_draws_below_the_truth(monkeypatch):
    """Posterior draws fixed at 0..M-1 and truth at 2.5: every rank is 3."""
    def fit(y, rng, names, *, draws, tune, chains, cores, target_accept):
        x = np.arange(chains * draws, dtype=float).reshape(chains, draws)
        return xr.Dataset({"theta": (("chain", "draw"), x)}), {"divergences": 1,
                                                                 "min_ess_bulk": 2.0}

    class Fixed(Conjugate):
        def draw(self, rng):
            return {"theta": 2.5}

    monkeypatch.setattr(sbc_module, "sbc_fit", fit)
    res = checks.sbc(Fixed(), n_sims=3, draws=4, chains=1, thin=1)
    assert res.ranks["theta"].tolist() == [3, 3, 3]
    assert res.details["divergences"] == 3 and "increase thin" in res.text


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_sims=0), "n_sims"), (dict(n_sims=2, draws=10, thin=3), "multiple of thin"),
    (dict(n_sims=2, alpha=1.5), "alpha")])
def test_driver_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        checks.sbc(Conjugate(), **kwargs)


def test_family_names_and_backends():
    assert isinstance(default_model("oneway"), OnewaySBC)
    with pytest.raises(ValueError, match="no default SBC model"):
        default_model("crossed")
    with pytest.raises(ValueError, match="unknown backend"):
        OnewaySBC(backend="jax").prepare(np.random.default_rng(0))
    with pytest.raises(ValueError, match="no compiled model"):
        OnewaySBC("centred", backend="compiled").prepare(np.random.default_rng(0))


def test_oneway_quantities_are_the_closed_forms():
    model = OnewaySBC(L=4, n=3)
    rng = np.random.default_rng(1)
    theta = model.draw(rng)
    data = model.simulate(theta, rng)
    q = model.quantities({k: np.array([v]) for k, v in theta.items()}, data)
    assert set(q) == {"mu", "tau", "sigma", "icc", "loglik"}
    want = scipy_loglik(data, theta["mu"], theta["tau"], theta["sigma"])
    np.testing.assert_allclose(q["loglik"], [want], rtol=1e-10)
    np.testing.assert_allclose(q["icc"], theta["tau"]**2 / (theta["tau"]**2 + theta["sigma"]**2))


def test_mixed_quantities_use_the_clean_kernel_and_the_scipy_oracle():
    """The mixed model's log-likelihood quantity equals the scipy oracle, broken kernel or not."""
    import pandas as pd

    from varcomp.models.checks.lmm import scipy_loglik_lmm
    from varcomp.models.design import from_formula

    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(5), [2, 3, 4, 2, 3])
    frame = pd.DataFrame({"g": g.astype(str), "x": rng.normal(size=g.size),
                          "y": rng.normal(size=g.size) + g})
    data = from_formula(frame, "y ~ x + (1|g)")
    for broken in (False, True):
        model = MixedSBC(data, broken=broken)
        theta = model.draw(rng)
        sim = model.simulate(theta, rng)
        q = model.quantities({k: np.asarray(v, dtype=float)[None] for k, v in theta.items()},
                             sim)
        want = scipy_loglik_lmm(sim, theta["beta"], theta["tau"], theta["sigma"])
        np.testing.assert_allclose(q["loglik"], [want], rtol=1e-9)
        assert set(q) == {"beta[Intercept]", "beta[x]", "tau[g]", "sigma", "loglik"}


def test_check_samples_sufficient_as_fit_does():
    """``varcomp check`` fits ``sufficient`` with its compiled kernel (what ``varcomp fit``
    samples; no per-setting compilation), and the fit agrees with the quadrature reference."""
    from varcomp.analyses.checks_run import SETTINGS, _fit_form
    from varcomp.models import family_of

    setting = next(s for s in SETTINGS if s.name == "moderate")
    data = setting.simulate(3)
    family = family_of(data)
    priors = family.default_priors(data)
    plan = [dict(draws=300, tune=300, chains=2, target_accept=0.9, maxdepth=6)]
    fit = _fit_form(family, "sufficient", data, priors, plan, 3, backend="c")
    assert fit.settings["backend"] == "native" and fit.diagnostics["ok"]
    cmp = checks.compare_posteriors({"sufficient": fit}, reference=family.reference(data, priors),
                                    var_names=family.compare_vars)
    assert cmp.details["agrees_with_reference"] == {"sufficient": True}, cmp.text
