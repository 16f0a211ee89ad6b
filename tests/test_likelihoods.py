"""models.likelihoods: the Gaussian record against independent definitions, every family carries
it, and the shares and the report read the residual through it (a stand-in likelihood changes
what they show)."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from varcomp.models.forms import FAMILY_MODULES, family_named
from varcomp.models.likelihoods import GAUSSIAN, LIKELIHOODS
from varcomp.models.priors import Priors

DIMS = ("chain", "draw")


def test_registry_and_every_family_has_its_likelihood():
    assert set(LIKELIHOODS) == {"gaussian", "binomial", "poisson"}
    assert GAUSSIAN.params == ("sigma",) and GAUSSIAN.residual_sd == "sigma"
    for name in FAMILY_MODULES:  # the GLMM families are named by their likelihood
        want = LIKELIHOODS.get(name.removesuffix("_multilevel"), GAUSSIAN)
        assert family_named(name).likelihood is want, name
    for lik in (LIKELIHOODS["binomial"], LIKELIHOODS["poisson"]):
        assert lik.residual_sd is None and lik.params == ()


def test_residual_variance_is_sigma_squared_for_draws_and_estimates():
    sigma = np.random.default_rng(0).gamma(2.0, size=(2, 5))
    post = xr.Dataset({"sigma": (DIMS, sigma)})
    np.testing.assert_array_equal(GAUSSIAN.residual_variance(post).values, sigma * sigma)
    assert GAUSSIAN.residual_variance({"sigma": 1.5}) == 2.25


@pytest.mark.parametrize(("center", "sd", "want"), [(3.0, 2.0, 2.0), (-4.0, 0.0, 4.0),
                                                    (0.0, 0.0, 1.0), (5.0, math.nan, 5.0)])
def test_prior_scale_is_sd_or_the_size_of_the_mean(center, sd, want):
    assert GAUSSIAN.prior_scale(center, sd) == want


def test_default_priors_take_the_likelihood_s_scale():
    """A response that does not vary: every default prior scales with |mean(y)|."""
    from varcomp.models.data import ClusteredData

    frame = pd.DataFrame({"g": ["a", "a", "b", "b"], "y": [-7.0] * 4})
    data = ClusteredData.from_frame(frame, response="y", group="g")
    p = Priors.default(data)
    assert p.scale == 7.0 and p.tau.scale == 7.0 and p.mu.scale == 17.5


def test_cluster_logp_is_the_cluster_s_multivariate_normal():
    """Integrated out: rows of a cluster ~ N(mu 1, sigma^2 I + tau^2 J)."""
    rng = np.random.default_rng(3)
    mu, tau, sigma = 0.4, 1.3, 0.8
    for n in (1, 2, 5):
        y = rng.normal(size=n)
        want = stats.multivariate_normal(np.full(n, mu),
                                         sigma**2 * np.eye(n) + tau**2).logpdf(y)
        ss = float(((y - y.mean()) ** 2).sum())
        got = GAUSSIAN.cluster_logp(np.array([n], float), np.array([y.mean()]), np.array([ss]),
                                    mu, tau, sigma)
        assert float(np.sum(got)) == pytest.approx(float(want), rel=1e-12)


def test_replicate_is_mean_plus_sigma_z():
    mean = np.arange(12.0).reshape(3, 4)
    sigma = np.array([0.5, 1.0, 2.0])
    got = GAUSSIAN.replicate(mean, {"sigma": sigma}, np.random.default_rng(9))
    z = np.random.default_rng(9).standard_normal((3, 4))
    np.testing.assert_array_equal(got, mean + sigma[:, None] * z)


# a stand-in response distribution: logistic latent scale, variance pi^2/3, no sd parameter
LATENT = replace(GAUSSIAN, name="latent", params=(), residual_sd=None,
                 residual_variance=lambda post: math.pi**2 / 3)


def test_shares_use_the_likelihood_s_residual_variance():
    from varcomp.models.design import from_formula
    from varcomp.models.lmm import add_derived

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(list("abcde"), 3), "x": rng.normal(size=15)})
    df["y"] = df.x + rng.normal(size=15)
    data = from_formula(df, "y ~ x + (1|g)")
    post = xr.Dataset({"beta": (("chain", "draw", "term"), rng.normal(size=(2, 3, 2))),
                       "tau": (DIMS, rng.gamma(2.0, size=(2, 3))),
                       "sigma": (DIMS, rng.gamma(2.0, size=(2, 3)))})
    add_derived(SimpleNamespace(posterior=post), data, LATENT)
    t2 = post["tau"].values ** 2
    np.testing.assert_allclose(post["icc"].values, t2 / (t2 + math.pi**2 / 3), rtol=1e-15)


def test_the_report_reads_the_residual_through_the_likelihood():
    """The components table's residual row and the tau-sigma pair plots come from
    ``likelihood.residual_sd``; a likelihood without one shows neither."""
    from varcomp.analyses.report.compute import sampler
    from varcomp.analyses.report.mixed import components

    rng = np.random.default_rng(2)
    post = xr.Dataset({
        "tau": xr.DataArray(rng.gamma(2.0, size=(2, 8, 2)), dims=(*DIMS, "factor"),
                            coords={"factor": ["a", "b"]}),
        "sigma": (DIMS, rng.gamma(2.0, size=(2, 8))),
        "vpc": xr.DataArray(rng.dirichlet([1, 1, 1], size=(2, 8)), dims=(*DIMS, "component"),
                            coords={"component": ["a", "b", "residual"]})})
    idata = SimpleNamespace(sample_stats=None)
    rows = components(post, {}, {}, GAUSSIAN)["rows"]
    assert [r["component"] for r in rows] == ["a", "b", "residual"]
    assert rows[-1]["sd_label"] == "sigma"
    assert [r["component"] for r in components(post, {}, {}, LATENT)["rows"]] == ["a", "b"]
    assert [p["y_label"] for p in sampler(idata, post, GAUSSIAN)["pairs"]] == ["sigma", "sigma"]
    assert sampler(idata, post, LATENT)["pairs"] == []


def _as_sigma(post):
    return {"sigma": post["phi"]}


RENAMED = replace(
    GAUSSIAN, name="renamed", params=("phi",), residual_sd="phi",
    residual_variance=lambda post: post["phi"] ** 2,
    replicate=lambda mean, post, rng: GAUSSIAN.replicate(mean, _as_sigma(post), rng),
    replicate_stats=lambda mean, n, post, rng: GAUSSIAN.replicate_stats(mean, n, _as_sigma(post),
                                                                        rng),
    row_logp=lambda y, mean, post: GAUSSIAN.row_logp(y, mean, _as_sigma(post)))
"""The Gaussian likelihood with its parameter called ``phi``: whatever reads ``sigma`` other
than through the likelihood record fails (KeyError) or differs."""


def _rename(post):
    return post.rename({"sigma": "phi"})


def test_predictive_checks_and_pointwise_read_sigma_only_through_the_likelihood():
    """ppc, ppc_design, the one-way, nested, crossed and conditional log densities and the
    shares give exactly the Gaussian results when the posterior's sigma is called phi and the
    likelihood says so; with the Gaussian record the renamed posterior is refused (KeyError)."""
    from varcomp.analyses.report.effects import ppc, ppc_design
    from varcomp.models import pointwise
    from varcomp.models.design import from_formula
    from varcomp.models.lmm import add_derived

    rng = np.random.default_rng(5)
    g = np.repeat([f"g{i}" for i in range(6)], 4)
    df = pd.DataFrame({"g": g, "h": np.tile(list("abcd"), 6), "x": rng.normal(size=g.size)})
    df["y"] = df.x + np.repeat(rng.normal(size=6), 4) + rng.normal(size=g.size)

    def post_of(k: int, n_f: int, effects=()):
        shape = (2, 5)
        out = {"beta": (("chain", "draw", "term"), rng.normal(size=(*shape, k))),
               "mu": (DIMS, rng.normal(size=shape)), "sigma": (DIMS, rng.gamma(2.0, size=shape))}
        tau = rng.gamma(2.0, size=(*shape, n_f))
        out["tau"] = (xr.DataArray(tau, dims=(*DIMS, "factor"),
                                   coords={"factor": ["g", "h"][:n_f]}) if n_f > 1
                      else (DIMS, tau[..., 0]))
        for name, m in effects:
            out[name] = (("chain", "draw", name + "_level"), rng.normal(size=(*shape, m)))
        return xr.Dataset(out)

    one = from_formula(df, "y ~ 1 + (1|g)")
    post = post_of(1, 1)
    want = pointwise.oneway_loglik(one, post)
    np.testing.assert_array_equal(pointwise.oneway_loglik(one, _rename(post), RENAMED), want)
    with pytest.raises(KeyError):
        pointwise.oneway_loglik(one, _rename(post))
    np.testing.assert_equal(ppc(_rename(post), one, [None], RENAMED, 3),
                            ppc(post, one, [None], GAUSSIAN, 3))

    reg = from_formula(df, "y ~ x + (1|g)")
    post = post_of(2, 1)
    np.testing.assert_array_equal(pointwise.mixed_loglik(reg, _rename(post), RENAMED),
                                  pointwise.mixed_loglik(reg, post))
    np.testing.assert_equal(ppc_design(_rename(post), reg, RENAMED, 4),
                            ppc_design(post, reg, GAUSSIAN, 4))
    renamed = _rename(post)
    add_derived(SimpleNamespace(posterior=post), reg, GAUSSIAN)
    add_derived(SimpleNamespace(posterior=renamed), reg, RENAMED)
    np.testing.assert_array_equal(renamed["icc"].values, post["icc"].values)

    crossed = from_formula(df, "y ~ x + (1|g) + (1|h)")
    post = post_of(2, 2, [("u_g", 6), ("u_h", 4)])
    np.testing.assert_allclose(pointwise.crossed_loglik(crossed, _rename(post), RENAMED),
                               pointwise.crossed_loglik(crossed, post), rtol=1e-15)
    np.testing.assert_array_equal(
        pointwise.conditional_loglik(crossed, _rename(post), ["u_g", "u_h"], RENAMED),
        pointwise.conditional_loglik(crossed, post, ["u_g", "u_h"]))
