"""The integrated GLMM forms of one factor (``marginal``, ``sufficient``): their densities against
brute-force integration per cluster, which form applies, group effects drawn from each cluster's
conditional, and the integrated per-cluster log-likelihood."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize

from varcomp.models.design import from_formula
from varcomp.models.errors import DataError
from varcomp.models.forms import family_of
from varcomp.models.forms import glmm_integrated as integ
from varcomp.models.glm_density import logp


def brute_cluster(y, n, eta, tau, family, link):
    """log int prod_j p(y_j | eta_j + u) N(u; 0, tau^2) du by scipy quad (independent oracle)."""

    def f(u):
        return (logp(y, n, eta + u, family, link).sum() - 0.5 * u * u / tau**2
                - np.log(tau) - 0.5 * np.log(2 * np.pi))

    m = optimize.minimize_scalar(lambda u: -f(u), bracket=(-1.0, 1.0)).x
    val, _ = integrate.quad(lambda u: np.exp(f(u) - f(m)), -np.inf, np.inf, epsabs=0,
                            epsrel=1e-12, limit=500)
    return f(m) + np.log(val)


def brute_total(data, beta, tau):
    fam = family_of(data).likelihood.name
    codes = data.design.factors[0].codes
    eta = data.design.X @ beta + (data.offset if data.offset is not None else 0.0)
    n = data.trials if data.trials is not None else np.ones(data.n_obs)
    return sum(brute_cluster(data.y[codes == g, 0], n[codes == g], eta[codes == g], tau, fam,
                             data.link) for g in range(codes.max() + 1))


def _frame(kind: str, within: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(6)], 4)
    x = rng.normal(size=g.size) if within else np.repeat(rng.normal(size=6), 4)
    n = rng.integers(1, 7, g.size)
    u = np.repeat(rng.normal(0, 0.9, 6), 4)
    if kind == "binomial":
        y = rng.binomial(n, 1 / (1 + np.exp(-(0.3 * x + u))))
    else:
        y = rng.poisson(n * np.exp(0.2 + 0.3 * x + u))
    return pd.DataFrame({"g": g, "x": x, "y": y, "n": n, "e": n.astype(float)})


def _data(kind: str, within: bool, link: str | None = None, seed: int = 0):
    frame = _frame(kind, within, seed)
    if kind == "binomial":
        return from_formula(frame, "p(y, n) ~ x + (1|g)", family="binomial", link=link)
    return from_formula(frame, "y ~ x + offset(np.log(e)) + (1|g)", family="poisson")


def _at(model, seed):
    """(likelihood term, beta, tau) at a random unconstrained point of ``model``."""
    rng = np.random.default_rng(seed)
    point = {k: v + rng.uniform(-1.0, 1.0, np.shape(v))
             for k, v in model.initial_point(random_seed=seed).items()}
    point["tau_log__"] = point["tau_log__"] + 0.9 * seed  # tau from ~0.4 to ~2.5
    outs = model.replace_rvs_by_values([model["loglik"], model["beta"], model["tau"]])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")
    total, beta, tau = fn(point)
    return float(total), np.asarray(beta), float(tau)


CASES = [("binomial", "logit"), ("binomial", "probit"), ("poisson", None)]


@pytest.mark.parametrize("kind, link", CASES)
@pytest.mark.parametrize("form", ["marginal", "sufficient"])
def test_integrated_density_equals_brute_force_integration(kind, link, form):
    """The form's likelihood term at (beta, tau) is each cluster's integral by scipy quad, summed
    (constants included), to 1e-9 relative, at random points; a
    sufficient form's equals it where the covariate is constant within clusters."""
    data = _data(kind, within=form == "marginal", link=link)
    family = family_of(data)
    assert family.absent(data).get(form) is None
    priors = family.default_priors(data)
    model = family.form(form).build(data, priors=priors)
    for seed in (0, 1, 2):
        got, beta, tau = _at(model, seed)
        assert got == pytest.approx(brute_total(data, beta, tau), rel=1e-9)
        assert got != pytest.approx(brute_total(data, beta, 1.01 * tau), rel=1e-9)


def test_which_integrated_form_applies_and_the_default():
    """sufficient: no covariate varies within clusters (the default then), else marginal is the
    default and sufficient is absent with its reason; several factors: both absent."""
    within, between = _data("binomial", True), _data("binomial", False)
    fam = family_of(within)
    assert fam.default(between) == "sufficient" and fam.absent(between) == {}
    assert fam.default(within) == "marginal"
    assert "covariate x varies within clusters" in fam.absent(within)["sufficient"]
    with pytest.raises(DataError, match="--model sufficient does not apply"):
        fam.form_for("sufficient", within)
    frame = _frame("binomial", True)
    frame["h"] = np.tile(["a", "b"], 12)
    several = from_formula(frame, "p(y, n) ~ 1 + (1|g) + (1|h)", family="binomial")
    absent = family_of(several).absent(several)
    assert set(absent) == {"marginal", "sufficient"} and "centred" in absent["marginal"]


def test_an_observation_level_factor_is_kept_for_counts_and_refused_for_binary():
    """(1|obs) is overdispersion for binomial trials > 1 and counts; for 0/1 rows it is not
    identifiable (one line)."""
    frame = _frame("binomial", False)
    frame["obs"] = [f"o{i}" for i in range(len(frame))]
    frame["n"] = frame["n"] + 1
    assert from_formula(frame, "p(y, n) ~ 1 + (1|obs)", family="binomial").n_groups == 24
    frame["b"] = (frame["y"] > 1).astype(int)
    with pytest.raises(DataError, match="a level for every row"):
        from_formula(frame, "b ~ 1 + (1|obs)", family="bernoulli")


@pytest.mark.parametrize("kind", ["binomial", "poisson"])
def test_group_effects_are_drawn_from_each_cluster_s_conditional(kind):
    """Many draws of one cluster's u from conditional_draws: mean and variance equal the
    conditional's by quadrature (scipy), within 4.5 standard errors; a draw with tau = 0 is 0."""
    from varcomp.models.quadrature import conditional_draws

    fam = "binomial" if kind == "binomial" else "poisson"
    y, n, eta, tau = np.array([0.0, 1.0, 0.0]), np.array([3.0, 2.0, 4.0]), np.zeros(3), 1.8
    if kind == "poisson":
        y = np.array([4.0, 0.0, 7.0])

    def f(u):
        return np.exp(logp(y, n, eta + u, fam, "logit" if fam == "binomial" else "log").sum()
                      - 0.5 * u * u / tau**2)

    z = integrate.quad(f, -30, 30, limit=400)[0]
    m1 = integrate.quad(lambda u: u * f(u), -30, 30, limit=400)[0] / z
    m2 = integrate.quad(lambda u: u * u * f(u), -30, 30, limit=400)[0] / z
    var = m2 - m1**2
    S = 40000
    codes = np.repeat(np.arange(S), 3)
    draws = conditional_draws(np.tile(y, S), np.tile(n, S), np.tile(eta, S), codes, tau, fam,
                              "logit" if fam == "binomial" else "log",
                              np.random.default_rng(3), n_clusters=S)
    assert abs(draws.mean() - m1) < 4.5 * np.sqrt(var / S)
    # sd of the sample variance ~ sqrt((m4 - var^2) / S); bounded by sqrt(2 var^2 * 3 / S)
    assert abs(draws.var() - var) < 4.5 * np.sqrt(6.0 * var**2 / S)
    zero = conditional_draws(y, n, eta, np.zeros(3, int), 0.0, fam,
                             "logit" if fam == "binomial" else "log", np.random.default_rng(0))
    assert zero.tolist() == [0.0]


def test_cluster_loglik_is_each_cluster_s_integral_per_draw():
    """Family.cluster_loglik of the one-factor GLMM: (S, L), each entry the brute-force integral
    of that cluster at that draw's (beta, tau)."""
    import xarray as xr

    data = _data("poisson", True)
    fam = family_of(data)
    beta = np.array([[[0.1, 0.3], [0.0, 0.2]]])
    tau = np.array([[0.5, 1.4]])
    post = xr.Dataset({"beta": (("chain", "draw", "term"), beta),
                       "tau": (("chain", "draw"), tau)})
    got = fam.cluster_loglik(data, post, likelihood=fam.likelihood)
    assert got.shape == (2, 6)
    codes = data.design.factors[0].codes
    eta = data.design.X @ beta[0, 1] + data.offset
    want = brute_cluster(data.y[codes == 4, 0], np.ones(4), eta[codes == 4], 1.4, "poisson",
                         "log")
    assert got[1, 4] == pytest.approx(want, rel=1e-9)
    assert got.sum(axis=1)[0] == pytest.approx(brute_total(data, beta[0, 0], 0.5), rel=1e-9)
    assert integ.FACTORS_REASON


@pytest.mark.parametrize("family, link", [("binomial", "logit"), ("poisson", "log")])
def test_the_numba_kernel_equals_the_numpy_rule_value_and_gradient(family, link):
    """grouped_logp (numba, one quadrature per group) equals models.quadrature.sufficient_logp
    (numpy) in value, d eta and d tau to 1e-12 relative, over tau 0.05..5 and all-zero/all-one
    clusters; the constants are shared with models.quadrature."""
    from varcomp.models import quadrature
    from varcomp.models.compiled import glmm_quadrature as gq
    from varcomp.models.glm_density import density_for

    assert (gq.STEP_U, gq.TAIL_DROP) == (quadrature.STEP_U, quadrature.TAIL_DROP)
    rng = np.random.default_rng(5)
    L = 40
    n = rng.integers(1, 30, L).astype(float)
    y = rng.binomial(n.astype(int), 0.3).astype(float) if family == "binomial" else \
        rng.poisson(3.0, L).astype(float)
    y[:3] = 0.0
    if family == "binomial":
        y[3:6] = n[3:6]
    stats = quadrature.ClusterStats(n, y, np.zeros(L), np.zeros(L))
    eta = rng.normal(0, 0.5, L)
    eta[10:20] = eta[10]  # some clusters share their eta
    key = np.column_stack([n, y, eta])
    group = np.unique(key, axis=0, return_inverse=True)[1].ravel().astype(np.int64)
    for tau in (0.05, 0.7, 2.0, 5.0):
        want, w_tau, w_eta = quadrature.sufficient_logp(stats, eta, tau, family, link, grad=True)
        got, g_eta, g_tau = gq.grouped_logp(gq.LINK_CODE[(family, link)], n, y, eta, group, tau,
                                            True)
        pooled = float(np.sum(density_for(family, link).const(y, n)))
        assert got + pooled == pytest.approx(want, rel=1e-12)
        assert g_tau == pytest.approx(w_tau, rel=1e-10, abs=1e-12)
        np.testing.assert_allclose(g_eta, w_eta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family, link", [("binomial", "logit"), ("poisson", "log")])
def test_the_numba_row_kernel_equals_the_numpy_rule_value_and_gradient(family, link):
    """rows_logp (numba, clusters of rows with their own eta) equals
    models.quadrature.cluster_logp in value, d eta per row and d tau to 1e-10, tau 0.05..5."""
    from varcomp.models import quadrature
    from varcomp.models.compiled import glmm_quadrature as gq
    from varcomp.models.glm_density import density_for

    rng = np.random.default_rng(8)
    N, L = 120, 15
    codes = rng.integers(0, L, N)
    n = rng.integers(1, 6, N).astype(float)
    y = rng.binomial(n.astype(int), 0.4).astype(float) if family == "binomial" else \
        rng.poisson(2.0, N).astype(float)
    y[codes == 0] = 0.0
    eta = rng.normal(0, 0.7, N)
    order = np.argsort(codes, kind="stable").astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=L))]).astype(np.int64)
    for tau in (0.05, 0.9, 3.0, 5.0):
        r = quadrature.cluster_logp(y, n, eta, codes, tau, family, link, grad=True)
        got, d_eta, d_tau = gq.rows_logp(gq.LINK_CODE[(family, link)], n, y, eta, order, starts,
                                         tau, True)
        const = float(np.sum(density_for(family, link).const(y, n)))
        assert got + const == pytest.approx(r.logp.sum(), rel=1e-12)
        assert d_tau == pytest.approx(r.d_tau.sum(), rel=1e-10, abs=1e-12)
        np.testing.assert_allclose(d_eta, r.d_eta, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["binomial", "poisson"])
def test_every_form_is_one_posterior(kind):
    """centred, noncentred, marginal and sufficient (covariate constant within clusters) sampled
    with the default sampler path: the posterior means of beta and tau agree with centred's
    within 4.5 Monte Carlo standard errors (az.mcse) of the difference; the integrated forms'
    group effects agree with the latent ones' likewise."""
    import arviz as az

    from varcomp.analyses.fit import prepare
    from varcomp.models.sampling import sample_model

    data = _data(kind, within=False, seed=3)
    fam = family_of(data)
    fits = {}
    for name in ("centred", "noncentred", "marginal", "sufficient"):
        model, backend = prepare(fam.form(name), data)
        idata, _ = sample_model(model, draws=2000, tune=1000, chains=4, seed=1, backend=backend)
        fam.add_effects(idata, data, 1)
        fits[name] = idata.posterior
    ref = fits["centred"]
    for name, post in fits.items():
        for var in ("beta", "tau", "group_effect"):
            m, m0 = post[var].mean(("chain", "draw")), ref[var].mean(("chain", "draw"))
            se = np.sqrt(az.mcse(post[var])[var] ** 2 + az.mcse(ref[var])[var] ** 2)
            assert np.all(np.abs(m - m0) < 4.5 * se), (name, var, m.values, m0.values)
