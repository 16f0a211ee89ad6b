"""The slopes family's compiled sufficient route against PyMC's sufficient form and differences.

The compiled coordinates (CPCs through tanh for the correlations, log(tau / scale)) are not
PyMC's, so the density is compared on the constrained space: compiled logp minus the log
Jacobian of its own expand map (central differences of ``expand``, an independent route) must
equal a numpy oracle on the constrained space (``SlopesPriors.logpdf``, whose LKJ is
det(R)^(eta - 1) / c_q by slogdet, plus the Woodbury density of ``slopes_estimate``), constants
included; and PyMC's sufficient form, at the same points in its coordinates, up to one constant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varcomp.models.compiled import slopes as cs
from varcomp.models.design import from_formula
from varcomp.models.forms import family_of
from varcomp.models.slopes_model import stats_of


def frame(seed: int = 1, clusters: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 8, size=clusters)
    codes = np.repeat(np.arange(clusters), sizes)
    x = rng.normal(2.0, 1.5, size=codes.size)
    w = rng.normal(0.0, 1.0, size=codes.size)
    b = rng.normal(0, [1.0, 0.5, 0.3], size=(clusters, 3))[codes]
    y = 3.0 + 0.7 * x - 0.2 * w + b[:, 0] + b[:, 1] * x + b[:, 2] * w + rng.normal(0, 0.8,
                                                                                     codes.size)
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": [f"c{c:02d}" for c in codes]})


CASES = {
    "q2": "y ~ x + (1 + x | g)",
    "diag": "y ~ x + (1 + x || g)",
    "q3": "y ~ x + w + (1 + x + w | g)",
    "two_blocks": "y ~ x + w + (1 + x | g) + (0 + w | g)",
    "no_intercept": "y ~ 0 + x + (0 + x + w | g)",
}


def setup(case: str):
    data = from_formula(frame(), CASES[case])
    family = family_of(data)
    assert family.name == "slopes"
    priors = family.default_priors(data)
    return data, family, priors, cs.parameter_block(priors, stats_of(data))


def split(priors, x: np.ndarray):
    """Expanded values -> (beta, tau, rho, sigma)."""
    k, q, P = len(priors.fixed.terms), priors.layout.q, len(priors.layout.pairs)
    return x[:k], x[k:k + q], x[k + q:k + q + P], x[-1]


def oracle_density(data, priors):
    """log prior (numpy, LKJ by slogdet) + log p(y | beta, V, sigma) (Woodbury, numpy)."""
    from varcomp.models.slopes_estimate import log_density

    st = stats_of(data)

    def density(x):
        beta, tau, rho, sigma = split(priors, x)
        return (float(priors.logpdf(beta, tau, rho, sigma))
                + log_density(st, beta, priors.V(tau, rho), sigma))

    return density


def pymc_point(model, priors, z: np.ndarray) -> dict[str, np.ndarray]:
    """The PyMC form's unconstrained point at the compiled coordinates ``z``.

    beta's coordinates and log(sigma / sd(y)) are the same; tau_log__ = z_tau + log(scale);
    the Beta CPC's logodds = log(u / (1 - u)) = 2 atanh(w) = 2 z_c.
    """
    f, lay = priors.fixed, priors.layout
    k, q = len(f.terms), lay.q
    zc = z[k + q + 1:]
    sizes = [len(b) * (len(b) - 1) // 2 for b in lay.blocks if len(b) > 1]
    cuts = np.cumsum([0, *sizes])
    out = {}
    for rv in model.free_RVs:
        name = model.rvs_to_values[rv].name
        if rv.name == "alpha":
            out[name] = z[f.intercept_index]
        elif rv.name == "slope":
            out[name] = z[list(f.slope_index)]
        elif rv.name == "tau":
            out[name] = z[k:k + q] + np.log([p.scale for p in priors.tau])
        elif rv.name == "sigma":
            out[name] = z[k + q]
        else:
            i = 0 if rv.name == "cpc" else int(rv.name.split("_")[1])
            out[name] = 2.0 * zc[cuts[i]:cuts[i + 1]]
    return out


def log_jacobian(z: np.ndarray, block: np.ndarray, h: float = 1e-5) -> float:
    """log |det d expand / dz| by central differences."""
    J = np.stack([(cs.expand(z + e, block) - cs.expand(z - e, block)) / (2 * h)
                  for e in np.eye(z.size) * h], axis=1)
    return float(np.linalg.slogdet(J)[1])


def points(n: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, dim) for _ in range(n)]


def offsets(case: str, kernel=cs.logp_and_grad, block_edit=None) -> np.ndarray:
    """Compiled logp - log|J| of its expand map - the numpy oracle, at 5 random points."""
    data, _, priors, block = setup(case)
    if block_edit is not None:
        block = block_edit(block.copy())
    density = oracle_density(data, priors)
    return np.array([kernel(z, block)[0] - log_jacobian(z, block)
                     - density(cs.expand(z, block)) for z in points(5, cs.n_dim(priors))])


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_density_equals_the_numpy_oracle(case):
    """Constants included: the LKJ's (correct), the priors', every Jacobian's."""
    assert np.abs(offsets(case)).max() < 1e-7


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_density_equals_pymc_form_up_to_one_constant(case):
    """PyMC's sufficient form (its own graph and transforms) at the same points: the
    coordinates differ by a shift and a factor 2 (constant Jacobian)."""
    data, family, priors, block = setup(case)
    model = family.forms["sufficient"].build(data, priors=priors)
    fn = model.compile_logp()
    d = np.array([cs.logp_and_grad(z, block)[0] - float(fn(pymc_point(model, priors, z)))
                  for z in points(5, cs.n_dim(priors))])
    assert np.ptp(d) < 1e-8


def test_a_dropped_jacobian_or_a_wrong_eta_fails():
    def no_tanh_jacobian(z, block):
        value, grad = cs.logp_and_grad(z, block)
        zc = z[-1:]  # q2: one CPC, the last coordinate
        return value - np.log1p(-np.tanh(zc) ** 2).sum(), grad

    assert np.abs(offsets("q2", kernel=no_tanh_jacobian)).max() > 1e-3

    def wrong_eta(block):
        block[cs.LAYOUT.index("eta")] += 1.0
        return block

    assert np.abs(offsets("q3", block_edit=wrong_eta)).max() > 1e-3

    def no_tau_jacobian(z, block):
        value, grad = cs.logp_and_grad(z, block)
        return value - z[2:4].sum(), grad

    assert np.abs(offsets("diag", kernel=no_tau_jacobian)).max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("spread", [1.0, 4.0])
def test_gradient_equals_central_differences(case, spread):
    _, _, priors, block = setup(case)
    dim = cs.n_dim(priors)
    lead = len(priors.fixed.terms) + priors.layout.q + 1
    for z in points(3, dim, seed=int(spread)):
        z[lead:] *= spread  # spread 4: correlations near +-1 (|rho| up to 0.9999)
        value, grad = cs.logp_and_grad(z, block)
        assert np.isfinite(value)
        h = 1e-6
        fd = np.array([(cs.logp_and_grad(z + e, block)[0] - cs.logp_and_grad(z - e, block)[0])
                       / (2 * h) for e in np.eye(dim) * h])
        assert np.abs(fd - grad).max() <= 1e-6 * max(1.0, np.abs(grad).max())


def test_a_wrong_gradient_fails_the_difference_check():
    _, _, priors, block = setup("q3")
    z = points(1, cs.n_dim(priors))[0]
    broken = block.copy()
    broken[cs.LAYOUT.index("eta")] += 1.0  # value and gradient of another density
    _, grad = cs.logp_and_grad(z, broken)
    h = 1e-6
    fd = np.array([(cs.logp_and_grad(z + e, block)[0] - cs.logp_and_grad(z - e, block)[0])
                   / (2 * h) for e in np.eye(z.size) * h])
    assert np.abs(fd - grad).max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_unconstrained_round_trip(case):
    _, _, priors, block = setup(case)
    f, lay = priors.fixed, priors.layout
    k, q, P = len(f.terms), lay.q, len(lay.pairs)
    for z in points(3, cs.n_dim(priors), seed=5):
        x = cs.expand(z, block)
        back = cs.to_unconstrained(priors, x[:k], x[k:k + q], x[k + q:k + q + P], x[-1])
        np.testing.assert_allclose(back, z, rtol=1e-9, atol=1e-9)


def test_extreme_point_is_finite():
    """Correlations at +-1 to double precision and an sd at 1e-12 of its scale: finite."""
    _, _, priors, block = setup("q3")
    z = np.zeros(cs.n_dim(priors))
    z[-3:] = [30.0, -30.0, 30.0]
    z[3] = -28.0
    value, grad = cs.logp_and_grad(z, block)
    assert np.isfinite(value) and np.isfinite(grad).all()


def test_sufficient_form_runs_compiled_by_default():
    from varcomp.analyses.fit import prepare

    data, family, priors, _ = setup("q2")
    form = family.forms[family.default_form]
    assert form.name == "sufficient"
    model, backend = prepare(form, data, priors=priors)
    assert backend == "native"
    assert model.n_dim == cs.n_dim(priors)


def test_compiled_route_samples_near_the_truth():
    from varcomp.models.sampling import sample_model

    df = frame(seed=2, clusters=60)
    data = from_formula(df, CASES["q2"])
    priors = family_of(data).default_priors(data)
    idata, _ = sample_model(cs.compile_sufficient(data, priors), draws=300, tune=300, chains=2,
                            seed=1)
    post = idata.posterior
    assert set(post.data_vars) >= {"beta", "tau", "rho", "sigma"}
    assert list(post["rho"].coords["pair"].values) == ["g|Intercept,x"]
    # simulated with beta (3, 0.7), sds (1, 0.5), sigma 0.8: the means land near them
    np.testing.assert_allclose(post["beta"].mean(("chain", "draw")), [3.0, 0.7], atol=0.5)
    assert abs(float(post["sigma"].mean()) - 0.8) < 0.15


@pytest.mark.slow
@pytest.mark.parametrize("bars", ["|", "||"])
def test_compiled_posterior_equals_pymc_forms_on_sleepstudy(bars):
    """Posterior means of the compiled route and PyMC's sufficient form (numba) agree within
    Monte Carlo error: |difference| <= 4 x the combined MCSE, for every parameter."""
    import arviz as az

    from varcomp.models.design import load_formula
    from varcomp.models.sampling import sample_model

    data = load_formula("sleepstudy", f"Reaction ~ Days + (Days {bars} Subject)")
    family = family_of(data)
    priors = family.default_priors(data)
    form = family.forms["sufficient"]
    kw = {"draws": 2000, "tune": 1000, "chains": 4, "seed": 3}
    native, _ = sample_model(form.compiled(data, priors), **kw)
    pymc, _ = sample_model(form.build(data, priors=priors), **kw)
    names = ["beta", "tau", "sigma"] + (["rho"] if bars == "|" else [])
    for var in names:
        x = native.posterior[var].stack(s=("chain", "draw")).values.reshape(-1, 8000)
        y = pymc.posterior[var].stack(s=("chain", "draw")).values.reshape(-1, 8000)
        mx, my = x.mean(axis=1), y.mean(axis=1)
        se = np.sqrt(sum(az.mcse(i.posterior, var_names=[var])[var].values.ravel() ** 2
                         for i in (native, pymc)))
        assert (np.abs(mx - my) <= 4 * se).all(), (var, mx, my, se)
        # and the spread: sds within 10% (a wrong Jacobian moves the sds of tau and rho)
        np.testing.assert_allclose(x.std(axis=1), y.std(axis=1), rtol=0.1)


@pytest.mark.parametrize("specs", [["tau=halfnormal:2", "sigma=exponential:1"],
                                   ["tau=halfcauchy:1", "tau[g|x]=halfcauchy:0.3",
                                    "beta[x]=normal:0.5:2", "intercept=normal:1:10"]])
def test_prior_overrides_equal_the_numpy_oracle(specs):
    from varcomp.models.slopes_model import parse_slopes_priors

    data = from_formula(frame(), CASES["q2"])
    priors = parse_slopes_priors(data, specs)
    block = cs.parameter_block(priors, stats_of(data))
    density = oracle_density(data, priors)
    d = [cs.logp_and_grad(z, block)[0] - log_jacobian(z, block) - density(cs.expand(z, block))
         for z in points(3, cs.n_dim(priors))]
    assert np.abs(d).max() < 1e-7


def test_group_effects_are_exact_conditional_draws():
    """``add_slope_effects`` (batched over draws): at one (beta, V, sigma) repeated 4,000
    times, each cluster's draws have the dense oracle's mean V Z_l' S_l^-1 (y_l - X_l beta)
    (within 5 standard errors) and covariance V - V Z_l' S_l^-1 Z_l V (sds within 8%); the
    prior N(0, V) would fail the mean check."""
    import arviz as az

    from varcomp.models.slopes_model import add_slope_effects, layout

    data = from_formula(frame(seed=4), CASES["q2"])
    priors = family_of(data).default_priors(data)
    beta, tau, rho, sigma = np.array([3.0, 0.6]), np.array([0.9, 0.4]), np.array([0.5]), 0.8
    S = 4000
    idata = az.from_dict(posterior={"beta": np.tile(beta, (1, S, 1)),
                                    "tau": np.tile(tau, (1, S, 1)),
                                    "rho": np.tile(rho, (1, S, 1)),
                                    "sigma": np.full((1, S), sigma)})
    add_slope_effects(idata, data, seed=7)
    b = idata.posterior["b"].values[0]  # (S, L, q)
    V = priors.V(tau, rho)
    Z, X, y = layout(data).Z, data.design.X, data.y[:, 0]
    prior_far = False
    for g in range(len(data.groups)):
        rows = data.codes == g
        Sl = Z[rows] @ V @ Z[rows].T + sigma**2 * np.eye(rows.sum())
        K = V @ Z[rows].T @ np.linalg.inv(Sl)
        mean, cov = K @ (y[rows] - X[rows] @ beta), V - K @ Z[rows] @ V
        se = np.sqrt(np.diag(cov) / S)
        assert (np.abs(b[:, g].mean(axis=0) - mean) < 5 * se).all()
        np.testing.assert_allclose(b[:, g].std(axis=0), np.sqrt(np.diag(cov)), rtol=0.08)
        prior_far |= bool((np.abs(mean) > 5 * se).any())
    assert prior_far


@pytest.mark.parametrize("case", ["q2", "q3", "two_blocks"])
def test_pymc_forms_cpc_density_is_lkj_with_its_constant(case):
    """PyMC's sufficient and marginal forms (their Beta CPCs, no Jacobian) at ``priors.cpc(rho)``
    minus its log|d rho / d u| equal the numpy oracle (LKJ by slogdet, correct constant); without
    that Jacobian q = 3 fails (it is not constant)."""
    data, family, priors, block = setup(case)
    density = oracle_density(data, priors)
    xs = [cs.expand(z, block) for z in points(3, cs.n_dim(priors), seed=9)]
    for form in ("sufficient", "marginal"):
        model = family.forms[form].build(data, priors=priors)
        fn = model.compile_logp(jacobian=False)
        got, jacs = [], []
        for x in xs:
            beta, tau, rho, sigma = split(priors, x)
            values, log_jac = priors.cpc(rho)
            point = pymc_point(model, priors, cs.to_unconstrained(priors, beta, tau, rho, sigma))
            for name, u in values.items():
                point[f"{name}_logodds__"] = np.log(u / (1.0 - u))
            got.append(float(fn(point)) - log_jac - density(x))
            jacs.append(log_jac)
        # PyMC's StudentT differs from the exact density by ~2e-8 per HalfStudentT term
        assert np.abs(got).max() < 1e-6
        if case == "q3":
            assert np.ptp(jacs) > 1e-2  # dropping the Jacobian would fail
