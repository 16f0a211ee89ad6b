"""models.compiled.oneway: the compiled sufficient density is PyMC's build_sufficient density,
exactly, for every prior family and design; nutpie samples it through its C callbacks."""

from __future__ import annotations

import ctypes
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varcomp.models.compiled import oneway as compiled
from varcomp.models.density import marginal_logp
from varcomp.models.forms.oneway import build_sufficient
from varcomp.models.priors import NormalPrior, Priors, ScalePrior
from varcomp.models.simulate import simulate_univariate

SIZES = [1, 1, 1, 2, 2, 3, 5, 5, 5, 5, 9, 17, 17]


@pytest.fixture(params=["unbalanced", "repeated"])
def data(request, unbalanced):
    """The 3-cluster fixture, and 13 clusters with repeated sizes offset far from zero."""
    if request.param == "unbalanced":
        return unbalanced
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
    log_scale = math.log(priors.scale)
    jac = log_scale + (z[1] + log_scale) + (z[2] + log_scale)
    return float(marginal_logp(n, xbar, ss, mu, tau, sigma) + priors.logpdf(mu, tau, sigma) + jac)


@pytest.mark.parametrize(("fam_tau", "fam_sigma"), PRIOR_CASES)
def test_compiled_equals_numpy_reference(data, fam_tau, fam_sigma):
    """The compiled log density is the closed-form likelihood plus scipy's priors plus the
    transforms' log Jacobians, to relative 1e-10, at 25 random points."""
    priors = _priors(data, fam_tau, fam_sigma)
    block = compiled.parameter_block(data.stats, priors)
    rng = np.random.default_rng(3)
    for z in _points(rng):
        value, _ = compiled.logp_and_grad(z, block)
        ref = _reference(data, priors, z)
        assert abs(value - ref) <= 1e-10 * abs(ref), (z, value, ref)


@pytest.mark.parametrize(("fam_tau", "fam_sigma"), PRIOR_CASES)
def test_compiled_equals_pymc_sufficient(data, fam_tau, fam_sigma):
    """Gradient to 1e-9; log density up to one constant (PyMC rounds some constants to float32).

    The constant is the same at every point (spread below 1e-9 nats), so the posteriors are
    identical; its size (< 1e-6 nats) is PyMC's float32 rounding of log(2), log(pi) terms.
    Includes data offset by 1e4 (the hypothesis test below covers designs near zero).
    """
    priors = _priors(data, fam_tau, fam_sigma)
    model = build_sufficient(data, priors=priors)
    names = [v.name for v in model.value_vars]
    assert names == list(compiled.EXPANDED[:3])
    logp = model.compile_logp(mode="FAST_COMPILE")
    dlogp = model.compile_dlogp(mode="FAST_COMPILE")
    block = compiled.parameter_block(data.stats, priors)
    rng = np.random.default_rng(4)
    offsets = []
    for z in _points(rng):
        value, grad = compiled.logp_and_grad(z, block)
        point = dict(zip(names, z, strict=True))
        want = np.asarray(dlogp(point))
        np.testing.assert_allclose(grad, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
        offsets.append(value - float(logp(point)))
    offsets = np.array(offsets)
    assert np.ptp(offsets) < 1e-9
    assert np.abs(offsets).max() < 1e-6


# ------------------------------------------------------------------- every design, every prior
FIXED = Priors(mu=NormalPrior(0.3, 2.0), tau=ScalePrior("halfnormal", 0.7),
               sigma=ScalePrior("halfnormal", 1.3), center=0.1, scale=1.2)


@pytest.fixture(scope="module")
def pymc_sufficient():
    """``{(tau family, sigma family): (model, priors, logp, dlogp, ref)}``: build_sufficient
    with fixed (not data-scaled) priors of each family pair, compiled once; designs are swapped
    into its pm.Data containers (n, xbar, ss of any length), and ``ref`` is the
    compiled-minus-PyMC constant on a template design."""
    template = simulate_univariate(3, [2, 3, 4], mu=0.0, rng=0).data()
    out = {}
    for fam in PRIOR_CASES:
        priors = replace(FIXED, tau=replace(FIXED.tau, family=fam[0], nu=4.0),
                         sigma=replace(FIXED.sigma, family=fam[1], nu=5.0))
        model = build_sufficient(template, priors=priors)
        logp = model.compile_logp(mode="FAST_COMPILE")
        dlogp = model.compile_dlogp(mode="FAST_COMPILE")
        z = np.zeros(3)
        point = dict(zip(compiled.EXPANDED[:3], z, strict=True))
        ref = compiled.logp_and_grad(z, compiled.parameter_block(template.stats, priors))[0]
        out[fam] = (model, priors, logp, dlogp, ref - float(logp(point)))
    return out


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=10),
       log_ratio=st.floats(-3.0, 2.0), log_sigma=st.floats(-1.0, 1.0),
       case=st.sampled_from(PRIOR_CASES), seed=st.integers(0, 2**31 - 1))
def test_compiled_equals_pymc_for_any_design_and_prior(pymc_sufficient, sizes, log_ratio,
                                                       log_sigma, case, seed):
    """For any design (2..10 clusters of 1..8 rows), data with tau/sigma from 1e-3 to 1e2, and
    each prior family pair: the compiled gradient equals PyMC's dlogp of build_sufficient to
    1e-9 and the log densities differ by one constant, the same for every design and point
    (to 1e-9 nats), so the compiled posterior is PyMC's. The data's total sd (e^-1..e) stays on
    the fixed priors' scale, as Priors.default makes it for real data: far off it, |log p|
    reaches 1e8 and float64 rounding alone moves it by 1e-9 (the explicit test above covers
    data offset by 1e4 with priors scaled to them)."""
    import pymc as pm

    model, priors, logp, dlogp, offset = pymc_sufficient[case]
    total, ratio = math.exp(log_sigma), 10.0**log_ratio
    sigma = total / math.sqrt(1.0 + ratio**2)
    rng = np.random.default_rng(seed)
    data = simulate_univariate(len(sizes), sizes, mu=rng.normal(), tau=sigma * ratio,
                               sigma=sigma, rng=rng).data()
    n, xbar, ss = data.stats.column(0)
    with model:
        pm.set_data({"n": n, "xbar": xbar, "ss": ss})
    block = compiled.parameter_block(data.stats, priors)
    for z in rng.normal(scale=1.5, size=(4, 3)):
        value, grad = compiled.logp_and_grad(z, block)
        point = dict(zip(compiled.EXPANDED[:3], z, strict=True))
        want = np.asarray(dlogp(point))
        np.testing.assert_allclose(grad, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
        assert value - float(logp(point)) == pytest.approx(offset, abs=1e-9)


# ------------------------------------------------------------------------------ the kernel
def test_gradient_matches_finite_differences(data):
    """The hand-written gradient is the derivative of the hand-written density."""
    priors = _priors(data, "halfstudentt", "halfnormal")
    block = compiled.parameter_block(data.stats, priors)
    z = np.array([0.2, -0.4, 0.1])
    _, grad = compiled.logp_and_grad(z, block)
    h = 1e-6
    fd = [(compiled.logp_and_grad(z + h * e, block)[0]
           - compiled.logp_and_grad(z - h * e, block)[0]) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_size_grouping_is_the_cluster_sum(data):
    """sum over clusters of n (xbar - mu)^2 / (s2 + n t2) equals the per-size form
    sum_k n_k (Q_k + m_k (A_k - mu)^2) / (s2 + n_k t2) (the identity the kernel's cost rests on)."""
    n, xbar, _ = data.stats.column(0)
    sizes, count, mean, scatter = compiled.size_groups(n, xbar)
    assert count.sum() == n.size and np.array_equal(np.unique(n), sizes)
    mu, t2, s2 = float(np.median(xbar)) + 1.7, 0.8, 1.3
    direct = np.sum(n * (xbar - mu) ** 2 / (s2 + n * t2))
    grouped = np.sum(sizes * (scatter + count * (mean - mu) ** 2) / (s2 + sizes * t2))
    assert grouped == pytest.approx(direct, rel=1e-13)


def test_broken_block_fails_the_reference_check(data):
    """The check above is trusted: the same comparison rejects a block with sizes and counts
    swapped (clusters of size n counted n times)."""
    priors = Priors.default(data)
    scalars, arrays = compiled.LAYOUT.unpack(compiled.parameter_block(data.stats, priors))
    arrays["sizes"], arrays["count"] = arrays["count"].copy(), arrays["sizes"].copy()
    block = compiled.LAYOUT.pack(scalars, arrays)
    z = np.array([0.1, -0.2, 0.3])
    value, _ = compiled.logp_and_grad(z, block)
    ref = _reference(data, priors, z)
    assert abs(value - ref) > 1e-3 * abs(ref)


def _double_ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


def test_c_callbacks_are_the_kernel(unbalanced):
    """What nutpie calls: the logp cfunc writes the kernel's value and gradient and returns 0,
    refuses another dimension (-1) and flags a non-finite density (4); the expand cfunc writes
    (z, mu, tau, sigma, icc) in EXPANDED's order."""
    priors = Priors.default(unbalanced)
    block = compiled.parameter_block(unbalanced.stats, priors)
    ptr = ctypes.c_void_p(block.ctypes.data)

    def logp(z, dim=3):
        grad, out = np.zeros(3), np.zeros(1)
        code = compiled._c_logp.ctypes(dim, _double_ptr(z), _double_ptr(grad), _double_ptr(out),
                                       ptr)
        return code, out[0], grad

    z = np.array([0.3, -0.1, 0.2])
    code, value, grad = logp(z)
    want_value, want_grad = compiled.logp_and_grad(z, block)
    assert code == 0 and value == want_value
    np.testing.assert_array_equal(grad, want_grad)
    assert logp(z, dim=2)[0] == -1
    assert logp(np.array([0.0, 800.0, 0.0]))[0] in (3, 4)  # tau = e^800: not finite
    expanded = np.zeros(len(compiled.EXPANDED))
    assert compiled._c_expand.ctypes(3, expanded.size, _double_ptr(z), _double_ptr(expanded),
                                     ptr) == 0
    mu, tau, sigma = (priors.center + priors.scale * z[0], priors.scale * math.exp(z[1]),
                      priors.scale * math.exp(z[2]))
    np.testing.assert_allclose(expanded, [*z, mu, tau, sigma, tau**2 / (tau**2 + sigma**2)],
                               rtol=1e-14)


def test_compiled_sampling_has_the_model_s_variables(dyestuff_fit):
    """nutpie runs the compiled callbacks (``varcomp fit``'s default route): the posterior has
    build_sufficient's variables, consistent with each other, and no divergences."""
    fit = dyestuff_fit.fits["sufficient"]
    assert fit.settings["backend"] == "native"
    post = fit.idata.posterior
    assert set(compiled.EXPANDED) <= set(post.data_vars)
    priors = Priors.default(dyestuff_fit.data)
    tau, sigma = post["tau"].values, post["sigma"].values
    np.testing.assert_allclose(post["icc"].values, tau**2 / (tau**2 + sigma**2), rtol=1e-12)
    np.testing.assert_allclose(post["mu"].values,
                               priors.center + priors.scale * post["mu_std__"].values, rtol=1e-12)
    np.testing.assert_allclose(tau, priors.scale * np.exp(post["tau_log_std__"].values),
                               rtol=1e-12)
    assert int(fit.idata.sample_stats["diverging"].values.sum()) == 0


# ------------------------------------------------------------------------------ group effects
def test_group_effect_moments_equal_the_direct_average(data):
    """The O(sizes) Rao-Blackwellised moments equal averaging the conditionals over draws."""
    from varcomp.models.density import group_effect_conditional
    from varcomp.models.effects import group_effect_moments

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

    from varcomp.models.effects import SUMMARY_GROUP, add_group_effects

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
