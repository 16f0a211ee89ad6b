"""models.native_mv: the compiled multivariate sufficient density is the model's, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from models import native_mv
from models.checks_mv import mv_prior_logpdf, scipy_loglik_mv
from models.priors import MvPriors
from models.simulate import Simulated
from models.simulate_mv import drop_components, sigma_from_sd_corr, simulate_multivariate

V_NOTES = np.array([[4.0, 3.0], [3.0, 4.0]])
SIGMA_NOTES = sigma_from_sd_corr([0.5, 0.6], [[1.0, -0.8], [-0.8, 1.0]])


def _data(kind: str):
    """Complete data (every cluster in the size-grouped part), partly missing (both parts), p = 3."""
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
    x = native_mv.to_unconstrained(priors, values)
    p = data.p
    T = p * (p + 1) // 2
    rows, cols = np.tril_indices(p)
    diag = rows == cols
    jac = (np.sum(np.log(priors.scale)) + x[p:p + T][diag].sum() + x[p + T:][diag].sum())
    return scipy_loglik_mv(data, mu, V, Sigma) + mv_prior_logpdf(priors, values) + jac, x


@pytest.mark.parametrize("kind", ["complete", "missing", "p3"])
def test_native_mv_equals_scipy_and_the_independent_prior(kind):
    data = _data(kind)
    priors = MvPriors.default(data)
    block = native_mv.parameter_block(data, priors)
    if kind == "complete":
        assert block[native_mv._L] == 0 and block[native_mv._KC] > 0  # all grouped by size
    else:
        assert block[native_mv._L] > 0  # the information form is exercised
    for mu, V, Sigma in _points(data, 8, seed=1):
        ref, x = _reference(data, priors, mu, V, Sigma)
        value, _ = native_mv.logp_and_grad(x, block)
        assert value == pytest.approx(ref, rel=1e-9, abs=0)


@pytest.mark.parametrize("kind", ["complete", "missing", "p3"])
def test_native_mv_gradient_equals_pymc(kind):
    """Gradient to 1e-8 of PyMC's dlogp; log density up to one constant, the same at every point
    (PyMC's LKJ normalising constant has the opposite sign: DEVELOPERS.md)."""
    from models.multivariate import build_sufficient

    data = _data(kind)
    priors = MvPriors.default(data)
    model = build_sufficient(data, priors=priors)
    names = [v.name for v in model.value_vars]
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    block = native_mv.parameter_block(data, priors)
    sizes = [int(np.prod(model.initial_point()[n].shape)) or 1 for n in names]
    offsets = []
    for mu, V, Sigma in _points(data, 6, seed=2):
        x = native_mv.to_unconstrained(priors, priors.point(mu, V, Sigma))
        point = dict(zip(names, np.split(x, np.cumsum(sizes)[:-1]), strict=True))
        value, grad = native_mv.logp_and_grad(x, block)
        want = np.asarray(dlogp(point))
        np.testing.assert_allclose(grad, want, rtol=1e-8, atol=1e-8 * np.abs(want).max())
        offsets.append(value - float(logp(point)))
    assert np.ptp(offsets) < 1e-8


def test_broken_block_fails_the_reference_check():
    """The check above is trusted: a block whose size groups count each cluster twice fails."""
    data = _data("complete")
    priors = MvPriors.default(data)
    block = native_mv.parameter_block(data, priors).copy()
    p, P, L, Kc = (int(block[i]) for i in (native_mv._P, native_mv._NPAT, native_mv._L,
                                           native_mv._KC))
    o_g = native_mv.HEADER + 6 * p + P * p + P + P * p * p + L * P + L * P * p
    block[o_g + 1:o_g + Kc * (2 + p + p * p):2 + p + p * p] *= 2.0  # m_k doubled
    mu, V, Sigma = _points(data, 1, seed=3)[0]
    ref, x = _reference(data, priors, mu, V, Sigma)
    value, _ = native_mv.logp_and_grad(x, block)
    assert abs(value - ref) > 1e-3 * abs(ref)


def test_native_mv_samples_with_the_models_names_and_dims():
    import nutpie

    data = _data("missing")
    compiled = native_mv.compile_sufficient_mv(data)
    idata = nutpie.sample(compiled, draws=150, tune=150, chains=2, seed=1, progress_bar=False)
    post = idata.posterior
    for name, shape in native_mv.expanded_names(2):
        assert post[name].shape[2:] == shape, name
    assert post["icc"].dims[2:] == ("outcome",)
    assert list(post["outcome"].values) == list(data.responses)
    V, Sigma = post["V"].values, post["Sigma"].values
    np.testing.assert_allclose(post["icc"].values, V[..., [0, 1], [0, 1]]
                               / (V[..., [0, 1], [0, 1]] + Sigma[..., [0, 1], [0, 1]]), rtol=1e-12)
    np.testing.assert_allclose(post["corr_within"].values[..., 0, 1],
                               Sigma[..., 0, 1] / np.sqrt(Sigma[..., 0, 0] * Sigma[..., 1, 1]),
                               rtol=1e-12)
