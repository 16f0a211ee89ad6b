"""The PyTensor Ops of the cluster quadrature: value and gradient inside a PyMC model."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytest

from varcomp.models.quadrature import cluster_logp, cluster_stats, sufficient_logp
from varcomp.models.quadrature_op import RowLogpOp, SufficientLogpOp

FAMILIES = [("binomial", "logit"), ("binomial", "probit"), ("poisson", "log")]


def data(family):
    rng = np.random.default_rng(7)
    L = 12
    codes = np.repeat(np.arange(L), rng.integers(1, 6, L))
    n = rng.integers(1, 5, codes.size).astype(float)
    y = rng.binomial(n.astype(int), 0.3) if family == "binomial" else rng.poisson(1.5, codes.size)
    return y.astype(float), n, codes, L


@pytest.mark.parametrize("family,link", FAMILIES)
def test_sufficient_op_in_model_equals_numpy(family, link):
    y, n, codes, L = data(family)
    stats = cluster_stats(y, n, codes, family, link)
    op = SufficientLogpOp(stats, family, link)
    with pm.Model() as model:
        eta = pm.Flat("eta", shape=L)
        tau = pm.HalfFlat("tau")
        pm.Potential("loglik", op(eta, tau))
    point = {"eta": np.linspace(-1.0, 0.5, L), "tau_log__": np.log(1.3)}
    total, d_tau, d_eta = sufficient_logp(stats, point["eta"], 1.3, family, link, grad=True)
    # Flat and HalfFlat add 0 without the Jacobian: the model's logp is the Potential alone
    assert abs(model.compile_logp(jacobian=False)(point) - total) < 1e-10
    grad = model.compile_dlogp(jacobian=False)(point)  # in (eta, log tau)
    assert np.max(np.abs(grad[:L] - d_eta)) < 1e-10
    assert abs(grad[L] - 1.3 * d_tau) < 1e-10


@pytest.mark.parametrize("family,link", FAMILIES)
def test_row_op_gradient_verifies(family, link):
    y, n, codes, L = data(family)
    op = RowLogpOp(y, n, codes, family, link)
    rng = np.random.default_rng(1)
    eta0 = rng.normal(-0.3, 0.5, codes.size)
    # pytensor's own check: one-sided differences, so eps small (truncation ~ eps f'' / 2)
    pytensor.gradient.verify_grad(
        op, [eta0, np.array(0.8)], rng=rng, eps=1e-7, abs_tol=1e-6, rel_tol=1e-6
    )
    with pm.Model() as model:
        eta = pm.Flat("eta", shape=codes.size)
        tau = pm.HalfFlat("tau")
        pm.Potential("loglik", op(eta, tau))
    point = {"eta": eta0, "tau_log__": np.log(0.8)}
    ref = cluster_logp(y, n, eta0, codes, 0.8, family, link, grad=True)
    assert abs(model.compile_logp(jacobian=False)(point) - ref.logp.sum()) < 1e-10
    grad = model.compile_dlogp(jacobian=False)(point)
    assert np.max(np.abs(grad[:-1] - ref.d_eta)) < 1e-10
    assert abs(grad[-1] - 0.8 * ref.d_tau.sum()) < 1e-10
