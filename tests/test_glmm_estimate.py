"""GLMM maximum likelihood against lme4's glmer (tests/reference/glmer.json; R is not needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from varcomp.models.glmm_estimate import fit_glmm, laplace_loglik, saturated_loglik
from varcomp.models.quadrature import cluster_logp

ROOT = Path(__file__).resolve().parents[1]
REF = json.loads((ROOT / "tests" / "reference" / "glmer.json").read_text())["models"]


def codes(s):
    return pd.factorize(s, sort=True)[0]


def case(name):
    cb = pd.read_csv(ROOT / "data" / "cbpp.csv")
    gt = pd.read_csv(ROOT / "data" / "grouseticks.csv")
    xp = np.column_stack([np.ones(len(cb))] + [(cb.period == k).astype(float) for k in (2, 3, 4)])
    one_cb, one_gt = np.ones((len(cb), 1)), np.ones((len(gt), 1))
    return {
        "cbpp_period": (cb.incidence, cb["size"], xp, [codes(cb.herd)], "binomial", "logit"),
        "cbpp_oneway": (cb.incidence, cb["size"], one_cb, [codes(cb.herd)], "binomial", "logit"),
        "cbpp_probit": (cb.incidence, cb["size"], xp, [codes(cb.herd)], "binomial", "probit"),
        "grouse_oneway": (gt.TICKS, None, one_gt, [codes(gt.BROOD)], "poisson", "log"),
    }[name]


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b) / np.abs(b)))


@pytest.mark.parametrize("name", ["cbpp_period", "cbpp_oneway", "cbpp_probit", "grouse_oneway"])
def test_agq25_equals_glmer(name):
    y, n, X, f, fam, link = case(name)
    ref = REF[name]["agq25"]
    e = fit_glmm(y, n, X, None, f, fam, link, nagq=25)
    assert e.converged and not e.at_boundary
    assert rel(e.beta, np.array(list(ref["beta"].values()))) < 1e-3
    assert rel(e.tau, np.array(list(ref["sds"].values()))) < 1e-3
    # lme4's nAGQ > 1 logLik leaves out the saturated model's log-likelihood
    assert abs(e.loglik - saturated_loglik(y, n, fam, link) - ref["logLik"]) < 1e-5


@pytest.mark.parametrize("name", ["cbpp_period", "cbpp_oneway", "cbpp_probit"])
def test_laplace_equals_glmer(name):
    y, n, X, f, fam, link = case(name)
    ref = REF[name]["laplace"]
    e = fit_glmm(y, n, X, None, f, fam, link, nagq=1)
    assert e.converged
    assert rel(e.beta, np.array(list(ref["beta"].values()))) < 1e-3
    assert rel(e.tau, np.array(list(ref["sds"].values()))) < 1e-3


@pytest.mark.parametrize("name", ["cbpp_period", "grouse_oneway"])
def test_laplace_equals_quadrature_with_one_node(name):
    """Two independent codes (dense PIRLS over all factors; per-cluster Newton + K = 1) agree."""
    y, n, X, f, fam, link = case(name)
    ref = REF[name]["laplace"]
    beta, tau = np.array(list(ref["beta"].values())), np.array(list(ref["sds"].values()))
    a = laplace_loglik(beta, tau, y, n, X, None, f, fam, link)[0]
    b = cluster_logp(y, n, X @ beta, f[0], tau[0], fam, link, 1).logp.sum()
    assert abs(a - b) < 1e-9
