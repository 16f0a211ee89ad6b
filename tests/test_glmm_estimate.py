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
    va = pd.read_csv(ROOT / "data" / "verbagg.csv")
    xg = np.column_stack([np.ones(len(gt))] + [(gt.YEAR == k).astype(float) for k in (96, 97)])
    xv = np.column_stack(
        [np.ones(len(va)), va.Anger, va.Gender == "M", va.btype == "scold", va.btype == "shout"]
        + [va.situ == "self"]
    ).astype(float)
    xp = np.column_stack([np.ones(len(cb))] + [(cb.period == k).astype(float) for k in (2, 3, 4)])
    one_cb, one_gt = np.ones((len(cb), 1)), np.ones((len(gt), 1))
    return {
        "cbpp_period": (cb.incidence, cb["size"], xp, [codes(cb.herd)], "binomial", "logit"),
        "cbpp_oneway": (cb.incidence, cb["size"], one_cb, [codes(cb.herd)], "binomial", "logit"),
        "cbpp_probit": (cb.incidence, cb["size"], xp, [codes(cb.herd)], "binomial", "probit"),
        "grouse_oneway": (gt.TICKS, None, one_gt, [codes(gt.BROOD)], "poisson", "log"),
        "grouse_two": (gt.TICKS, None, xg, [codes(gt.BROOD), codes(gt.LOCATION)], "poisson", "log"),
        "verbagg_crossed": (
            (va.r2 == "Y").astype(float),
            None,
            xv,
            [codes(va.id), codes(va.item)],
            "binomial",
            "logit",
        ),
    }[name]


def ref_params(name, fit="laplace"):
    ref = REF[name][fit]
    return np.array(list(ref["beta"].values())), np.array(list(ref["sds"].values()))


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


LAPLACE = ["cbpp_period", "cbpp_oneway", "cbpp_probit", "grouse_oneway", "grouse_two"]


def check_laplace_fit(name):
    y, n, X, f, fam, link = case(name)
    beta, sds = ref_params(name)
    e = fit_glmm(y, n, X, None, f, fam, link, nagq=1)
    assert e.converged
    assert rel(e.beta, beta) < 1e-3
    assert rel(e.tau, sds) < 1e-3
    # the maximum, not merely near it: at least glmer's log-likelihood
    assert e.loglik > REF[name]["laplace"]["logLik"] - 1e-7


@pytest.mark.parametrize("name", LAPLACE)
def test_laplace_equals_glmer(name):
    check_laplace_fit(name)


@pytest.mark.slow
def test_laplace_equals_glmer_verbagg_crossed():
    """7,584 rows, 316 subjects x 24 items crossed (~10 s)."""
    check_laplace_fit("verbagg_crossed")


@pytest.mark.parametrize("name", LAPLACE + ["verbagg_crossed"])
def test_laplace_loglik_equals_glmer_at_its_estimates(name):
    """lme4's Laplace is the textbook one once its PIRLS converges (glmer tolPwrss = 1e-12).

    At lme4's default tolPwrss = 1e-7 glmer's value differs (grouseticks: -1037.9477 against
    -1037.9399 at the same estimates): log|L|^2 comes from the weights at the start of PIRLS' last
    iteration. The committed reference is the converged one. Tolerance 1e-8 relative: glmer's own
    stopping rule (relative change of the penalised deviance < tolPwrss, a quadratic near the mode)
    leaves its mode ~sqrt(1e-12) short, which moves its log|L|^2 by ~1e-6 on grouseticks.
    """
    y, n, X, f, fam, link = case(name)
    beta, sds = ref_params(name)
    ll = laplace_loglik(beta, sds, y, n, X, None, f, fam, link)[0]
    assert abs(ll - REF[name]["laplace"]["logLik"]) < 1e-8 * abs(REF[name]["laplace"]["logLik"])


@pytest.mark.parametrize("name", ["cbpp_period", "grouse_oneway"])
def test_laplace_equals_quadrature_with_one_node(name):
    """Two independent codes (dense PIRLS over all factors; per-cluster Newton + K = 1) agree."""
    y, n, X, f, fam, link = case(name)
    beta, tau = ref_params(name)
    a = laplace_loglik(beta, tau, y, n, X, None, f, fam, link)[0]
    b = cluster_logp(y, n, X @ beta, f[0], tau[0], fam, link, 1).logp.sum()
    assert abs(a - b) < 1e-9


def test_the_family_estimates_are_glmer_s_laplace_and_agq25():
    """``Family.estimates`` of a formula fit (what summary.json and the report show beside the
    posterior): Laplace and nAGQ = 25 equal to glmer's to 1e-3 relative in beta and tau, with
    the deviance -2 logLik and the latent ICC tau^2 / (tau^2 + pi^2/3) at the estimates."""
    from varcomp.models.design import from_formula
    from varcomp.models.forms import family_of

    frame = pd.read_csv(ROOT / "data" / "cbpp.csv")
    data = from_formula(frame, "p(incidence, size) ~ C(period) + (1|herd)", family="binomial")
    ests = family_of(data).estimates(data)
    assert list(ests) == ["laplace", "agq25"]
    for key in ests:
        d = ests[key].as_dict()
        ref = REF["cbpp_period"][key]
        assert rel(list(d["beta"].values()), np.array(list(ref["beta"].values()))) < 1e-3
        assert d["tau"] == pytest.approx(ref["sds"]["herd"], rel=1e-3)
        assert d["icc"] == pytest.approx(d["tau"] ** 2 / (d["tau"] ** 2 + np.pi**2 / 3))
        assert d["boundary"] is False and d["converged"] is True
    lap = ests["laplace"].as_dict()
    assert lap["criterion"] == pytest.approx(-2 * REF["cbpp_period"]["laplace"]["logLik"],
                                             rel=1e-6)
