"""The GLMM and random-slopes check kits: the quadrature oracle for the integrated GLMM forms
(exercised through a stand-in marginal form until the family's own lands), and PyMC's LKJ
constant in the slopes kit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from varcomp.models.checks import compare_logp
from varcomp.models.checks.kit_glmm import marginal_loglik, row_logpmf
from varcomp.models.checks.oracles import pymc_lkj_offset
from varcomp.models.forms.base import Form


def _stand_in_marginal(data, *, priors=None):
    """A one-factor GLMM with the effects integrated out by the production quadrature Op."""
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.forms import mixed
    from varcomp.models.glmm import GlmmPriors
    from varcomp.models.quadrature_op import RowLogpOp

    priors = priors or GlmmPriors.default(data)
    model, _ = mixed.start(data, priors)
    off = 0.0 if data.offset is None else np.asarray(data.offset, dtype=np.float64)
    op = RowLogpOp(data.y[:, 0], data.trials, data.design.factors[0].codes, data.likelihood,
                   data.link)
    with model:
        beta, tau = priors.create()
        pm.Potential("loglik", op(pt.dot(pt.as_tensor(data.design.X), beta) + off, tau))
    return model


@pytest.mark.parametrize("name", ["binomial", "poisson"])
def test_integrated_glmm_form_equals_the_quad_oracle(name, mixed_data):
    """An integrated form (no effects in the model) is compared with the per-cluster quad
    oracle; the production quadrature's integral agrees to 1e-9 at tau 1e-3..1e1, and the same
    Op fed the wrong tau (tau^2) fails."""
    data = mixed_data(name)
    right = Form("stand_in", "quadrature Op", _stand_in_marginal, lambda d: {})

    def wrong_tau(d, *, priors=None):
        from pytensor.graph.replace import graph_replace

        m = _stand_in_marginal(d, priors=priors)
        import pymc as pm

        with m:
            pm.Potential("error", graph_replace(m["loglik"], {m["tau"]: m["tau"] ** 2})
                         - m["loglik"])
        return m

    res = compare_logp(data, names=[], n_points=4, seed=2,
                       builders={"stand_in": right, "wrong": wrong_tau})
    assert "truth" in res.table and "truth_joint" not in res.table
    assert res.details["max_rel_err"]["stand_in"] <= 1e-9, res.text
    assert res.details["failed"] == ["wrong"]


def test_quad_oracle_equals_a_dense_trapezoid_per_cluster(mixed_data):
    """The oracle's quad integral of each cluster equals a 20,001-point trapezoid over
    z in [-12, 12] (spectrally accurate for this smooth, fast-decaying integrand) to 1e-11."""
    data = mixed_data("binomial")
    f = data.design.factors[0]
    beta, tau = np.array([-0.3, 0.4]), 1.7
    z = np.linspace(-12.0, 12.0, 20_001)
    eta0 = data.design.X @ beta
    total = 0.0
    for g in range(f.m):
        rows = np.flatnonzero(f.codes == g)
        logf = row_logpmf(data, eta0[rows][None, :] + tau * z[:, None], rows).sum(axis=1)
        logf += -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
        top = logf.max()
        total += top + math.log(np.trapezoid(np.exp(logf - top), z))
    got = marginal_loglik(data, {"beta": beta, "tau": np.array([tau])})
    assert got == pytest.approx(total, rel=1e-11)


def test_slopes_kit_accounts_for_pymc_s_lkj_constant():
    """PyMC 5.28's LKJCorr(2, eta = 2) log density is the correct one + 2 log c_2, c_2 =
    2^(2 eta - 1) B(eta, eta) = 4/3 (r's density 3/4 (1 - r^2)): the slopes kit adds exactly
    that to its scipy prior."""
    assert pymc_lkj_offset(2, 2.0) == pytest.approx(2.0 * math.log(4.0 / 3.0), abs=1e-6)
