"""Crossed designs: the per-factor default form and each draw's log-likelihood (issue 24)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from varcomp.models import load
from varcomp.models.checks.broken import crossed_loglik_without_eliminated_block
from varcomp.models.data import data_dir
from varcomp.models.design import from_formula
from varcomp.models.forms import family_of
from varcomp.models.forms.crossed import centring, level_information
from varcomp.models.lmm import estimates
from varcomp.models.pointwise import crossed_loglik

SCOTS = "attain ~ verbal + (1|primary) + (1|second)"


def _posterior(S: int, k: int, n_f: int, seed: int = 1):
    import xarray as xr

    rng = np.random.default_rng(seed)
    tau = np.abs(rng.normal(size=(1, S, n_f)))
    tau[0, 0, -1] = 0.0  # a factor at the boundary
    return xr.Dataset({"beta": (("chain", "draw", "term"), rng.normal(size=(1, S, k))),
                       "tau": (("chain", "draw", "factor"), tau),
                       "sigma": (("chain", "draw"), 0.5 + np.abs(rng.normal(size=(1, S))))})


def _stacked_mvnormal(data, post) -> np.ndarray:
    """The oracle: the MvNormal density of all rows, covariance sigma^2 I + sum_f tau_f^2 Z_f Z_f'
    factored whole (scipy's MvNormal for the first draw, its Cholesky form for the rest)."""
    X, y = data.design.X, data.y[:, 0]
    beta, tau, sigma = (post[v].values.reshape(-1, *post[v].shape[2:])
                        for v in ("beta", "tau", "sigma"))
    out = []
    for s in range(len(sigma)):
        cov = sigma[s] ** 2 * np.eye(data.n_obs)
        for j, f in enumerate(data.design.factors):
            cov += tau[s, j] ** 2 * (f.codes[:, None] == f.codes[None, :])
        r = y - X @ beta[s]
        if s == 0:
            out.append(stats.multivariate_normal(X @ beta[s], cov).logpdf(y))
            continue
        L = np.linalg.cholesky(cov)
        z = np.linalg.solve(L, r)
        out.append(-0.5 * (r.size * np.log(2 * np.pi) + 2 * np.log(np.diag(L)).sum() + z @ z))
    return np.array(out)


def _small_scots():
    df = pd.read_csv(data_dir() / "scotssec.csv")
    return from_formula(df[df.second.isin([1, 2, 3, 4])].iloc[:120].reset_index(drop=True), SCOTS)


@pytest.mark.parametrize("formula", [SCOTS, "attain ~ 1 + (1|primary) + (1|second) + (1|sex)"])
def test_crossed_loglik_is_the_stacked_mvnormal(formula):
    """Each draw's log density of all rows (effects integrated out) equals scipy's MvNormal of
    the stacked rows: unbalanced real rows, two and three crossed factors, a tau at 0. The
    deliberately broken sum (one block's log-determinant left out) does not."""
    df = pd.read_csv(data_dir() / "scotssec.csv")
    data = from_formula(df[df.second.isin([1, 2, 3, 4])].iloc[:120].reset_index(drop=True),
                        formula)
    post = _posterior(5, len(data.design.terms), len(data.design.factors))
    want = _stacked_mvnormal(data, post)
    assert crossed_loglik(data, post) == pytest.approx(want, rel=1e-10)
    assert not np.allclose(crossed_loglik_without_eliminated_block(data, post), want, rtol=1e-3)


def test_scotssec_centres_primary_and_not_second():
    """ScotsSec (mlmRev, 3,435 rows): the information about a median level's effect is
    median rows x tau^2 / sigma^2 at the REML estimate: primary schools (20.5 rows) about
    1.3, secondary schools (175 rows, tau 0.12 against sigma 2.06) about 0.6, so the default
    centres primary only. The REML optimum is lme4's (tau 0.524 and 0.120, sigma 2.063)."""
    data = load(data_dir() / "scotssec.csv", formula=SCOTS)
    fam = family_of(data)
    assert fam.name == "crossed" and fam.default(data) == "partial"
    reml = estimates(data)["reml"].fit
    assert reml.tau["primary"] == pytest.approx(0.5241, abs=2e-3)
    assert reml.tau["second"] == pytest.approx(0.1199, abs=2e-3)
    assert reml.sigma == pytest.approx(2.0627, abs=2e-3)
    want = [np.median(np.bincount(f.codes)) * reml.tau[f.name] ** 2 / reml.sigma**2
            for f in data.design.factors]
    assert level_information(data) == pytest.approx(want, rel=1e-12)
    assert centring(data) == (True, False)


def test_the_default_model_centres_per_factor():
    """The crossed family's centred form is one model with u_primary a free centred effect and
    u_second = tau * offset; the noncentred form offsets both. Balanced designs still default
    to the closed form."""
    data = _small_scots()
    flags = centring(data)
    model = family_of(data).form("partial").build(data)
    free = {v.name for v in model.free_RVs}
    for (name, _), centred in zip([("u_primary", 0), ("u_second", 1)], flags, strict=True):
        assert (name in free) == centred and (f"{name}_offset" in free) == (not centred)
    nc = {v.name for v in family_of(data).form("noncentred").build(data).free_RVs}
    assert {"u_primary_offset", "u_second_offset"} <= nc
    pen = load("penicillin", formula="diameter ~ 1 + (1|plate) + (1|sample)")
    assert family_of(pen).default(pen) == "sufficient"


def test_a_factor_at_the_boundary_is_not_centred():
    """A factor whose REML variance is 0 carries no information about its levels: offsets."""
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 8, 300), rng.integers(0, 5, 300)
    y = rng.normal(0, 1.5, 8)[a] + rng.normal(size=300)  # b has no effect
    df = pd.DataFrame({"a": a.astype(str), "b": b.astype(str), "y": y}).iloc[3:]
    data = from_formula(df.reset_index(drop=True), "y ~ 1 + (1|a) + (1|b)")
    info = level_information(data)
    assert info[0] > 10 and info[1] < 0.1
    assert centring(data) == (True, False)


def test_crossed_pointwise_feeds_prior_sensitivity():
    """add_pointwise gives a crossed fit's draws (here 2 chains x 40 arbitrary draws) the total
    log-likelihood and log prior; prior_sensitivity then equals az.psens on the oracle's values
    and the prior's density, and the broken total gives other likelihood numbers."""
    import arviz as az
    import xarray as xr

    from varcomp.analyses.fit import prior_sensitivity
    from varcomp.models.pointwise import add_pointwise

    data = _small_scots()
    fam = family_of(data)
    rng = np.random.default_rng(2)
    post = xr.Dataset({"beta": (("chain", "draw", "term"), [5.0, 0.15] + 0.1 * rng.normal(
                           size=(2, 40, 2))),
                       "tau": (("chain", "draw", "factor"), np.abs(
                           [0.5, 0.3] + 0.2 * rng.normal(size=(2, 40, 2)))),
                       "sigma": (("chain", "draw"), 2.0 + 0.1 * rng.normal(size=(2, 40)))},
                      coords={"chain": [0, 1], "draw": np.arange(40),
                              "term": ["Intercept", "verbal"], "factor": ["primary", "second"]})
    idata = az.InferenceData(posterior=post)
    priors = fam.default_priors(data)
    assert add_pointwise(idata, fam, data, priors)
    names = ["beta", "tau", "sigma"]
    ours = prior_sensitivity(idata, names)
    ll = xr.Dataset({"y": (("chain", "draw"), _stacked_mvnormal(data, post).reshape(2, 40))},
                    coords={"chain": [0, 1], "draw": np.arange(40)})
    lp = xr.Dataset({"prior": (("chain", "draw"), priors.logpdf(
        post["beta"].values.reshape(80, 2), post["tau"].values.reshape(80, 2),
        post["sigma"].values.reshape(80)).reshape(2, 40))})
    ref = az.InferenceData(posterior=post, log_likelihood=ll, log_prior=lp)
    lik = az.psens(ref, component="likelihood", var_names=names)
    prior = az.psens(ref, component="prior", var_names=names)
    assert set(ours) == {"beta[Intercept]", "beta[verbal]", "tau[primary]", "tau[second]",
                         "sigma"}
    for label, var, sel in (("tau[primary]", "tau", {"factor": "primary"}),
                            ("beta[verbal]", "beta", {"term": "verbal"}), ("sigma", "sigma", {})):
        assert ours[label]["likelihood"] == pytest.approx(float(lik[var].sel(sel)), rel=1e-6)
        assert ours[label]["prior"] == pytest.approx(float(prior[var].sel(sel)), rel=1e-9)
    idata.log_likelihood["y"] = (("chain", "draw"),
                                 crossed_loglik_without_eliminated_block(data, post).reshape(2, 40))
    bad = prior_sensitivity(idata, names)
    assert any(abs(bad[k]["likelihood"] - ours[k]["likelihood"]) > 1e-3 for k in ours)


@pytest.mark.slow
def test_crossed_fit_carries_prior_sensitivity():
    """A crossed fit (Penicillin, the closed form, short chains) stores each draw's total
    log-likelihood and the log prior; the summary's prior sensitivity equals az.psens given the
    stacked-MvNormal oracle's values, and a broken total gives other likelihood numbers."""
    import arviz as az
    import xarray as xr

    from varcomp.analyses.fit import fit, prior_sensitivity

    data = load("penicillin", formula="diameter ~ 1 + (1|plate) + (1|sample)")
    res = fit(data, draws=150, tune=150, chains=2, seed=0)
    idata = res.idata["sufficient"]
    names = ["beta", "tau", "sigma", "vpc"]
    sens = res.summary["fits"]["sufficient"]["prior_sensitivity"]
    assert {"tau[plate]", "tau[sample]", "sigma", "beta[Intercept]"} <= set(sens)
    post = idata.posterior
    oracle = _stacked_mvnormal(data, post)
    ll = xr.Dataset({"y": (("chain", "draw"), oracle.reshape(2, 150))},
                    coords={"chain": post.chain, "draw": post.draw})
    ref = az.InferenceData(posterior=post, log_likelihood=ll, log_prior=idata.log_prior)
    lik = az.psens(ref, component="likelihood", var_names=names)
    prior = az.psens(ref, component="prior", var_names=names)
    for label, fac in (("tau[plate]", "plate"), ("tau[sample]", "sample")):
        assert sens[label]["likelihood"] == pytest.approx(float(lik["tau"].sel(factor=fac)),
                                                          rel=1e-6)
        assert sens[label]["prior"] == pytest.approx(float(prior["tau"].sel(factor=fac)),
                                                     rel=1e-12)
    assert sens["sigma"]["likelihood"] == pytest.approx(float(lik["sigma"]), rel=1e-6)
    broken = idata.copy()
    wrong = crossed_loglik_without_eliminated_block(data, post)
    broken.log_likelihood["y"] = (("chain", "draw"), wrong.reshape(2, 150))
    bad = prior_sensitivity(broken, names)
    assert any(abs(bad[k]["likelihood"] - sens[k]["likelihood"]) > 1e-3 for k in sens)


def _latent_posterior(data, chains: int = 2, draws: int = 40, seed: int = 3):
    """Arbitrary draws of (beta, tau, sigma, u_<factor>) near ScotsSec's posterior."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    dims = ("chain", "draw")
    ds = {"beta": (dims + ("term",), [5.0, 0.15] + 0.1 * rng.normal(size=(*shape, 2))),
          "tau": (dims + ("factor",), np.abs([0.5, 0.3] + 0.2 * rng.normal(size=(*shape, 2)))),
          "sigma": (dims, 2.0 + 0.1 * rng.normal(size=shape))}
    for f in data.design.factors:
        ds[f"u_{f.name}"] = (dims + (f.name,), rng.normal(0, 0.5, size=(*shape, len(f.levels))))
    return xr.Dataset(ds, coords={"chain": np.arange(chains), "draw": np.arange(draws),
                                  "term": ["Intercept", "verbal"],
                                  "factor": ["primary", "second"]})


def _conditional_oracle(data, post) -> np.ndarray:
    """scipy's normal log density of every row given the draw's effects, summed over rows."""
    X, y = data.design.X, data.y[:, 0]
    beta, sigma = (post[v].values.reshape(-1, *post[v].shape[2:]) for v in ("beta", "sigma"))
    us = [post[f"u_{f.name}"].values.reshape(len(sigma), -1) for f in data.design.factors]
    out = []
    for s in range(len(sigma)):
        mean = X @ beta[s] + sum(u[s][f.codes] for u, f in zip(us, data.design.factors,
                                                                strict=True))
        out.append(stats.norm.logpdf(y, mean, sigma[s]).sum())
    return np.array(out)


def test_conditional_loglik_is_the_sum_of_normal_densities():
    """Each draw's log density of all rows given its effects equals scipy's normal log density
    summed over the rows, to 1e-10; dropping one factor's effect (u_second set to 0) does not;
    a posterior without every factor's effects (a closed form's) gives None."""
    from varcomp.models.pointwise import conditional_loglik

    data = _small_scots()
    post = _latent_posterior(data)
    effects = ["u_primary", "u_second"]
    want = _conditional_oracle(data, post)
    assert conditional_loglik(data, post, effects) == pytest.approx(want, rel=1e-10)
    broken = post.copy()
    broken["u_second"] = broken["u_second"] * 0.0
    assert not np.allclose(conditional_loglik(data, broken, effects), want, rtol=1e-3)
    assert conditional_loglik(data, post.drop_vars("u_second"), effects) is None
    assert conditional_loglik(data, post, ["u_primary"]) is None


def test_over_the_marginal_budget_latent_draws_are_power_scaled_conditionally(monkeypatch):
    """With the marginal total's budget forced to 0 (InstEval's case), add_pointwise stores the
    conditional total when the posterior holds the effects, marked "conditional"; the
    sensitivity then equals az.psens given the scipy oracle's values. Without the effects (a
    closed form) the fit carries none."""
    import arviz as az
    import xarray as xr

    from varcomp.analyses.fit import prior_sensitivity, sensitivity_likelihood
    from varcomp.models import pointwise

    data = _small_scots()
    fam = family_of(data)
    post = _latent_posterior(data)
    priors = fam.default_priors(data)
    names = ["beta", "tau", "sigma"]
    marginal = az.InferenceData(posterior=post)
    assert pointwise.add_pointwise(marginal, fam, data, priors, ["u_primary", "u_second"]) \
        == "marginal"
    assert sensitivity_likelihood(marginal) == "marginal"
    monkeypatch.setattr(pointwise, "MAX_CROSSED_FLOPS", 0)
    closed = az.InferenceData(posterior=post)
    assert pointwise.add_pointwise(closed, fam, data, priors) is None
    assert prior_sensitivity(closed, names) == {} and sensitivity_likelihood(closed) is None
    idata = az.InferenceData(posterior=post)
    assert pointwise.add_pointwise(idata, fam, data, priors, ["u_primary", "u_second"]) \
        == "conditional"
    assert sensitivity_likelihood(idata) == "conditional"
    ours = prior_sensitivity(idata, names)
    assert set(ours) == {"beta[Intercept]", "beta[verbal]", "tau[primary]", "tau[second]",
                         "sigma"}
    ll = xr.Dataset({"y": (("chain", "draw"), _conditional_oracle(data, post).reshape(2, 40))},
                    coords={"chain": post.chain, "draw": post.draw})
    ref = az.InferenceData(posterior=post, log_likelihood=ll, log_prior=idata.log_prior)
    lik = az.psens(ref, component="likelihood", var_names=names)
    for label, var, sel in (("tau[second]", "tau", {"factor": "second"}),
                            ("beta[verbal]", "beta", {"term": "verbal"}), ("sigma", "sigma", {})):
        assert ours[label]["likelihood"] == pytest.approx(float(lik[var].sel(sel)), rel=1e-6)
    assert any(abs(ours[k]["likelihood"] - prior_sensitivity(marginal, names)[k]["likelihood"])
               > 1e-3 for k in ours)


@pytest.mark.slow
def test_a_latent_fit_over_the_budget_carries_conditional_sensitivity(monkeypatch):
    """A noncentred fit (short chains) with the marginal budget forced to 0: summary.json's
    prior sensitivity is filled and marked conditional, and the stored totals are the scipy
    oracle's on the fit's own draws."""
    from varcomp.analyses.fit import fit
    from varcomp.models import pointwise

    monkeypatch.setattr(pointwise, "MAX_CROSSED_FLOPS", 0)
    data = _small_scots()
    res = fit(data, model="noncentred", draws=100, tune=100, chains=2, seed=0)
    s = res.summary["fits"]["noncentred"]
    assert s["prior_sensitivity_likelihood"] == "conditional"
    assert {"tau[primary]", "tau[second]", "sigma", "beta[verbal]"} <= set(s["prior_sensitivity"])
    idata = res.idata["noncentred"]
    assert idata.log_likelihood["y"].values.ravel() == pytest.approx(
        _conditional_oracle(data, idata.posterior), rel=1e-10)
