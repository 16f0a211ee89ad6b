"""The random-slopes family: every form's density against scipy, estimates, shares, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from varcomp.models.design import from_formula, load_formula
from varcomp.models.errors import DataError
from varcomp.models.forms import family_of

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "reference" / "lmer_slopes.json").read_text())["fits"]
ETA = 2.0


def small(correlated: bool = True, seed: int = 1):
    """12 clusters of 2-6 rows, x uneven: a dense oracle is cheap."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, size=12)
    g = np.repeat([f"c{i:02d}" for i in range(12)], sizes)
    x = rng.normal(2.0, 1.5, size=g.size)
    b0 = rng.normal(0, 1.0, 12)[np.repeat(np.arange(12), sizes)]
    b1 = rng.normal(0, 0.5, 12)[np.repeat(np.arange(12), sizes)]
    y = 3.0 + 0.7 * x + b0 + b1 * x + rng.normal(0, 0.8, g.size)
    bars = "||" if correlated is False else "|"
    return from_formula(pd.DataFrame({"y": y, "x": x, "g": g}), f"y ~ x + (1 + x {bars} g)")


# ---------------------------------------------------------------------------- the oracle
def dense_cov(data, V, sigma):
    """Cov(y) of all rows from the frame's own columns: z_i'Vz_j within a cluster + sigma^2 I."""
    x = data.design.X[:, 1]
    Z = np.stack([np.ones_like(x), x], axis=1)
    same = data.codes[:, None] == data.codes[None, :]
    return same * (Z @ V @ Z.T) + sigma**2 * np.eye(len(x))


def prior_logpdf(priors, beta, tau, rho, sigma):
    """The prior from scipy (independent of SlopesPriors.logpdf): normals, half-t, LKJ = Beta."""
    f = priors.fixed
    alpha = beta[0] + beta[1] * f.x_mean[0]
    out = sps.norm(f.intercept.loc, f.intercept.scale).logpdf(alpha)
    out += sps.norm(f.slopes[0].loc, f.slopes[0].scale).logpdf(beta[1])
    for t, p in zip(tau, priors.tau, strict=True):
        out += np.log(2.0) + sps.t(3, scale=p.scale).logpdf(t)
    out += np.log(2.0) + sps.t(3, scale=f.sigma.scale).logpdf(sigma)
    if rho is not None:  # LKJ(eta) for q = 2: (rho + 1) / 2 ~ Beta(eta, eta)
        out += sps.beta(ETA, ETA).logpdf((rho + 1.0) / 2.0) - np.log(2.0)
    return float(out)


def pymc_lkj_offset(rho):
    """The forms' correlation variable is u = (rho + 1) / 2 (q = 2: the one CPC is rho): its
    density is the LKJ density of rho times |d rho / d u| = 2."""
    return 0.0 if rho is None else np.log(2.0)


def model_logp(model, values):
    """The model's log density (no Jacobian) at constrained ``values`` of its free variables."""
    point = {}
    for rv in model.free_RVs:
        value = model.rvs_to_values[rv]
        tr = model.rvs_to_transforms.get(rv)
        v = np.asarray(values[rv.name], dtype=np.float64)
        if tr is not None:
            import pytensor.tensor as pt

            v = pt.as_tensor(tr.forward(pt.as_tensor(v), *rv.owner.inputs)).eval()
        point[value.name] = v
    return float(model.compile_logp(jacobian=False)(point))


# PyMC's StudentT log density differs from scipy's by ~2e-8 per HalfStudentT term (measured:
# 6.1e-8 for the three here, with or without the LKJ term): 1e-9 relative, not 1e-10.
REL = 1e-9
POINT = {"beta": np.array([2.5, 0.9]), "tau": np.array([0.9, 0.4]), "rho": 0.35, "sigma": 0.7}


def _values(data, priors, point, b=None, centred=True):
    beta, tau, rho, sigma = point["beta"], point["tau"], point["rho"], point["sigma"]
    out = {"alpha": beta[0] + beta[1] * priors.fixed.x_mean[0], "slope": beta[1:], "tau": tau,
           "sigma": sigma}
    if rho is not None:
        out["cpc"] = np.array([(rho + 1.0) / 2.0])
    if b is not None:
        V = priors.V(tau, np.array([rho if rho is not None else 0.0])[:1]
                     if rho is not None else np.zeros(0))
        out["b" if centred else "b_offset"] = b if centred else np.linalg.solve(
            np.linalg.cholesky(V), b.T).T
    return out


@pytest.mark.parametrize("correlated", [True, False])
@pytest.mark.parametrize("form", ["marginal", "sufficient"])
def test_integrated_forms_equal_scipy_mvnormal_of_all_rows(form, correlated):
    data = small(correlated)
    family = family_of(data)
    assert family.name == "slopes"
    priors = family.default_priors(data)
    point = dict(POINT, rho=POINT["rho"] if correlated else None)
    rho = np.array([point["rho"]]) if correlated else np.zeros(0)
    V = priors.V(point["tau"], rho)
    mean = data.design.X @ point["beta"]
    oracle = sps.multivariate_normal(mean, dense_cov(data, V, point["sigma"])).logpdf(
        data.y[:, 0]) + prior_logpdf(priors, point["beta"], point["tau"], point["rho"],
                                     point["sigma"])
    model = family.forms[form].build(data, priors=priors)
    got = model_logp(model, _values(data, priors, point))
    assert got == pytest.approx(oracle + pymc_lkj_offset(point["rho"]), rel=REL)


@pytest.mark.parametrize("form", ["centred", "noncentred"])
def test_latent_forms_equal_scipy(form):
    data = small(True)
    family = family_of(data)
    priors = family.default_priors(data)
    point = POINT
    V = priors.V(point["tau"], np.array([point["rho"]]))
    rng = np.random.default_rng(3)
    b = rng.multivariate_normal(np.zeros(2), V, size=len(data.groups))
    x = data.design.X[:, 1]
    eta = data.design.X @ point["beta"] + b[data.codes, 0] + b[data.codes, 1] * x
    like = sps.norm(eta, point["sigma"]).logpdf(data.y[:, 0]).sum()
    if form == "centred":
        effects = sps.multivariate_normal(np.zeros(2), V).logpdf(b).sum()
    else:  # the offsets z = chol(V)^-1 b are the free variables
        z = np.linalg.solve(np.linalg.cholesky(V), b.T).T
        effects = sps.norm().logpdf(z).sum()
    oracle = like + effects + prior_logpdf(priors, point["beta"], point["tau"], point["rho"],
                                           point["sigma"])
    model = family.forms[form].build(data, priors=priors)
    got = model_logp(model, _values(data, priors, point, b, centred=form == "centred"))
    assert got == pytest.approx(oracle + pymc_lkj_offset(point["rho"]), rel=REL)


def _woodbury(data, chol, sigma, beta):
    import pytensor.tensor as pt

    from varcomp.models.forms.slopes import woodbury_loglik_pt
    from varcomp.models.slopes_model import stats_of

    st = stats_of(data)
    return float(woodbury_loglik_pt(st, pt.as_tensor(beta), pt.as_tensor(chol), sigma,
                                    pt.as_tensor(st.Zty), pt.as_tensor(st.Xty_l),
                                    pt.as_tensor(st.yty_l)).eval())


def test_woodbury_density_and_a_broken_variant():
    """The sufficient form's density equals scipy's; a transposed Cholesky factor fails it."""
    data = small(True)
    priors = family_of(data).default_priors(data)
    V = priors.V(POINT["tau"], np.array([POINT["rho"]]))
    oracle = sps.multivariate_normal(data.design.X @ POINT["beta"],
                                     dense_cov(data, V, POINT["sigma"])).logpdf(data.y[:, 0])
    chol = np.linalg.cholesky(V)
    assert _woodbury(data, chol, POINT["sigma"], POINT["beta"]) == pytest.approx(oracle,
                                                                                 rel=1e-12)
    broken = _woodbury(data, chol.T, POINT["sigma"], POINT["beta"])
    assert abs(broken - oracle) > 1e-3


def test_cluster_loglik_sums_to_scipy_per_cluster():
    import xarray as xr

    data = small(True)
    family = family_of(data)
    post = xr.Dataset({"beta": (("chain", "draw", "term"), POINT["beta"][None, None]),
                       "tau": (("chain", "draw", "factor"), POINT["tau"][None, None]),
                       "rho": (("chain", "draw", "pair"), np.array([[[POINT["rho"]]]])),
                       "sigma": (("chain", "draw"), np.array([[POINT["sigma"]]]))})
    ll = family.cluster_loglik(data, post)
    V = family.default_priors(data).V(POINT["tau"], np.array([POINT["rho"]]))
    cov = dense_cov(data, V, POINT["sigma"])
    mean = data.design.X @ POINT["beta"]
    for c in range(len(data.groups)):
        rows = np.flatnonzero(data.codes == c)
        want = sps.multivariate_normal(mean[rows], cov[np.ix_(rows, rows)]).logpdf(
            data.y[rows, 0])
        assert ll[0, c] == pytest.approx(want, rel=1e-10)


def test_icc_curve_and_vpc_equal_their_definitions_from_the_draws():
    import arviz as az

    from varcomp.models.slopes_model import derive

    data = load_formula("sleepstudy", "Reaction ~ Days + (Days|Subject)")
    rng = np.random.default_rng(0)
    tau = np.abs(rng.normal(20, 5, (2, 50, 2)))
    rho = rng.uniform(-0.9, 0.9, (2, 50, 1))
    sigma = np.abs(rng.normal(25, 2, (2, 50)))
    idata = az.from_dict(posterior={"tau": tau, "rho": rho, "sigma": sigma,
                                    "beta": rng.normal(size=(2, 50, 2))})
    derive(idata, data)
    post = idata.posterior
    x = post["icc_curve"]["x"].values
    assert x.min() == 0 and x.max() == 9
    for j in (0, 7, x.size - 1):
        t2 = (tau[..., 0] ** 2 + 2 * rho[..., 0] * tau[..., 0] * tau[..., 1] * x[j]
              + tau[..., 1] ** 2 * x[j] ** 2)
        np.testing.assert_allclose(post["icc_curve"].values[..., j], t2 / (t2 + sigma**2),
                                   rtol=1e-12)
    days = pd.read_csv(ROOT / "data" / "sleepstudy.csv")["Days"].to_numpy(dtype=float)
    t2 = (tau[..., :1] ** 2 + 2 * rho * tau[..., :1] * tau[..., 1:] * days
          + tau[..., 1:] ** 2 * days**2).mean(axis=-1)
    np.testing.assert_allclose(post["vpc_mean_variance"].values, t2 / (t2 + sigma**2), rtol=1e-12)


@pytest.mark.parametrize("bars", ["|", "||"])
def test_estimates_equal_lme4(bars):
    data = load_formula("sleepstudy", f"Reaction ~ Days + (Days {bars} Subject)")
    name = "sleepstudy" if bars == "|" else "sleepstudy_uncorrelated"
    ref = next(r for r in REFERENCE if r["name"] == name and r["method"] == "reml")
    est = family_of(data).estimates(data)["reml"].as_dict()
    assert est["tau[Subject|Intercept]"] == pytest.approx(ref["sd"][0], rel=1e-4)
    assert est["tau[Subject|Days]"] == pytest.approx(ref["sd"][1], rel=1e-4)
    assert est["sigma"] == pytest.approx(ref["sigma"], rel=1e-4)
    assert est["criterion"] == pytest.approx(ref["criterion"], rel=1e-8)
    if bars == "|":
        assert est["rho[Subject|Intercept,Days]"] == pytest.approx(ref["corr"][0][1], rel=1e-4)


def test_boundary_flagged():
    data = load_formula("slopes_boundary", "y ~ x + (x||g)")
    est = family_of(data).estimates(data)["reml"]
    assert est.as_dict()["boundary"]["tau[g|x]"] and est.boundary


def test_prior_override_by_output_label():
    data = load_formula("sleepstudy", "Reaction ~ Days + (Days|Subject)")
    family = family_of(data)
    p = family.parse_priors(data, ["tau[Subject|Days]=halfstudentt:10", "sigma=halfnormal:50"])
    default = family.default_priors(data)
    assert p.tau[1].scale == 10 and p.tau[0] == default.tau[0]
    assert p.fixed.sigma.family == "halfnormal"
    assert default.tau[1].scale == pytest.approx(default.scale / np.std(
        data.design.random[0].values[:, 1], ddof=1))
    with pytest.raises(DataError, match="no coefficient 'Subject|Age'"):
        family.parse_priors(data, ["tau[Subject|Age]=halfnormal:10"])


BAD = {
    "categorical slope": ("y ~ x + (1 + c|g)", "not a numeric column"),
    "slopes on two factors": ("y ~ x + (1 + x|g) + (1|h)", "several grouping factors"),
    "constant slope column": ("y ~ x + (1 + k|g)", "is constant over the rows"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(case):
    formula, message = BAD[case]
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=60), "x": rng.normal(size=60),
                       "c": np.tile(["a", "b", "c"], 20), "g": np.repeat(list("abcdef"), 10),
                       "h": np.tile(list("uvwxyz"), 10), "k": np.ones(60)})
    with pytest.raises(DataError) as err:
        data = from_formula(df, formula)
        family_of(data).default_priors(data)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("bars", ["|", "||"])
def test_sleepstudy_fit_passes_the_gate_near_reml(bars):
    import varcomp

    res = varcomp.fit("sleepstudy", formula=f"Reaction ~ Days + (Days {bars} Subject)", seed=0,
                      progress=False)
    summary = res.summary_dict
    fit = summary["fits"]["sufficient"]
    assert fit["diagnostics_ok"] and fit["divergences"] == 0
    reml = summary["estimates"]["reml"]
    for name in ("tau[Subject|Intercept]", "tau[Subject|Days]", "sigma"):
        post = fit["params"][name]
        assert post["hdi_low"] < reml[name] < post["hdi_high"]
    assert [r["x"] for r in fit["icc_curve"]] == [0.0, 2.0, 4.5, 7.0, 9.0]
