"""Exact checks of the one-way family: densities of all four forms, the closed form, the padded
blocks of the literal MvNormal, simulator, ML/REML, group effects."""

from __future__ import annotations

import itertools
import math

import arviz as az
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from varcomp.models import checks, fit_ml, fit_reml, load
from varcomp.models.checks.oracles import scipy_loglik
from varcomp.models.density import group_effect_conditional, marginal_logp
from varcomp.models.forms import family_named
from varcomp.models.forms.oneway import size_blocks
from varcomp.models.simulate import simulate_univariate

ONEWAY = family_named("oneway")


def test_all_forms_equal_scipy_mvnormal(oneway_design):
    """Integrating the Gaussian group effects out of the centred and non-centred joints (exact
    Laplace identity), and the marginal and sufficient forms, all give
    sum_l log MVN(x_l; mu 1, sigma^2 I + tau^2 11^T) to relative 1e-9, for tau/sigma from
    1e-4 to 1e2, on balanced, unbalanced and singleton-containing clusters."""
    res = checks.compare_logp(oneway_design, n_points=20, seed=3, rtol=1e-9)
    assert res.passed, res.text
    assert set(res.details["max_rel_err"]) == set(ONEWAY.forms)
    assert max(res.details["max_rel_err"].values()) <= 1e-9
    ratios = res.table["tau_over_sigma"]
    assert len(res.table) >= 20 and ratios.min() <= 1e-4 * 1.0001 and ratios.max() >= 99.99


def test_logp_machinery_matches_pymc_compile_logp(unbalanced):
    """Evaluating a model at constrained values (transform's forward of the inputs) gives the
    same number as PyMC's own compile_logp at the transformed point."""
    import pytensor.tensor as pt

    from varcomp.models.checks.base import constrained_logp

    model = ONEWAY.form("centred").build(unbalanced)
    fn, names = constrained_logp(model)
    point = {"mu": 3.1, "tau": 0.8, "sigma": 1.7, "group_effect": np.array([0.3, -0.2, 1.1])}
    trans = {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        tr = model.rvs_to_transforms[rv]
        trans[value.name] = tr.forward(pt.as_tensor_variable(np.asarray(point[rv.name]))).eval()
    expected = model.compile_logp(jacobian=False, mode="FAST_COMPILE")(trans)
    assert fn(point)[0] == pytest.approx(float(expected), rel=1e-12)


# ----------------------------------------------------------------------------- the closed form
@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=10),
       log_ratio=st.floats(-4.0, 2.0), log_sigma=st.floats(-1.0, 1.0),
       mu=st.floats(-5.0, 5.0), seed=st.integers(0, 2**31 - 1))
def test_closed_form_equals_scipy_for_any_design(sizes, log_ratio, log_sigma, mu, seed):
    """For any design (2..10 clusters of 1..8 rows) and tau/sigma from 1e-4 to 1e2, the closed
    form of models.density (from n_l, xbar_l, S_l) equals scipy's MvNormal of each cluster's
    stacked vector, sum_l log MVN(x_l; mu 1, sigma^2 I + tau^2 11^T), to relative 1e-9."""
    sigma = math.exp(log_sigma)
    tau = sigma * 10.0**log_ratio
    rng = np.random.default_rng(seed)
    data = simulate_univariate(len(sizes), sizes, mu=mu + rng.normal(), tau=max(tau, 1e-3),
                               sigma=sigma, rng=rng).data()
    n, xbar, ss = data.stats.column(0)
    want = scipy_loglik(data, mu, tau, sigma)
    assert float(marginal_logp(n, xbar, ss, mu, tau, sigma)) == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------------- ERRATA item 3
def _notes_printed_logp(x, mu, tau, sigma, corrected: bool) -> float:
    """The notes' closed-form density as printed (or with ERRATA item 3 fixed)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    xbar = x.mean()
    ss = ((x - xbar) ** 2).sum()
    s2, t2 = sigma**2, tau**2
    last = (n * (xbar - mu) ** 2 / (s2 + n * t2) if corrected
            else (n / s2) / (n / s2 + 1 / t2) * (xbar - mu) ** 2)  # as printed
    return (-0.5 * n * math.log(2 * math.pi) - 0.5 * n * math.log(s2) - 0.5 * math.log(t2)
            - 0.5 * math.log(n / s2 + 1 / t2) - 0.5 * (ss / s2 + last))


def test_notes_printed_density_is_wrong_and_errata_fix_is_right(rng):
    """The notes print the exponent's last term as (n/s2)/(n/s2 + 1/t2) xbar^2; completing the
    square gives n xbar^2 / (s2 + n t2). Only the corrected form equals the MvNormal density
    (and models.density implements it)."""
    for _ in range(20):
        n = int(rng.integers(1, 8))
        tau, sigma = float(np.exp(rng.normal())), float(np.exp(rng.normal()))
        mu = float(rng.normal())
        x = rng.normal(mu + 1.0, 2.0, size=n)
        cov = sigma**2 * np.eye(n) + tau**2 * np.ones((n, n))
        truth = stats.multivariate_normal(np.full(n, mu), cov).logpdf(x)
        fixed = _notes_printed_logp(x, mu, tau, sigma, corrected=True)
        ours = marginal_logp(np.array([n]), np.array([x.mean()]),
                             np.array([((x - x.mean()) ** 2).sum()]), mu, tau, sigma)
        assert fixed == pytest.approx(truth, rel=1e-12)
        assert ours == pytest.approx(truth, rel=1e-12)
    # a generic point where the printed version is visibly off
    x = np.array([1.0, 2.5, 4.0])
    cov = 1.0 * np.eye(3) + 4.0 * np.ones((3, 3))
    truth = stats.multivariate_normal(np.zeros(3), cov).logpdf(x)
    printed = _notes_printed_logp(x, 0.0, 2.0, 1.0, corrected=False)
    assert abs(printed - truth) > 0.1


# ----------------------------------------------------------------------------- size blocks
def _best_padded_work(sizes: np.ndarray, max_blocks: int) -> float:
    """Brute force: the least sum over ranges of clusters * (largest size)^2 over every split of
    the distinct sizes into at most ``max_blocks`` contiguous ranges."""
    u, count = np.unique(sizes, return_counts=True)
    best = math.inf
    for k in range(1, min(max_blocks, u.size) + 1):
        for cuts in itertools.combinations(range(1, u.size), k - 1):
            edges = [0, *cuts, u.size]
            work = sum(count[a:b].sum() * float(u[b - 1]) ** 2
                       for a, b in itertools.pairwise(edges))
            best = min(best, work)
    return best


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=10),
       max_blocks=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_size_blocks_pad_each_cluster_once_at_least_work(sizes, max_blocks, seed):
    """The literal MvNormal's blocks: every cluster appears in exactly one block, as its own
    responses in data order followed by zeros; there are at most ``max_blocks`` blocks, and
    their padded work sum clusters * K^2 is the least any split into contiguous size ranges
    achieves (brute force over all splits)."""
    data = simulate_univariate(len(sizes), sizes, mu=1.0, tau=1.0, sigma=1.0, rng=seed).data()
    blocks = size_blocks(data, max_blocks=max_blocks)
    assert 1 <= len(blocks) <= max_blocks
    y = data.y[:, 0]
    seen = []
    for n, values in blocks:
        K = values.shape[1]
        assert values.shape[0] == n.size and n.max() == K
        for size, row in zip(n, values, strict=True):
            matches = [g for g in range(data.n_groups)
                       if data.sizes[g] == size and np.array_equal(y[data.codes == g], row[:size])]
            assert matches, row
            seen.append(matches[0])
            assert not row[size:].any()
    assert sorted(seen) == list(range(data.n_groups))
    work = sum(v.shape[0] * v.shape[1] ** 2 for _, v in blocks)
    assert work == _best_padded_work(data.sizes, max_blocks)


# ----------------------------------------------------------------------------- simulator
def test_simulator_correlations_within_and_between():
    """Over R = 10^4 replicates of L = 2, n = 3, tau = 2, sigma = 1: Corr(X_lj, X_lk) =
    tau^2/(tau^2 + sigma^2) = 0.8 within a cluster and 0 between clusters. A sample
    correlation of R normal pairs has standard error (1 - rho^2)/sqrt(R) (0.0036 and 0.01);
    each of the 6 within and 9 between pairs must lie within 4 SE (false alarm 6e-5 per pair,
    1e-3 for all 15). The simulator draws clusters independently, so one call with 2R clusters
    gives the R replicates (clusters 2r and 2r + 1) in one vectorised pass."""
    R = 10_000
    sim = simulate_univariate(2 * R, 3, mu=0.0, tau=2.0, sigma=1.0, rng=20261127)
    X = sim.frame["y"].to_numpy().reshape(R, 6)
    corr = np.corrcoef(X, rowvar=False)
    for i in range(6):
        for j in range(i + 1, 6):
            rho = 0.8 if i // 3 == j // 3 else 0.0
            se = (1 - rho**2) / math.sqrt(R)
            assert abs(corr[i, j] - rho) < 4 * se, (i, j, corr[i, j])


@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=0.0), "tau"), (dict(tau=-1.0), "tau"), (dict(sigma=0.0), "sigma"),
    (dict(sigma=-2.0), "sigma"), (dict(n=0), "sizes"), (dict(n=[3, 0]), "sizes"),
])
def test_simulator_refuses_bad_parameters(kwargs, match):
    """tau and sigma are standard deviations (> 0) and clusters have at least one row."""
    args = dict(L=2, n=3, tau=1.0, sigma=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        simulate_univariate(args.pop("L"), args.pop("n"), **args)


# ----------------------------------------------------------------------------- ML / REML
def _five_sig(value: float, published: float) -> bool:
    """Equal to 5 significant figures: within half a unit of the published 5th digit."""
    return abs(value - published) <= 0.5 * 10 ** (math.floor(math.log10(abs(published))) - 4)


def test_ml_and_reml_match_lme4_on_dyestuff():
    """lme4 on Dyestuff: ML deviance 327.327059881135, sigma 49.5101, tau 37.2603; REML
    criterion 319.654276842342, tau 42.0006, mu 1527.5 (5 significant figures)."""
    d = load("dyestuff")
    ml, reml = fit_ml(d), fit_reml(d)
    assert _five_sig(ml.criterion, 327.327059881135)
    assert _five_sig(ml.sigma, 49.5101)
    assert _five_sig(ml.tau, 37.2603)
    assert _five_sig(reml.criterion, 319.654276842342)
    assert _five_sig(reml.tau, 42.0006)
    assert _five_sig(reml.mu, 1527.5)
    assert not ml.boundary and not reml.boundary


def test_dyestuff2_is_a_boundary_fit():
    """Dyestuff2's between-batch mean square is below the within one: tau_hat = 0 exactly,
    flagged as a boundary fit, for ML and REML."""
    d = load("dyestuff2")
    for est in (fit_ml(d), fit_reml(d)):
        assert est.tau == 0.0 and est.boundary and est.icc == 0.0


def test_family_estimates_are_ml_and_reml():
    """The family hands analyses.fit exactly the frequentist optima above."""
    d = load("dyestuff")
    est = ONEWAY.estimates(d)
    assert set(est) == {"ml", "reml"}
    assert est["ml"].as_dict() == fit_ml(d).as_dict()
    assert est["reml"].as_dict() == fit_reml(d).as_dict()


# ----------------------------------------------------------------------------- group effects
def test_add_group_effects_draws_from_the_conditional(unbalanced):
    """Given (mu, tau, sigma), M_l | x_l ~ N(n tau^2 (xbar - mu)/(s2 + n t2), t2 s2/(s2 + n t2)).
    With S = 20000 draws per parameter value, the sample mean lies within 4 sqrt(v/S) of the
    conditional mean and the sample variance within 4 sqrt(2/S) (relative) of v (false alarm
    6e-5 per comparison). The family's ``add_effects`` is this function."""
    S = 20_000
    params = np.array([[1.0, 0.5, 2.0], [4.0, 3.0, 0.3]])  # (mu, tau, sigma) per chain
    post = {k: np.repeat(params[:, i:i + 1], S, axis=1) for i, k in
            enumerate(("mu", "tau", "sigma"))}
    idata = az.from_dict(posterior=post)
    ONEWAY.add_effects(idata, unbalanced, 5)
    draws = idata.posterior["group_effect"].values  # (chain, draw, group)
    n = unbalanced.stats.n[:, 0].astype(float)
    xbar = unbalanced.stats.mean[:, 0]
    for c, (mu, tau, sigma) in enumerate(params):
        mean, var = group_effect_conditional(n, xbar, mu, tau, sigma)
        m_hat, v_hat = draws[c].mean(axis=0), draws[c].var(axis=0, ddof=1)
        assert np.all(np.abs(m_hat - mean) < 4 * np.sqrt(var / S))
        assert np.all(np.abs(v_hat / var - 1) < 4 * math.sqrt(2 / S))
    assert list(idata.posterior["group"].values) == [str(g) for g in unbalanced.groups]


@pytest.mark.parametrize("chunk", [1, 7, 1 << 30])
def test_effects_and_pointwise_do_not_depend_on_the_block_size(monkeypatch, chunk):
    """Group-effect draws and per-cluster log densities are evaluated a block of draws at a
    time; any block size gives the same numbers as one whole-array pass (the normals are one
    stream), and the log densities equal marginal_logp's cluster terms."""
    import varcomp.models.effects as effects
    import varcomp.models.pointwise as pointwise
    from varcomp.models.density import marginal_logp_terms

    d = load("rail")
    rng = np.random.default_rng(0)
    post = {"mu": rng.normal(size=(2, 9)), "tau": np.exp(rng.normal(size=(2, 9))),
            "sigma": np.exp(rng.normal(size=(2, 9)))}

    def run(block):
        monkeypatch.setattr(effects, "CHUNK", block)  # draw_blocks' default, for both
        idata = az.from_dict(posterior={k: v.copy() for k, v in post.items()})
        effects.add_group_effects(idata, d, seed=5)
        return idata.posterior["group_effect"].values, pointwise.oneway_loglik(d, idata.posterior)

    (e, ll), (e_ref, ll_ref) = run(chunk), run(1 << 40)
    assert np.array_equal(e, e_ref) and np.array_equal(ll, ll_ref)
    n, xbar = d.stats.n[:, 0].astype(float), d.stats.mean[:, 0]
    mean, var = group_effect_conditional(n, xbar, post["mu"][..., None], post["tau"][..., None],
                                         post["sigma"][..., None])
    z = np.random.default_rng(5).standard_normal(mean.shape)
    assert np.array_equal(e, mean + np.sqrt(var) * z)
    terms = marginal_logp_terms(n, xbar, d.stats.ss[:, 0], post["mu"].reshape(-1, 1),
                                post["tau"].reshape(-1, 1), post["sigma"].reshape(-1, 1))
    assert np.array_equal(ll, terms)
