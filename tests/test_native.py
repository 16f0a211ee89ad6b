"""models.native: the compiled sufficient density is PyMC's build_sufficient density, exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from models import native
from models.density import marginal_logp
from models.priors import NormalPrior, Priors, ScalePrior

SIZES = [1, 1, 1, 2, 2, 3, 5, 5, 5, 5, 9, 17, 17]


@pytest.fixture(params=["unbalanced", "repeated"])
def data(request, unbalanced):
    """The 3-cluster fixture, and 13 clusters with repeated sizes offset far from zero."""
    if request.param == "unbalanced":
        return unbalanced
    from models.simulate import simulate_univariate

    return simulate_univariate(len(SIZES), SIZES, mu=1e4, tau=2.0, sigma=3.0, rng=11).data()


PRIOR_CASES = [
    ("halfstudentt", "halfstudentt"),
    ("halfnormal", "exponential"),
    ("halfcauchy", "halfnormal"),
    ("exponential", "halfcauchy"),
]


def _priors(data, fam_tau: str, fam_sigma: str) -> Priors:
    base = Priors.default(data)
    return replace(base, mu=NormalPrior(base.center + 0.3 * base.scale, 2.0 * base.scale),
                   tau=ScalePrior(fam_tau, 0.7 * base.scale, nu=4.0),
                   sigma=ScalePrior(fam_sigma, 1.3 * base.scale, nu=5.0))


def _points(rng, k: int = 25) -> np.ndarray:
    return rng.normal(scale=1.5, size=(k, 3))


def _reference(data, priors: Priors, z: np.ndarray) -> float:
    """numpy/scipy: likelihood + priors + log Jacobians of the standardising transforms."""
    mu = priors.center + priors.scale * z[0]
    tau, sigma = priors.scale * math.exp(z[1]), priors.scale * math.exp(z[2])
    n, xbar, ss = data.stats.column(0)
    jac = math.log(priors.scale) + (z[1] + math.log(priors.scale)) + (z[2] + math.log(priors.scale))
    return float(marginal_logp(n, xbar, ss, mu, tau, sigma) + priors.logpdf(mu, tau, sigma) + jac)


@pytest.mark.parametrize(("fam_tau", "fam_sigma"), PRIOR_CASES)
def test_native_equals_numpy_reference(data, fam_tau, fam_sigma):
    priors = _priors(data, fam_tau, fam_sigma)
    block = native.parameter_block(data.stats, priors)
    rng = np.random.default_rng(3)
    for z in _points(rng):
        value, _ = native.logp_and_grad(z, block)
        ref = _reference(data, priors, z)
        assert abs(value - ref) <= 1e-10 * abs(ref), (z, value, ref)


@pytest.mark.parametrize(("fam_tau", "fam_sigma"), PRIOR_CASES)
def test_native_equals_pymc_sufficient(data, fam_tau, fam_sigma):
    """Gradient to 1e-9; log density up to one constant (PyMC rounds some constants to float32).

    The constant is the same at every point (spread below 1e-9 nats), so the posteriors are
    identical; its size (< 1e-6 nats) is PyMC's float32 rounding of log(2), log(pi) terms.
    """
    from models.univariate import build_sufficient

    priors = _priors(data, fam_tau, fam_sigma)
    model = build_sufficient(data, priors=priors)
    names = [v.name for v in model.value_vars]
    assert names == list(native.EXPANDED[:3])
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    block = native.parameter_block(data.stats, priors)
    rng = np.random.default_rng(4)
    offsets = []
    for z in _points(rng):
        value, grad = native.logp_and_grad(z, block)
        point = dict(zip(names, z, strict=True))
        want = np.asarray(dlogp(point))
        np.testing.assert_allclose(grad, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
        offsets.append(value - float(logp(point)))
    offsets = np.array(offsets)
    assert np.ptp(offsets) < 1e-9
    assert np.abs(offsets).max() < 1e-6


def test_gradient_matches_finite_differences(data):
    priors = _priors(data, "halfstudentt", "halfnormal")
    block = native.parameter_block(data.stats, priors)
    z = np.array([0.2, -0.4, 0.1])
    _, grad = native.logp_and_grad(z, block)
    h = 1e-6
    fd = [(native.logp_and_grad(z + h * e, block)[0] - native.logp_and_grad(z - h * e, block)[0])
          / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_size_grouping_is_the_cluster_sum(data):
    n, xbar, _ = data.stats.column(0)
    sizes, count, mean, scatter = native.size_groups(n, xbar)
    assert count.sum() == n.size and np.array_equal(np.unique(n), sizes)
    mu, t2, s2 = float(np.median(xbar)) + 1.7, 0.8, 1.3
    direct = np.sum(n * (xbar - mu) ** 2 / (s2 + n * t2))
    grouped = np.sum(sizes * (scatter + count * (mean - mu) ** 2) / (s2 + sizes * t2))
    assert grouped == pytest.approx(direct, rel=1e-13)


def test_broken_block_fails_the_reference_check(data):
    """The check above is trusted: the same comparison rejects a block with sizes and counts
    swapped (clusters of size n counted n times)."""
    priors = Priors.default(data)
    block = native.parameter_block(data.stats, priors).copy()
    K = int(block[0])
    h = native.HEADER
    block[h:h + K], block[h + K:h + 2 * K] = block[h + K:h + 2 * K].copy(), block[h:h + K].copy()
    z = np.array([0.1, -0.2, 0.3])
    value, _ = native.logp_and_grad(z, block)
    ref = _reference(data, priors, z)
    assert abs(value - ref) > 1e-3 * abs(ref)


def test_native_sampling_matches_the_data(unbalanced):
    """nutpie runs the compiled callbacks; the output has build_sufficient's variables."""
    import nutpie

    priors = Priors.default(unbalanced)
    compiled = native.compile_sufficient(unbalanced.stats, priors)
    idata = nutpie.sample(compiled, draws=200, tune=200, chains=2, seed=1, progress_bar=False)
    post = idata.posterior
    assert set(native.EXPANDED) <= set(post.data_vars)
    tau, sigma = post["tau"].values, post["sigma"].values
    np.testing.assert_allclose(post["icc"].values, tau**2 / (tau**2 + sigma**2), rtol=1e-12)
    np.testing.assert_allclose(post["mu"].values,
                               priors.center + priors.scale * post["mu_std__"].values, rtol=1e-12)
    assert int(idata.sample_stats["diverging"].values.sum()) == 0


def test_group_effect_moments_equal_the_direct_average(data):
    """The O(sizes) Rao-Blackwellised moments equal averaging the conditionals over draws."""
    from models.density import group_effect_conditional
    from models.effects import group_effect_moments

    rng = np.random.default_rng(9)
    n, xbar, _ = data.stats.column(0)
    S = 500
    mu = float(np.mean(xbar)) + rng.normal(size=S)
    tau, sigma = np.exp(rng.normal(size=S)), np.exp(rng.normal(size=S))
    mean, sd = group_effect_moments(n, xbar, mu, tau, sigma)
    m, v = group_effect_conditional(n, xbar, mu[:, None], tau[:, None], sigma[:, None])
    want_mean = m.mean(axis=0)
    want_sd = np.sqrt((v + m * m).mean(axis=0) - want_mean**2)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sd, want_sd, rtol=1e-9)


def test_add_group_effects_switches_to_moments_above_the_budget(data):
    """Draws below the budget; above it the moments group, which agrees with the draws."""
    import arviz as az

    from models.effects import SUMMARY_GROUP, add_group_effects

    rng = np.random.default_rng(2)
    n, xbar, _ = data.stats.column(0)
    shape = (2, 4000)
    post = {"mu": float(np.mean(xbar)) + 0.1 * rng.normal(size=shape),
            "tau": np.exp(0.1 * rng.normal(size=shape)),
            "sigma": np.exp(0.1 * rng.normal(size=shape))}
    small = add_group_effects(az.from_dict(posterior=post), data, seed=1)
    big = add_group_effects(az.from_dict(posterior=post), data, max_values=10)
    assert "group_effect" in small.posterior and SUMMARY_GROUP not in small.groups()
    assert "group_effect" not in big.posterior
    draws = small.posterior["group_effect"].values.reshape(-1, data.n_groups)
    se = big[SUMMARY_GROUP]["sd"].values / np.sqrt(draws.shape[0])
    # 5-sigma agreement of the draws' mean with the exact mean: false alarm ~6e-7 per group
    assert np.all(np.abs(draws.mean(axis=0) - big[SUMMARY_GROUP]["mean"].values) < 5 * se)
