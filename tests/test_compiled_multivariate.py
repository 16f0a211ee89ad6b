"""models.compiled.multivariate: the compiled multivariate sufficient density is the model's,
exactly (scipy's stacked MvNormal plus an independent prior density), with missing cells."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from varcomp.models.checks.oracles import mv_prior_logpdf, scipy_loglik_mv
from varcomp.models.compiled import multivariate as compiled
from varcomp.models.data import DataError
from varcomp.models.priors import MvPriors
from varcomp.models.simulate import Simulated
from varcomp.models.simulate_mv import drop_components, sigma_from_sd_corr, simulate_multivariate

V_NOTES = np.array([[4.0, 3.0], [3.0, 4.0]])
SIGMA_NOTES = sigma_from_sd_corr([0.5, 0.6], [[1.0, -0.8], [-0.8, 1.0]])
KINDS = ["complete", "missing", "p3"]


def _data(kind: str):
    """Complete data (every cluster in the size-grouped part), partly missing (both parts),
    p = 3."""
    sizes = [1, 2, 2, 3, 3, 3, 5, 8, 8]
    if kind == "p3":
        rng = np.random.default_rng(4)
        A = rng.normal(size=(3, 3))
        B = rng.normal(size=(3, 3))
        sim = simulate_multivariate(len(sizes), sizes, mu=[1.0, -2.0, 30.0], V=A @ A.T + np.eye(3),
                                    Sigma=B @ B.T + np.eye(3), rng=4)
    else:
        sim = simulate_multivariate(len(sizes), sizes, mu=[10.0, 100.0], V=V_NOTES,
                                    Sigma=SIGMA_NOTES, rng=3)
    if kind in ("missing", "p3"):
        frame = drop_components(sim.frame, 0.3, np.random.default_rng(5))
        return Simulated(frame, sim.effects, sim.params).data()
    return sim.data()


def _points(data, k: int, seed: int):
    rng = np.random.default_rng(seed)
    p = data.p
    out = []
    for _ in range(k):
        A = rng.normal(size=(p, p))
        B = rng.normal(size=(p, p))
        mu = np.nanmean(data.y, axis=0) + rng.normal(size=p)
        out.append((mu, A @ A.T * np.exp(rng.normal()) + 0.1 * np.eye(p),
                    B @ B.T * np.exp(rng.normal()) + 0.1 * np.eye(p)))
    return out


def _reference(data, priors: MvPriors, mu, V, Sigma) -> tuple[float, np.ndarray]:
    """scipy's MvNormal of the stacked observed vectors + the independent prior density +
    the log Jacobians (mu: log scale; packed factors: their log-diagonal coordinates)."""
    values = priors.point(mu, V, Sigma)
    x = compiled.to_unconstrained(priors, values)
    p = data.p
    T = p * (p + 1) // 2
    rows, cols = np.tril_indices(p)
    diag = rows == cols
    jac = (np.sum(np.log(priors.scale)) + x[p:p + T][diag].sum() + x[p + T:][diag].sum())
    return scipy_loglik_mv(data, mu, V, Sigma) + mv_prior_logpdf(priors, values) + jac, x


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_mv_equals_scipy_and_the_independent_prior(kind):
    """The compiled log density is scipy's stacked MvNormal plus the numpy LKJ-Cholesky prior
    plus the log Jacobians, to relative 1e-9, at 8 random points; complete data go through the
    size-grouped part only, partly missing data through the information form too."""
    data = _data(kind)
    priors = MvPriors.default(data)
    block = compiled.parameter_block(data, priors)
    scalars, _ = compiled.LAYOUT.unpack(block)
    if kind == "complete":
        assert scalars["L"] == 0 and scalars["n_size_groups"] > 0  # all grouped by size
    else:
        assert scalars["L"] > 0  # the information form is exercised
    for mu, V, Sigma in _points(data, 8, seed=1):
        ref, x = _reference(data, priors, mu, V, Sigma)
        value, _ = compiled.logp_and_grad(x, block)
        assert value == pytest.approx(ref, rel=1e-9, abs=0)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=10),
       prob=st.sampled_from([0.0, 0.2, 0.4]), log_ratio=st.floats(-3.0, 2.0),
       seed=st.integers(0, 2**31 - 1))
def test_compiled_mv_equals_scipy_for_any_design(sizes, prob, log_ratio, seed):
    """For any bivariate design varcomp fits (2..10 clusters of 1..8 rows, none to 40% of the
    cells missing; ``require_identifiable`` passes) and tau/sigma from 1e-3 to 1e2 (V, Sigma
    with random correlations), the compiled log density equals scipy's stacked MvNormal plus
    the independent prior and Jacobians to relative 1e-9."""
    rng = np.random.default_rng(seed)
    sim = simulate_multivariate(len(sizes), sizes, [10.0, 100.0], V_NOTES, SIGMA_NOTES, rng)
    frame = drop_components(sim.frame, prob, rng) if prob else sim.frame
    data = Simulated(frame, sim.effects, sim.params).data()
    try:
        data.require_identifiable()  # else its default priors are not defined (sd of one value)
    except DataError:
        assume(False)
    priors = MvPriors.default(data)
    block = compiled.parameter_block(data, priors)
    r = np.array([[1.0, rng.uniform(-0.9, 0.9)], [0.0, 1.0]])
    r[1, 0] = r[0, 1]
    s = np.exp(rng.normal(size=2))
    Sigma = s[:, None] * r * s[None, :]
    t = s * 10.0**log_ratio * np.exp(rng.uniform(-0.5, 0.5, 2))
    rb = np.array([[1.0, rng.uniform(-0.9, 0.9)], [0.0, 1.0]])
    rb[1, 0] = rb[0, 1]
    V = t[:, None] * rb * t[None, :]
    mu = np.nanmean(data.y, axis=0) + rng.normal(size=2)
    ref, x = _reference(data, priors, mu, V, Sigma)
    value, _ = compiled.logp_and_grad(x, block)
    assert value == pytest.approx(ref, rel=1e-9, abs=0)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_mv_gradient_equals_pymc(kind):
    """Gradient to 1e-8 of PyMC's dlogp; log density up to one constant, the same at every point
    (PyMC's LKJ normalising constant has the opposite sign: DEVELOPERS.md)."""
    from varcomp.models.forms.multivariate import build_sufficient

    data = _data(kind)
    priors = MvPriors.default(data)
    model = build_sufficient(data, priors=priors)
    names = [v.name for v in model.value_vars]
    logp = model.compile_logp(mode="FAST_COMPILE")
    dlogp = model.compile_dlogp(mode="FAST_COMPILE")
    block = compiled.parameter_block(data, priors)
    start = model.initial_point()
    sizes = [int(np.prod(start[n].shape)) or 1 for n in names]
    offsets = []
    for mu, V, Sigma in _points(data, 6, seed=2):
        x = compiled.to_unconstrained(priors, priors.point(mu, V, Sigma))
        point = dict(zip(names, np.split(x, np.cumsum(sizes)[:-1]), strict=True))
        value, grad = compiled.logp_and_grad(x, block)
        want = np.asarray(dlogp(point))
        np.testing.assert_allclose(grad, want, rtol=1e-8, atol=1e-8 * np.abs(want).max())
        offsets.append(value - float(logp(point)))
    assert np.ptp(offsets) < 1e-8


def test_broken_block_fails_the_reference_check():
    """The check above is trusted: a block whose size groups count each cluster twice fails."""
    data = _data("complete")
    priors = MvPriors.default(data)
    scalars, arrays = compiled.LAYOUT.unpack(compiled.parameter_block(data, priors))
    p = data.p
    groups = arrays["size_groups"].reshape(int(scalars["n_size_groups"]), 2 + p + p * p).copy()
    groups[:, 1] *= 2.0  # m_k doubled
    block = compiled.LAYOUT.pack(scalars, arrays | {"size_groups": groups})
    mu, V, Sigma = _points(data, 1, seed=3)[0]
    ref, x = _reference(data, priors, mu, V, Sigma)
    value, _ = compiled.logp_and_grad(x, block)
    assert abs(value - ref) > 1e-3 * abs(ref)


def test_c_callbacks_are_the_kernel():
    """What nutpie calls: the logp cfunc writes the kernel's value and gradient and returns 0,
    and refuses another dimension (-1); the expand cfunc refuses a wrong expanded length."""
    data = _data("missing")
    block = compiled.parameter_block(data)
    ptr = ctypes.c_void_p(block.ctypes.data)

    def dp(a):
        return a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))

    x = np.random.default_rng(0).normal(scale=0.5, size=8)
    grad, out = np.zeros(8), np.zeros(1)
    assert compiled._c_logp.ctypes(8, dp(x), dp(grad), dp(out), ptr) == 0
    value, want = compiled.logp_and_grad(x, block)
    assert out[0] == value
    np.testing.assert_array_equal(grad, want)
    assert compiled._c_logp.ctypes(7, dp(x), dp(grad), dp(out), ptr) == -1
    n_exp = sum(int(np.prod(s)) for _, s in compiled.expanded_names(2))
    expanded = np.zeros(n_exp)
    assert compiled._c_expand.ctypes(8, n_exp - 1, dp(x), dp(expanded), ptr) == -1
    assert compiled._c_expand.ctypes(8, n_exp, dp(x), dp(expanded), ptr) == 0
    np.testing.assert_array_equal(expanded[:8], x)


def test_compiled_mv_samples_with_the_models_names_and_dims(gcsemv_fit):
    """``varcomp fit gcsemv`` samples the compiled route: every variable of build_sufficient with
    its shape, outcome labels from the data, and Deterministics consistent with V and Sigma."""
    fit = gcsemv_fit.fits["sufficient"]
    assert fit.settings["backend"] == "native"
    post = fit.idata.posterior
    for name, shape in compiled.expanded_names(2):
        assert post[name].shape[2:] == shape, name
    assert post["icc"].dims[2:] == ("outcome",)
    assert list(post["outcome"].values) == list(gcsemv_fit.data.responses)
    V, Sigma = post["V"].values, post["Sigma"].values
    np.testing.assert_allclose(post["icc"].values, V[..., [0, 1], [0, 1]]
                               / (V[..., [0, 1], [0, 1]] + Sigma[..., [0, 1], [0, 1]]), rtol=1e-12)
    np.testing.assert_allclose(post["corr_within"].values[..., 0, 1],
                               Sigma[..., 0, 1] / np.sqrt(Sigma[..., 0, 0] * Sigma[..., 1, 1]),
                               rtol=1e-12)
