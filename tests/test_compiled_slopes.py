"""The slopes family's compiled sufficient route against PyMC's sufficient form and differences.

The compiled coordinates (CPCs through tanh for the correlations, log(tau / scale)) are not
PyMC's, so the density is compared on the constrained space: compiled logp minus the log
Jacobian of its own expand map (central differences of ``expand``, an independent route) must
equal PyMC's density without Jacobian at the expanded point up to one constant (PyMC's LKJ
constant's sign), the same at every point.
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


def pymc_values(priors, x: np.ndarray) -> dict[str, np.ndarray]:
    """PyMC's free variables (alpha, slope, tau, sigma, rho or rho_i) from expanded values."""
    f, lay = priors.fixed, priors.layout
    k, q, P = len(f.terms), lay.q, len(lay.pairs)
    beta, tau, rho, sigma = x[:k], x[k:k + q], x[k + q:k + q + P], x[-1]
    out = {"tau": tau, "sigma": sigma}
    if f.slope_index:
        out["slope"] = beta[list(f.slope_index)]
    if f.intercept_index is not None:
        out["alpha"] = beta[f.intercept_index] + beta[list(f.slope_index)] @ np.asarray(f.x_mean)
    blocks = [b for b in lay.blocks if len(b) > 1]
    at = 0
    for i, b in enumerate(blocks):
        n = len(b) * (len(b) - 1) // 2
        out["rho" if len(blocks) == 1 else f"rho_{i}"] = rho[at:at + n]
        at += n
    return out


def pymc_density(model):
    """PyMC's log density without Jacobian at constrained values (through its transforms)."""
    import pytensor.tensor as pt

    fn = model.compile_logp(jacobian=False)

    def density(values):
        point = {}
        for rv in model.free_RVs:
            v = np.asarray(values[rv.name], dtype=np.float64)
            tr = model.rvs_to_transforms.get(rv)
            if tr is not None:
                v = pt.as_tensor(tr.forward(pt.as_tensor(v), *rv.owner.inputs)).eval()
            point[model.rvs_to_values[rv].name] = v
        return float(fn(point))

    return density


def log_jacobian(z: np.ndarray, block: np.ndarray, h: float = 1e-5) -> float:
    """log |det d expand / dz| by central differences."""
    J = np.stack([(cs.expand(z + e, block) - cs.expand(z - e, block)) / (2 * h)
                  for e in np.eye(z.size) * h], axis=1)
    return float(np.linalg.slogdet(J)[1])


def points(n: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, dim) for _ in range(n)]


def offsets(case: str, kernel=cs.logp_and_grad, block_edit=None) -> np.ndarray:
    data, family, priors, block = setup(case)
    if block_edit is not None:
        block = block_edit(block.copy())
    density = pymc_density(family.forms["sufficient"].build(data, priors=priors))
    out = []
    for z in points(5, cs.n_dim(priors)):
        x = cs.expand(z, block)
        out.append(kernel(z, block)[0] - log_jacobian(z, block)
                   - density(pymc_values(priors, x)))
    return np.array(out)


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_density_equals_pymc_up_to_one_constant(case):
    d = offsets(case)
    assert np.ptp(d) < 1e-8


def test_a_dropped_jacobian_or_a_wrong_eta_fails():
    def no_tanh_jacobian(z, block):
        value, grad = cs.logp_and_grad(z, block)
        zc = z[-1:]  # q2: one CPC, the last coordinate
        return value - np.log1p(-np.tanh(zc) ** 2).sum(), grad

    assert np.ptp(offsets("q2", kernel=no_tanh_jacobian)) > 1e-3

    def wrong_eta(block):
        block[cs.LAYOUT.index("eta")] += 1.0
        return block

    assert np.ptp(offsets("q3", block_edit=wrong_eta)) > 1e-3

    def no_tau_jacobian(z, block):
        value, grad = cs.logp_and_grad(z, block)
        return value - z[2:4].sum(), grad

    assert np.ptp(offsets("diag", kernel=no_tau_jacobian)) > 1e-3


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
