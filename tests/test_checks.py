"""The checks module: power against a broken model, reference accuracy, comparison logic, SBC."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from varcomp.models import checks, load
from varcomp.models.checks.broken import BROKEN
from varcomp.models.checks.oracles import scipy_loglik
from varcomp.models.checks.sbc_models import oneway_loglik_draws
from varcomp.models.forms import family_named
from varcomp.models.priors import NormalPrior, Priors, ScalePrior
from varcomp.models.reference import STATS
from varcomp.models.simulate import simulate_univariate

ONEWAY = family_named("oneway")
VARS = ONEWAY.compare_vars


# ----------------------------------------------------------------------------- power: logp
def test_compare_logp_fails_the_broken_model():
    """A covariance with tau where tau^2 belongs (sigma^2 I + tau 11^T) is a different density
    at almost every point: compare_logp must fail it while passing the correct closed form."""
    data = simulate_univariate(6, [1, 2, 3, 4, 5, 6], mu=1.0, tau=0.7, sigma=1.2, rng=4).data()
    broken = BROKEN["oneway"]
    res = checks.compare_logp(data, names=["sufficient"], builders={broken.name: broken.build},
                              seed=2)
    assert not res.passed
    assert res.details["failed"] == ["broken_tau_not_squared"]
    assert res.details["max_rel_err"]["broken_tau_not_squared"] > 1e-2
    assert res.details["max_rel_err"]["sufficient"] <= 1e-9


# ----------------------------------------------------------------------------- reference
@pytest.mark.parametrize("name", ["dyestuff", "dyestuff2", "rail"])
def test_reference_posterior_is_converged_in_the_grid(name):
    """Doubling the lattice (256 -> 512 per axis) moves no mean or 5/50/95% quantile by more
    than 1e-3 posterior sd: the quadrature error is far below any MCSE (>= 1e-2 sd with
    10^4 draws)."""
    d = load(name)
    pr = Priors.default(d)
    a = checks.reference_posterior(d, pr)
    b = checks.reference_posterior(d, pr, grid=512)
    sd = (b.summary["q95"] - b.summary["q05"]) / 3.29  # a scale of each marginal
    err = (a.summary - b.summary).abs().div(sd, axis=0)
    assert err.to_numpy().max() < 1e-3, err


def _brute_force(data, priors, n_mu=121, n_tau=500, n_sigma=500):
    """3-D quadrature on (mu, tau, sigma) in the original (linear) coordinates: no analytic
    integration over mu, no log scale, no Jacobian: an independent route to the posterior."""
    n, xbar, ss = data.stats.column(0)
    mu = np.linspace(-4.0, 6.0, n_mu)
    tau = (np.arange(n_tau) + 0.5) * 5.0 / n_tau  # midpoint rule on (0, 5]
    sigma = (np.arange(n_sigma) + 0.5) * 5.0 / n_sigma
    T, S = np.meshgrid(tau, sigma, indexing="ij")
    lp = np.empty((n_mu, n_tau, n_sigma))
    for i, m in enumerate(mu):
        s2, v = S[..., None] ** 2, S[..., None] ** 2 + n * T[..., None] ** 2
        lp[i] = (-0.5 * (n - 1) * np.log(s2) - 0.5 * np.log(v) - 0.5 * ss / s2
                 - 0.5 * n * (xbar - m) ** 2 / v).sum(-1)
    lp += priors.mu.logpdf(mu)[:, None, None] + priors.tau.logpdf(T) + priors.sigma.logpdf(S)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    icc = T**2 / (T**2 + S**2)

    def summary(values, weights):
        order = np.argsort(values)
        v, c = values[order], np.cumsum(weights[order]) - 0.5 * weights[order]  # mid-cell CDF
        return [float(np.sum(values * weights))] + [float(np.interp(p, c, v))
                                                    for p in (0.05, 0.5, 0.95)]

    wm, wt, ws = w.sum((1, 2)), w.sum((0, 2)), w.sum((0, 1))
    out = {"mu": summary(mu, wm), "tau": summary(tau, wt), "sigma": summary(sigma, ws),
           "icc": summary(icc.ravel(), w.sum(0).ravel())}
    return pd.DataFrame(out, index=list(STATS)).T


@pytest.mark.slow
def test_reference_posterior_matches_brute_force_quadrature():
    """The reference (mu integrated analytically, log-scale lattice with the Jacobian
    tau * sigma) equals a brute-force 3-D quadrature in the linear coordinates on a tiny data
    set, to 0.01 posterior sd (the brute force's own resolution); a missing Jacobian or a wrong
    mu integral would be off by tenths of an sd."""
    data = simulate_univariate(3, [2, 3, 2], mu=1.0, tau=1.0, sigma=0.8, rng=3).data()
    pr = Priors(mu=NormalPrior(1.0, 1.0), tau=ScalePrior("halfnormal", 1.0),
                sigma=ScalePrior("halfnormal", 1.0), center=1.0, scale=1.0)
    ref = checks.reference_posterior(data, pr).summary
    bf = _brute_force(data, pr)
    sd = (ref["q95"] - ref["q05"]) / 3.29
    err = (ref - bf).abs().div(sd, axis=0)
    assert err.to_numpy().max() < 0.01, err


# ----------------------------------------------------------------------------- compare_posteriors
def test_identical_posteriors_agree(fake_fit):
    """Two fits drawing from one distribution differ only by Monte Carlo error: every
    |z| <= 4 (false alarm about 0.1% over the 16 comparisons; the seed is fixed)."""
    rng = np.random.default_rng(1)
    res = checks.compare_posteriors([fake_fit("a", rng), fake_fit("b", rng)], var_names=VARS)
    assert res.passed, res.text
    assert res.details["status"] == {"a": "agrees", "b": "agrees"}
    assert len(res.table) == 16 and set(res.table.stat) == {"mean", "q05", "q50", "q95"}
    assert res.table.z.abs().max() < 4


def test_shifted_posterior_disagrees(fake_fit):
    """A posterior whose tau is shifted by 0.1 (about 1/3 sd) differs from the unshifted one
    by ~10 MCSEs with 4000 independent draws each: the comparison must fail."""
    rng = np.random.default_rng(2)
    res = checks.compare_posteriors({"a": fake_fit("a", rng),
                                     "b": fake_fit("b", rng, shift={"tau": 0.1})},
                                    var_names=VARS)
    assert not res.passed
    assert res.details["status"]["b"] == "DISAGREES"
    bad = res.table[res.table.verdict == "DIFFERS"]
    assert set(bad.param) <= {"tau", "icc"} and "tau" in set(bad.param)


def test_fit_with_divergences_is_unreliable_not_agreeing(fake_fit):
    """A fit with divergent transitions fails the diagnostics gate: it is never judged (even
    though its draws are fine), its status is 'unreliable here' with the divergences named,
    and the reliable fits are still compared."""
    rng = np.random.default_rng(3)
    fits = [fake_fit("a", rng), fake_fit("b", rng), fake_fit("c", rng, divergences=3)]
    res = checks.compare_posteriors(fits, var_names=VARS)
    assert res.passed
    assert res.details["status"]["c"] == "unreliable here"
    assert "3 divergent transitions" in res.text
    rows_c = res.table[(res.table.a == "c") | (res.table.b == "c")]
    assert (rows_c.verdict == "not judged").all()
    assert res.details["status"]["a"] == "agrees"


def _exact_reference(shift=0.0) -> checks.ReferencePosterior:
    """Exact summaries of the fake posterior (icc by a long Monte Carlo run)."""
    z = stats.norm.ppf([0.05, 0.5, 0.95])
    big = np.random.default_rng(99)
    t, s = np.exp(big.normal(0, 0.3, 4_000_000)), np.exp(big.normal(0.5, 0.1, 4_000_000))
    icc = t**2 / (t**2 + s**2)
    rows = {
        "mu": [1.0, *(1.0 + 0.5 * z)],
        "tau": [math.exp(0.045) + shift, *(np.exp(0.3 * z) + shift)],
        "sigma": [math.exp(0.5 + 0.005), *np.exp(0.5 + 0.1 * z)],
        "icc": [icc.mean(), *np.quantile(icc, [0.05, 0.5, 0.95])],
    }
    summary = pd.DataFrame(rows, index=list(STATS)).T
    return checks.ReferencePosterior(summary, np.zeros(1), np.zeros(1), np.zeros((1, 1)))


def test_comparison_with_the_reference(fake_fit):
    """Against an exact reference the z-score has one MCSE term: a correct fit agrees, and a
    reference whose tau is off by 0.1 makes every reliable fit disagree."""
    rng = np.random.default_rng(4)
    fits = [fake_fit("a", rng), fake_fit("b", rng)]
    good = checks.compare_posteriors(fits, reference=_exact_reference(), var_names=VARS)
    assert good.passed, good.text
    assert good.details["agrees_with_reference"] == {"a": True, "b": True}
    assert len(good.table[good.table.b == "reference"]) == 32
    bad = checks.compare_posteriors(fits, reference=_exact_reference(shift=0.1),
                                    var_names=VARS)
    assert not bad.passed
    assert bad.details["agrees_with_reference"] == {"a": False, "b": False}


# ----------------------------------------------------------------------------- rank uniformity
def test_rank_uniformity_accepts_uniform_and_rejects_skewed_ranks():
    """Exactly uniform ranks on {0..M} pass the ECDF test; ranks piled up at the top (an
    underdispersed or shifted posterior) fail it, with both the ECDF and chi-square p < 0.01."""
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 101, size=100)
    res = checks.rank_uniformity(uniform, 100, seed=1)
    assert res["p_ecdf"] > 0.01
    skewed = np.minimum(100, (rng.beta(2.0, 1.0, size=100) * 101).astype(int))
    bad = checks.rank_uniformity(skewed, 100, seed=1)
    assert bad["p_ecdf"] < 0.01 and bad["p_chi2"] < 0.01


def test_rank_uniformity_false_alarm_rate():
    """Under exact uniformity the ECDF test rejects at alpha = 0.01 at most 1% of the time (its
    Monte Carlo p-value is conservative): in 150 replicates at most 6 rejections
    (P(Binomial(150, 0.01) > 6) = 8e-4)."""
    rng = np.random.default_rng(5)
    rejections = sum(checks.rank_uniformity(rng.integers(0, 51, size=60), 50, n_null=500,
                                            seed=int(s))["p_ecdf"] < 0.01 for s in range(150))
    assert rejections <= 6


def test_loglik_quantity_uses_the_closed_form():
    """SBC's data-dependent quantity is log p(X | mu, tau, sigma), vectorised over draws."""
    data = simulate_univariate(4, 3, mu=0.0, tau=1.0, sigma=1.0, rng=1).data()
    n, xbar, ss = data.stats.column(0)
    mu, tau, sigma = np.array([0.1, -0.2]), np.array([0.5, 2.0]), np.array([1.0, 0.7])
    got = oneway_loglik_draws(n, xbar, ss, mu, tau, sigma)
    want = [scipy_loglik(data, m, t, s) for m, t, s in zip(mu, tau, sigma, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert special.logsumexp(got) < 0


# ----------------------------------------------------------------------------- SBC (slow)
@pytest.mark.slow
@pytest.mark.parametrize("form, target_accept, draws, thin", [("sufficient", 0.9, 400, 4),
                                                               ("centred", 0.95, 800, 8)])
def test_sbc_calibrated(form, target_accept, draws, thin, tmp_path):
    """Talts et al. (2018): if the sampler draws from the exact posterior, the rank of the
    prior draw among posterior draws is uniform, for mu, tau, sigma, icc and log p(X | theta).
    100 simulations, ECDF test at alpha = 0.01 per quantity (5% family-wise per form). The
    200 kept draws are thinned to about the ESS (the centred form mixes ~4x slower), since
    autocorrelated draws bend the rank distribution into a U."""
    t0 = time.perf_counter()
    res = checks.sbc(checks.OnewaySBC(form, L=8, n=5), n_sims=100, draws=draws, tune=400,
                     chains=2, thin=thin, seed=11, target_accept=target_accept)
    seconds = time.perf_counter() - t0
    checks.plot_sbc(res, tmp_path / f"sbc_{form}.png")
    print(f"SBC {form}: {seconds:.0f} s; {res.text}")
    assert len(res.ranks) == 100 and res.ranks.to_numpy().max() <= res.n_ranks == 200
    assert (tmp_path / f"sbc_{form}.png").stat().st_size > 0
    assert res.passed, res.text


@pytest.mark.slow
def test_sbc_fails_the_broken_model():
    """Fitting sigma^2 I + tau 11^T to data simulated with tau^2 makes the posterior of tau
    centre on tau_true^2: with 30 clusters the ranks of tau (and icc) pile up at the ends, and
    30 simulations suffice to reject uniformity."""
    res = checks.sbc(checks.OnewaySBC("broken_tau_not_squared", L=30, n=5), n_sims=30,
                     draws=200, tune=200, chains=2, thin=4, seed=2)
    assert not res.passed
    assert res.pvalues["tau"] < 0.01


def test_compare_compiled_passes_and_catches_a_broken_block(monkeypatch):
    """The compiled sufficient densities equal the PyMC models (uni- and bivariate), and the
    same check fails when the compiled block is wrong (cluster counts doubled)."""
    from varcomp.models.compiled import oneway

    for name in ("dyestuff", "gcsemv"):
        res = checks.compare_compiled(load(name), n_points=5)
        assert res.passed, res.text
    real = oneway.parameter_block

    def broken(stats, priors, k=0):
        scalars, arrays = oneway.LAYOUT.unpack(real(stats, priors, k))
        return oneway.LAYOUT.pack(scalars, arrays | {"count": 2.0 * arrays["count"]})

    monkeypatch.setattr(oneway, "parameter_block", broken)
    res = checks.compare_compiled(load("rail"), n_points=5)
    assert not res.passed and res.details["max_grad_rel_err"] > 1e-3
