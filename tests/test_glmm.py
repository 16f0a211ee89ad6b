"""Binomial (Bernoulli) and Poisson GLMMs: densities, PyMC logp against scipy, shares, bad input.

Oracles are independent of the production code: scipy.stats' binomial/Poisson/normal/t log
densities, scipy.integrate.quad for the data-scale ICC.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from varcomp.analyses.cli import main
from varcomp.models import load
from varcomp.models.errors import DataError
from varcomp.models.forms import family_of
from varcomp.models.likelihoods import BINOMIAL, POISSON

ROOT = Path(__file__).resolve().parents[1]


def _load(kind: str, structure: str, **kw):
    df, formula = _frame(kind, structure)
    return df, load(df, formula=formula, family=kind, **kw)


def _frame(kind: str, structure: str, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """Simulated rows of a GLMM: one factor with a covariate, nested, or crossed."""
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(6), 8)
    b = np.tile(np.repeat(np.arange(4), 2), 6)
    x = rng.normal(size=a.size)
    eta = -0.3 + 0.5 * x + rng.normal(0, 0.7, 6)[a] + rng.normal(0, 0.5, 24)[a * 4 + b]
    df = pd.DataFrame({"a": a.astype(str), "b": b.astype(str), "x": x,
                       "n": rng.integers(1, 9, a.size), "expo": rng.uniform(0.5, 2, a.size)})
    if kind == "binomial":
        df["s"] = rng.binomial(df["n"], special.expit(eta))
        lhs = "p(s, n)"
    else:
        df["s"] = rng.poisson(np.exp(eta) * df["expo"])
        lhs = "s"
    rhs = {"one": "x + (1|a)", "nested": "x + (1|a/b)", "crossed": "1 + (1|a) + (1|b)"}[structure]
    off = " + offset(np.log(expo))" if kind == "poisson" else ""
    return df, f"{lhs} ~ {rhs}{off}"


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_binomial_row_logp_equals_scipy(link):
    rng = np.random.default_rng(1)
    n = rng.integers(1, 30, 50).astype(float)
    y = rng.binomial(n.astype(int), 0.3).astype(float)
    eta = rng.normal(0, 3, 50)
    p = special.expit(eta) if link == "logit" else stats.norm.cdf(eta)
    expected = stats.binom.logpmf(y, n, p)
    np.testing.assert_allclose(BINOMIAL.row_logpmf(y, eta, link, n), expected, rtol=1e-10)


def test_poisson_row_logp_equals_scipy():
    rng = np.random.default_rng(2)
    eta = rng.normal(0, 2, 50)
    y = rng.poisson(np.exp(eta)).astype(float)
    np.testing.assert_allclose(POISSON.row_logpmf(y, eta, "log"), stats.poisson.logpmf(y,
                               np.exp(eta)), rtol=1e-10)


def _point(model, values: dict) -> dict:
    """Values of the free variables (original scale) as the model's value variables."""
    import pytensor.tensor as pt

    out = {}
    for rv in model.free_RVs:
        vv = model.rvs_to_values[rv]
        tr = model.rvs_to_transforms.get(rv)
        x = np.asarray(values[rv.name], dtype=np.float64)
        out[vv.name] = tr.forward(pt.as_tensor(x), *rv.owner.inputs).eval() if tr else x
    return out


def _oracle(data, priors, beta, tau, effects, centred: bool, inverse=special.expit) -> float:
    """Sum of scipy's row log pmfs, the effects' normal densities and the priors."""
    X = data.design.X
    eta = X @ beta + (data.offset if data.offset is not None else 0.0)
    total = 0.0
    for d, f in enumerate(data.design.factors):
        u = effects[d]
        eta = eta + u[f.codes]
        total += (stats.norm.logpdf(u, 0, tau[d]).sum() if centred
                  else stats.norm.logpdf(u / tau[d]).sum())
    y = data.y[:, 0]
    if data.trials is not None:
        total += stats.binom.logpmf(y, data.trials, inverse(eta)).sum()
    else:
        total += stats.poisson.logpmf(y, np.exp(eta)).sum()
    slopes = [j for j, t in enumerate(data.design.terms) if t != "Intercept"]
    alpha = beta[0] + sum(beta[j] * X[:, j].mean() for j in slopes)
    total += stats.norm.logpdf(alpha, priors.intercept.loc, 2.5)
    for j in slopes:
        total += stats.norm.logpdf(beta[j], 0, 2.5 / X[:, j].std(ddof=1))
    total += sum(math.log(2) + stats.t.logpdf(t, 3, scale=1.0) for t in tau)
    return float(total)


def _logp_and_oracle(kind, structure, form, inverse=special.expit):
    df, data = _load(kind, structure)
    family = family_of(data)
    priors = family.default_priors(data)
    model = family.form(form).build(data, priors=priors)
    rng = np.random.default_rng(3)
    k, factors = len(data.design.terms), data.design.factors
    beta = rng.normal(0, 0.5, k)
    tau = rng.uniform(0.3, 1.2, len(factors))
    effects = [rng.normal(0, tau[d], f.m) for d, f in enumerate(factors)]
    alpha = beta[0] + sum(beta[j] * data.design.X[:, j].mean() for j in range(1, k))
    values = {"alpha": alpha, "slope": beta[1:],
              "tau": tau[0] if len(factors) == 1 else tau}
    for (name, _), u, t in zip(_effect_names(data), effects, tau, strict=True):
        values[name if form == "centred" else f"{name}_offset"] = u if form == "centred" \
            else u / t
    logp = model.compile_logp(jacobian=False)(_point(model, values))
    return float(logp), _oracle(data, priors, beta, tau, effects, form == "centred", inverse)


@pytest.mark.parametrize("kind", ["binomial", "poisson"])
@pytest.mark.parametrize("structure", ["one", "nested", "crossed"])
@pytest.mark.parametrize("form", ["centred", "noncentred"])
def test_pymc_logp_equals_scipy(kind, structure, form):
    """Exact up to PyMC's float32-rounded constants (< 1e-7 nats per prior term)."""
    logp, expected = _logp_and_oracle(kind, structure, form)
    assert abs(logp - expected) < 1e-6, (logp, expected)


def _effect_names(data):
    from varcomp.models.forms.mixed import effect_names

    return effect_names(data)


def test_a_broken_oracle_fails_the_logp_check():
    """The check is trusted: an oracle with the probit link where the model has logit fails."""
    logp, expected = _logp_and_oracle("binomial", "one", "centred", inverse=stats.norm.cdf)
    assert abs(logp - expected) > 1e-3


def _idata(beta, tau, terms, factors=None):
    import arviz as az

    post = {"beta": beta[None], "tau": tau[None]}
    dims = {"beta": ["term"], "tau": ["factor"] if factors else []}
    coords = {"term": list(terms), **({"factor": factors} if factors else {})}
    return az.from_dict(posterior=post, dims=dims, coords=coords)


def test_latent_and_data_scale_icc_per_draw_equal_their_definitions():
    from varcomp.models.glmm import add_derived, likelihood_of

    df, formula = _frame("binomial", "one")
    data = load(df, formula=formula)
    rng = np.random.default_rng(4)
    beta, tau = rng.normal(0, 0.5, (5, 2)), rng.uniform(0.2, 2.5, 5)
    idata = _idata(beta, tau, data.design.terms)
    add_derived(idata, data, likelihood_of(data))
    icc = idata.posterior["icc"].values[0]
    np.testing.assert_allclose(icc, tau**2 / (tau**2 + np.pi**2 / 3), rtol=1e-13)
    eta0 = beta @ data.design.X.mean(axis=0)
    for s in range(3):
        def moment(k, s=s):
            return integrate.quad(lambda u: special.expit(eta0[s] + u) ** k
                                  * stats.norm.pdf(u, 0, tau[s]), -np.inf, np.inf,
                                  epsabs=1e-14, epsrel=1e-12)[0]
        m1, m2 = moment(1), moment(2)
        expected = (m2 - m1 * m1) / ((m2 - m1 * m1) + (m1 - m2))
        assert idata.posterior["icc_data"].values[0, s] == pytest.approx(expected, rel=1e-9)


def test_poisson_shares_per_draw():
    from varcomp.models.glmm import add_derived, likelihood_of

    df, data = _load("poisson", "one")
    rng = np.random.default_rng(5)
    beta, tau = rng.normal(0, 0.5, (4, 2)), rng.uniform(0.2, 1.5, 4)
    idata = _idata(beta, tau, data.design.terms)
    add_derived(idata, data, likelihood_of(data))
    eta0 = beta @ data.design.X.mean(axis=0) + np.log(df["expo"]).mean()
    lam = np.exp(eta0 + tau**2 / 2)
    post = idata.posterior
    np.testing.assert_allclose(post["icc"].values[0], tau**2 / (tau**2 + np.log1p(1 / lam)),
                               rtol=1e-12)
    np.testing.assert_allclose(post["icc_trigamma"].values[0],
                               tau**2 / (tau**2 + special.polygamma(1, lam)), rtol=1e-12)
    for s in range(2):  # the data scale: Var(lambda) / (Var(lambda) + E lambda), by quad
        def moment(k, s=s):
            return integrate.quad(lambda u: np.exp(k * (eta0[s] + u))
                                  * stats.norm.pdf(u, 0, tau[s]), -15 * tau[s], 15 * tau[s],
                                  epsabs=0, epsrel=1e-12)[0]
        m1, m2 = moment(1), moment(2)
        assert post["icc_data"].values[0, s] == pytest.approx((m2 - m1**2) / (m2 - m1**2 + m1),
                                                              rel=1e-9)


def test_vpc_of_several_factors_sums_to_one():
    from varcomp.models.glmm import add_derived, likelihood_of

    df, formula = _frame("binomial", "crossed")
    data = load(df, formula=formula)
    tau = np.array([[0.5, 1.0], [0.8, 0.3]])
    idata = _idata(np.zeros((2, 1)), tau, data.design.terms, ["a", "b"])
    add_derived(idata, data, likelihood_of(data))
    vpc = idata.posterior["vpc"].values[0]
    np.testing.assert_allclose(vpc.sum(axis=-1), 1.0)
    np.testing.assert_allclose(vpc[:, 0], tau[:, 0] ** 2 / ((tau**2).sum(1) + np.pi**2 / 3))


def test_responses_bernoulli_text_event_and_oneway_mapping():
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"g": np.repeat(list("abcdef"), 6),
                       "y": rng.choice(["no", "yes"], 36)})
    data = load(df, group="g", response="y", family="bernoulli")
    assert data.design.formula == "y ~ 1 + (1|g)" and data.likelihood == "binomial"
    np.testing.assert_array_equal(data.y[:, 0], (df["y"] == "yes").to_numpy(float))
    assert any("'yes'" in w for w in data.warnings)
    flipped = load(df, group="g", response="y", family="bernoulli", event="no")
    np.testing.assert_array_equal(flipped.y[:, 0], 1 - data.y[:, 0])
    assert family_of(data).name == "binomial" and family_of(data).scalar_tau


def _bad_frames():
    rng = np.random.default_rng(7)
    g = np.repeat(list("abcdef"), 4)
    n = rng.integers(2, 6, g.size)
    s = rng.binomial(n, 0.4)
    base = pd.DataFrame({"g": g, "s": s, "n": n, "c": rng.poisson(2, g.size)})
    return {
        "non-integer count": (base.assign(c=base["c"] + 0.5), "c ~ 1 + (1|g)", "poisson",
                              None, "non-negative integers"),
        "negative count": (base.assign(c=-base["c"] - 1), "c ~ 1 + (1|g)", "poisson", None,
                           "non-negative integers"),
        "successes above trials": (base.assign(s=base["n"] + 1), "p(s, n) ~ 1 + (1|g)", None,
                                   None, "exceed trials"),
        "trials of 0": (base.assign(n=0, s=0), "p(s, n) ~ 1 + (1|g)", None, None, "is 0"),
        "three levels": (base.assign(y=np.tile(["a", "b", "c"], 8)), "y ~ 1 + (1|g)",
                         "bernoulli", None, "has 3 levels"),
        "all-zero or all-one clusters": (base.assign(y=(base["g"] < "d").astype(int)),
                                         "y ~ 1 + (1|g)", "bernoulli", None,
                                         "rest on the prior alone"),
        "probit with poisson": (base, "c ~ 1 + (1|g)", "poisson", "probit",
                                "does not go with --family poisson"),
        "p() with poisson": (base, "p(s, n) ~ 1 + (1|g)", "poisson", None,
                             "takes --family binomial"),
    }


BAD = _bad_frames()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_glm_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    df, formula, family, link, words = BAD[case]
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load(df, formula=formula, family=family, link=link)
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "out"
    argv = ["fit", str(path), "--formula", formula, "--out", str(out)]
    argv += ["--family", family] if family else []
    argv += ["--link", link] if link else []
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and words in err, err
    assert not out.exists()


@pytest.mark.slow
def test_cbpp_fits_end_to_end_with_the_gate_passing(tmp_path, capsys):
    import json

    out = tmp_path / "cbpp"
    code = main(["fit", str(ROOT / "data" / "cbpp.csv"), "--formula",
                 "p(incidence, size) ~ C(period) + (1|herd)", "--out", str(out), "--seed", "1"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    fit = summary["fits"]["noncentred"]
    assert fit["diagnostics_ok"]
    # lme4 glmer (Laplace) on cbpp: tau 0.642, intercept -1.398; the posterior is near
    assert 0.3 < fit["params"]["tau"]["mean"] < 1.1
    assert -1.9 < fit["params"]["beta[Intercept]"]["mean"] < -0.9
    html = (out / "report.html").read_text()
    assert "energy and tau-sigma pair plot" not in html and "with sigma (" not in html
    assert "ICC (data scale)" in html and "Shares of variance" in html


def test_compare_of_a_binomial_formula_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    try:
        code = main(["compare", str(ROOT / "data" / "cbpp.csv"), "--formula",
                     "p(incidence, size) ~ 1 + (1|herd)", "--out", str(out)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "are Gaussian" in err, err
    assert not out.exists()


def test_the_data_icc_rule_is_the_normal_gauss_hermite_rule():
    """``shares.normal_rule``: numpy's hermegauss nodes with weights normalised to 1 (to 1e-13),
    exact for E[u^2] = 1, E[u^4] = 3, E[u^6] = 15 under N(0, 1); cached and read-only."""
    from varcomp.models.shares import DATA_ICC_NODES, normal_rule

    x, w = normal_rule(DATA_ICC_NODES)
    xe, we = np.polynomial.hermite_e.hermegauss(DATA_ICC_NODES)
    np.testing.assert_allclose(x, xe, rtol=0, atol=1e-13)
    np.testing.assert_allclose(w, we / we.sum(), rtol=1e-11, atol=1e-16)
    for k, m in ((0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0)):
        assert float(w @ x**k) == pytest.approx(m, rel=1e-12)
    assert normal_rule(DATA_ICC_NODES) is normal_rule(DATA_ICC_NODES)
    assert not x.flags.writeable and not w.flags.writeable
