"""The compiled one-factor GLMM posteriors (:mod:`models.compiled.glmm`) against the PyMC forms
they replace: the same log density (every constant included) at random points, its gradient
against central finite differences, and the route each case takes."""

from __future__ import annotations

import numpy as np
import pytest
from test_glmm_integrated import _data

from varcomp.models.compiled import glmm as cg
from varcomp.models.forms import family_of
from varcomp.models.forms import glmm_integrated as integ
from varcomp.models.priors import ScalePrior


def _block(data, priors, form):
    family, link = family_of(data).likelihood.name, data.link
    if form == "marginal":
        return cg.marginal_block(priors, family, link, integ.marginal_values(data),
                                 data.design.X, data.design.factors[0].codes)
    return cg.sufficient_block(priors, family, link, integ.sufficient_values(data),
                               data.design.X[integ.first_rows(data)])


def _points(model, n, seed):
    """n random unconstrained points of ``model`` with their (beta, tau)."""
    rng = np.random.default_rng(seed)
    outs = model.replace_rvs_by_values([model["beta"], model["tau"]])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")
    for i in range(n):
        point = {k: v + rng.uniform(-1.5, 1.5, np.shape(v))
                 for k, v in model.initial_point(random_seed=seed + i).items()}
        beta, tau = fn(point)
        yield point, np.asarray(beta), float(tau)


CASES = [("binomial", "marginal", None), ("binomial", "sufficient", None),
         ("poisson", "marginal", None), ("poisson", "sufficient", None),
         ("binomial", "marginal", ScalePrior("halfnormal", 0.7)),
         ("poisson", "sufficient", ScalePrior("exponential", 1.3)),
         ("binomial", "sufficient", ScalePrior("halfcauchy", 2.0))]


@pytest.mark.parametrize("kind, form, tau_prior", CASES)
def test_compiled_logp_equals_the_pymc_form_and_its_gradient_finite_differences(
        kind, form, tau_prior):
    """At 5 random points: the compiled value equals ``model.compile_logp()`` of the PyMC form
    to 1e-9 relative (the same coordinates, every constant included); each gradient component
    equals a central finite difference (step 1e-5) to 1e-6 relative."""
    from dataclasses import replace

    data = _data(kind, within=form == "marginal")
    fam = family_of(data)
    priors = fam.default_priors(data)
    if tau_prior is not None:
        priors = replace(priors, tau=(tau_prior,))
    model = fam.form(form).build(data, priors=priors)
    logp = model.compile_logp()
    block = _block(data, priors, form)
    for point, beta, tau in _points(model, 5, seed=7):
        z = cg.to_unconstrained(priors, beta, tau)
        got, grad = cg.logp_and_grad(z, block)
        assert got == pytest.approx(float(logp(point)), rel=1e-9, abs=1e-9)
        h = 1e-5
        for j in range(z.size):
            e = np.zeros(z.size)
            e[j] = h
            fd = (cg.logp_and_grad(z + e, block)[0] - cg.logp_and_grad(z - e, block)[0]) / (2 * h)
            assert grad[j] == pytest.approx(fd, rel=1e-6, abs=1e-6), j


def test_expand_gives_beta_and_tau():
    """The expand callback's (beta, tau) are the PyMC model's at the same point."""
    data = _data("binomial", within=True)
    fam = family_of(data)
    priors = fam.default_priors(data)
    model = fam.form("marginal").build(data, priors=priors)
    for _, beta, tau in _points(model, 3, seed=1):
        z = cg.to_unconstrained(priors, beta, tau)
        out = np.empty(z.size)
        cg._expand(z, _block(data, priors, "marginal"), out)
        np.testing.assert_allclose(out, [*beta, tau], rtol=1e-12)


@pytest.mark.parametrize("link, native", [("logit", True), ("probit", False)])
def test_the_route_each_link_takes(link, native):
    """logit and log: the compiled cfunc model (nutpie ``CompiledPyMCModel``, no PyTensor
    function); probit: PyTensor's Python-calling function (nutpie ``PyFuncModel``)."""
    from nutpie.compile_pymc import CompiledPyMCModel

    data = _data("binomial", within=True, link=link)
    fam = family_of(data)
    compiled = fam.form("marginal").compiled(data, fam.default_priors(data))
    assert isinstance(compiled, CompiledPyMCModel) is native


def test_the_compiled_model_samples_beta_and_tau():
    """A short nutpie run of the compiled model: beta (chain, draw, term) and a positive tau."""
    from varcomp.models.sampling import sample_compiled

    data = _data("poisson", within=False)
    fam = family_of(data)
    compiled = fam.form("sufficient").compiled(data, fam.default_priors(data))
    idata = sample_compiled(compiled, draws=50, tune=50, chains=1, seed=0)
    assert idata.posterior["beta"].shape == (1, 50, 2)
    assert list(idata.posterior["beta"].coords["term"].values) == ["Intercept", "x"]
    assert np.all(idata.posterior["tau"].values > 0)


@pytest.mark.parametrize("kind, link", [("binomial", "logit"), ("poisson", None),
                                        ("binomial", "probit")])
def test_cluster_loglik_equals_the_numpy_rule_per_draw(kind, link):
    """``cluster_loglik`` (numba per draw for logit/log) equals
    :func:`models.quadrature.cluster_logp_draws` (numpy) to 1e-10 at 30 random draws."""
    import xarray as xr

    from varcomp.models.quadrature import cluster_logp_draws

    data = _data(kind, within=True, link=link)
    fam = family_of(data)
    rng = np.random.default_rng(5)
    beta = rng.normal(0, 0.6, (1, 30, 2))
    tau = rng.uniform(0.1, 3.0, (1, 30))
    post = xr.Dataset({"beta": (("chain", "draw", "term"), beta),
                       "tau": (("chain", "draw"), tau)})
    got = integ.cluster_loglik(data, post)
    eta = beta[0] @ data.design.X.T + (data.offset if data.offset is not None else 0.0)
    want = cluster_logp_draws(data.y[:, 0], data.trials, eta, data.design.factors[0].codes,
                              tau[0], fam.likelihood.name, data.link)
    assert got.shape == want.shape == (30, 6)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["binomial", "poisson"])
def test_group_effects_by_numba_equal_the_numpy_draws(kind, monkeypatch):
    """``add_effects`` (numba for logit/log) gives the numpy rule's draws with the same seed
    (:func:`models.quadrature.conditional_draws`, forced by hiding the link from the numba
    table) to 1e-8, over 130 draws (three blocks of the random numbers)."""
    import arviz as az

    from varcomp.models.compiled import glmm_quadrature

    data = _data(kind, within=True)
    rng = np.random.default_rng(2)
    post = {"beta": rng.normal(0, 0.6, (2, 65, 2)), "tau": rng.uniform(0.05, 3.0, (2, 65))}
    post["tau"][0, 3] = 0.0
    idatas = [az.from_dict(posterior=post, dims={"beta": ["term"]}) for _ in range(2)]
    integ.add_effects(idatas[0], data, 11)
    monkeypatch.setattr(glmm_quadrature, "LINK_CODE", {})
    integ.add_effects(idatas[1], data, 11)
    got, want = (i.posterior["group_effect"].values for i in idatas)
    assert got.shape == (2, 65, 6) and np.all(got[0, 3] == 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)


def test_points_outside_the_quadrature_s_range_are_rejected():
    """tau beyond (1e-100, 1e4) or a non-finite beta: log density -inf and a zero gradient
    (nutpie's status 4, the point rejected), never an exception or a garbage value; just inside
    the range the value is finite."""
    data = _data("binomial", within=True)
    priors = family_of(data).default_priors(data)
    block = _block(data, priors, "marginal")
    for z in ([0.0, 0.0, 800.0], [0.0, 0.0, -400.0], [0.0, 0.0, np.log(2e4)],
              [np.inf, 0.0, 0.0], [0.0, np.nan, 0.0]):
        value, grad = cg.logp_and_grad(np.array(z), block)
        assert value == -np.inf and np.all(grad == 0.0)
    assert np.isfinite(cg.logp_and_grad(np.array([0.0, 0.0, np.log(5e3)]), block)[0])
    assert np.isfinite(cg.logp_and_grad(np.array([0.0, 0.0, -200.0]), block)[0])


def test_the_pytensor_route_rejects_the_points_the_compiled_route_rejects():
    """tau far beyond (TAU_MIN, TAU_MAX) gave a MemoryError inside nutpie (a grid of ~1e14
    nodes); the Ops now return -inf there, as the compiled route does, and a finite value inside."""
    import numpy as np

    from varcomp.models.compiled.glmm import TAU_MAX
    from varcomp.models.quadrature_op import RowsLogpOp

    y = np.array([0.0, 1.0, 3.0, 0.0])
    codes = np.array([0, 0, 1, 1])
    op = RowsLogpOp("poisson", "log", 2)
    inputs = [y, np.ones(4), codes]  # (y, trials, codes)
    inside = op.cached([np.zeros(4), 0.7, *inputs])
    assert np.isfinite(inside[0])
    for tau in (7e12, TAU_MAX * 1.01, 0.0):
        total, d_eta, d_tau = op.cached([np.zeros(4), tau, *inputs])
        assert total == -np.inf and d_tau == 0.0 and not d_eta.any()
