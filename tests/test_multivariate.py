"""The multivariate model: simulator and PD checks, priors, four builders, exact densities."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from varcomp.models import mvstats
from varcomp.models.checks.oracles import scipy_loglik_mv as scipy_loglik
from varcomp.models.data import DataError, load
from varcomp.models.forms import family_named
from varcomp.models.forms import multivariate as mv
from varcomp.models.priors import MvPriors
from varcomp.models.simulate import Simulated
from varcomp.models.simulate_mv import (
    check_pd,
    drop_components,
    sigma_from_sd_corr,
    simulate_multivariate,
)

MV = family_named("multivariate")
PARAMS = ("mu", "chol_V_std", "chol_Sigma_std")
V_NOTES = np.array([[4.0, 3.0], [3.0, 4.0]])
SIGMA_NOTES = np.array([[0.25, -0.24], [-0.24, 0.36]])


# ------------------------------------------------------------------------------------ helpers
def random_cov(rng, p, scale=1.0):
    a = rng.normal(size=(p, p))
    return scale**2 * (a @ a.T / p + 0.3 * np.eye(p))


def value_point(model, values):
    """The model's value variables (sampler space) for constrained values of its free RVs."""
    point = {}
    for rv in model.free_RVs:
        val = np.asarray(values[rv.name], dtype=np.float64)
        tr = model.rvs_to_transforms.get(rv)
        vv = model.rvs_to_values[rv].name
        point[vv] = val if tr is None else tr.forward(pt.as_tensor(val), *rv.owner.inputs).eval(
            mode="FAST_COMPILE")
    return point


def model_loglik(model, values):
    """Model log density (no Jacobians) without the prior of mu, V, Sigma at ``values``."""
    point = value_point(model, values)
    # per-term outputs: the python linker cannot add more than 32 terms in one Elemwise
    others = [v for v in model.basic_RVs if v.name not in PARAMS] + model.potentials
    terms = model.logp(vars=others, jacobian=False, sum=False)
    fn = model.compile_fn([t.sum() for t in terms], mode="FAST_COMPILE")
    return float(sum(fn(point)))


def random_point(data, seed):
    rng = np.random.default_rng(seed)
    center = np.nanmean(data.y, axis=0)
    sd = np.nanstd(data.y, axis=0)
    mu = center + sd * rng.normal(size=data.p)
    return mu, random_cov(rng, data.p, sd.mean()), random_cov(rng, data.p, sd.mean() / 2)


# ------------------------------------------------------------------- simulator and PD checks
def test_check_pd_refuses_the_notes_printed_V_naming_its_smallest_eigenvalue():
    """[[2, 3], [3, 4]] has determinant -1 (ERRATA 1): eigenvalues 3 +- sqrt(10), one < 0."""
    with pytest.raises(ValueError, match=r"smallest eigenvalue is -0\.162278"):
        check_pd([[2.0, 3.0], [3.0, 4.0]], "V")
    np.testing.assert_array_equal(check_pd(V_NOTES, "V"), V_NOTES)


@pytest.mark.parametrize("bad, pattern", [
    ([[4.0, 3.0], [2.9, 4.0]], r"not symmetric.*smallest eigenvalue"),
    ([[1.0, 0.0], [0.0, 0.0]], r"smallest eigenvalue is 0"),
    ([[1.0, 0.0, 0.0]], r"square"),
    ([[1.0, np.nan], [np.nan, 1.0]], r"non-finite"),
])
def test_check_pd_refuses_non_covariances(bad, pattern):
    """Asymmetric, singular, non-square and non-finite matrices are not covariances."""
    with pytest.raises(ValueError, match=pattern):
        check_pd(bad, "M")


def test_sigma_from_sd_corr_gives_the_notes_matrix():
    """D R D with D = diag(0.5, 0.6), corr -0.8 is [[0.25, -0.24], [-0.24, 0.36]]."""
    S = sigma_from_sd_corr([0.5, 0.6], [[1.0, -0.8], [-0.8, 1.0]])
    np.testing.assert_allclose(S, SIGMA_NOTES, rtol=1e-15)
    with pytest.raises(ValueError, match="unit diagonal"):
        sigma_from_sd_corr([1.0, 1.0], [[2.0, 0.1], [0.1, 1.0]])
    with pytest.raises(ValueError, match="positive"):
        sigma_from_sd_corr([1.0, -1.0], np.eye(2))


def test_simulator_refuses_the_notes_V_and_reproduces_with_a_seed():
    """The simulator checks V and Sigma; a seed fixes the draw."""
    with pytest.raises(ValueError, match="V = .* not positive definite"):
        simulate_multivariate(3, 2, [0.0, 0.0], [[2.0, 3.0], [3.0, 4.0]], SIGMA_NOTES, 1)
    a = simulate_multivariate(4, [1, 2, 3, 4], [1.0, 2.0], V_NOTES, SIGMA_NOTES, 7)
    b = simulate_multivariate(4, [1, 2, 3, 4], [1.0, 2.0], V_NOTES, SIGMA_NOTES, 7)
    assert list(a.frame.columns) == ["group", "y1", "y2"]
    assert a.effects.shape == (4, 2) and len(a.frame) == 10
    np.testing.assert_array_equal(a.frame[["y1", "y2"]], b.frame[["y1", "y2"]])
    assert a.data().p == 2


def test_simulated_covariances_match_V_and_Sigma():
    """Sample covariances of M_l and of X_lj - M_l estimate V and Sigma.

    Each entry's z-score uses the Wishart variance (V_ij^2 + V_ii V_jj) / n; |z| < 4.5 has a
    false-alarm rate below 1e-5 per entry.
    """
    L = 4000
    sim = simulate_multivariate(L, 3, [5.0, -5.0], V_NOTES, SIGMA_NOTES, 11)
    y = sim.frame[["y1", "y2"]].to_numpy()
    resid = y - np.array([5.0, -5.0]) - np.repeat(sim.effects, 3, axis=0)
    for sample, truth in ((sim.effects, V_NOTES), (resid, SIGMA_NOTES)):
        n = sample.shape[0]
        S = sample.T @ sample / n  # known mean 0
        se = np.sqrt((truth**2 + np.outer(np.diag(truth), np.diag(truth))) / n)
        assert np.all(np.abs(S - truth) / se < 4.5)


def test_drop_components_keeps_every_row():
    """Each row keeps at least one outcome, so ClusteredData drops nothing."""
    sim = simulate_multivariate(30, 10, [0.0, 0.0, 0.0], np.eye(3), np.eye(3), 3)
    frame = drop_components(sim.frame, 0.6, 4)
    data = Simulated(frame, sim.effects, sim.params).data()
    assert data.n_obs == 300 and data.dropped_rows == 0
    assert np.isfinite(data.y).any(axis=1).all() and not np.isfinite(data.y).all()


# ------------------------------------------------------------------------ statistics, priors
def test_pattern_stats_match_the_data_layer_and_a_loop():
    """Per-(cluster, pattern) counts and means equal a direct loop; W_complete = data scatter."""
    data = load("gcsemv")
    st = mvstats.pattern_stats(data)
    assert st.patterns.tolist() == [[True, True], [False, True], [True, False]]
    assert st.n.sum() == data.n_obs and st.n.sum(axis=0).tolist() == [1523, 202, 180]
    np.testing.assert_allclose(st.scatter[0], data.stats.scatter, rtol=1e-12)
    for g in (0, 5, 40):
        rows = data.y[data.codes == g]
        for q, pat in enumerate(st.patterns):
            sel = rows[(np.isfinite(rows) == pat).all(axis=1)]
            assert st.n[g, q] == len(sel)
            if len(sel):
                np.testing.assert_allclose(st.mean[g, q, pat], sel[:, pat].mean(axis=0),
                                           rtol=1e-13)


def test_mv_priors_are_scaled_to_each_outcome():
    """mu_k ~ N(mean_k, 2.5 sd_k); sd priors HalfNormal(sd_k); refuses mismatched sizes."""
    data = load("gcsemv")
    pri = MvPriors.default(data)
    for k in range(2):
        y = data.y[:, k]
        y = y[np.isfinite(y)]
        assert pri.mu_loc[k] == pytest.approx(y.mean())
        assert pri.tau_scale[k] == pytest.approx(y.std(ddof=1))
        assert pri.mu_scale[k] == pytest.approx(2.5 * y.std(ddof=1))
    assert "LKJCholeskyCov(eta=2" in pri.describe()["V"]
    with pytest.raises(ValueError, match="one per outcome"):
        MvPriors(mu_loc=(0.0, 0.0), mu_scale=(1.0,), tau_scale=(1.0, 1.0),
                 sigma_scale=(1.0, 1.0))


# ------------------------------------------------------------------------- exact log densities
@settings(max_examples=30, deadline=None)
@given(p=st.integers(2, 3), sizes=st.lists(st.integers(1, 8), min_size=2, max_size=10),
       prob=st.sampled_from([0.0, 0.2, 0.5]), log_ratio=st.floats(-4.0, 2.0),
       seed=st.integers(0, 2**31 - 1))
def test_closed_form_equals_scipy_for_any_design(p, sizes, prob, log_ratio, seed):
    """For any design (2..10 clusters of 1..8 rows, p = 2 or 3, none to half of the cells
    missing) and tau/sigma from 1e-4 to 1e2, the numpy information form (marginal_loglik, and
    its per-cluster split cluster_loglik, which SBC and leave-one-cluster-out use) equals
    scipy's MvNormal of each cluster's stacked observed vector to relative 1e-9."""
    rng = np.random.default_rng(seed)
    sim = simulate_multivariate(len(sizes), sizes, rng.normal(0.0, 5.0, p), random_cov(rng, p),
                                random_cov(rng, p), rng)
    frame = drop_components(sim.frame, prob, rng) if prob else sim.frame
    data = Simulated(frame, sim.effects, sim.params).data()
    Sigma = random_cov(rng, p)
    V = 10.0 ** (2 * log_ratio) * random_cov(rng, p)
    observed = np.isfinite(data.y)
    mu = np.where(observed.any(axis=0), np.nanmax(np.where(observed, data.y, -np.inf), axis=0),
                  0.0) + rng.normal(size=p)  # an outcome may be missing in every row
    stats_ = mvstats.pattern_stats(data)
    want = scipy_loglik(data, mu, V, Sigma)
    assert mvstats.marginal_loglik(stats_, mu, V, Sigma) == pytest.approx(want, rel=1e-9)
    per_cluster = mvstats.cluster_loglik(stats_, mu, V, Sigma)
    assert per_cluster.shape == (data.n_groups,)
    for g in (0, data.n_groups - 1):
        one = data.y[data.codes == g]
        r, k = np.nonzero(np.isfinite(one))
        cov = V[np.ix_(k, k)] + (r[:, None] == r[None, :]) * Sigma[np.ix_(k, k)]
        truth = stats.multivariate_normal(mu[k], cov).logpdf(one[r, k])
        assert per_cluster[g] == pytest.approx(truth, rel=1e-9)


@pytest.mark.parametrize("p", [2, 3])
def test_sufficient_algebras_agree(p, make_partly_missing):
    """The eigh, 2x2 and Cholesky algebras of the closed form are the same function."""
    data = make_partly_missing(p, 5, L=12, prob=0.1)
    st = mvstats.pattern_stats(data)
    assert 0 < st.complete_only.sum() < data.n_groups  # both kinds of cluster present
    mu, V, Sigma = random_point(data, 6)
    m, cv, cs = pt.dvector(), pt.dmatrix(), pt.dmatrix()
    ref = scipy_loglik(data, mu, V, Sigma)
    for complete in ("eigh", "cholesky") + (("2x2",) if p == 2 else ()):
        fn = pytensor.function([m, cv, cs], mv.sufficient_loglik(st, m, cv, cs,
                                                                 complete=complete),
                               mode="FAST_COMPILE")
        got = fn(mu, np.linalg.cholesky(V), np.linalg.cholesky(Sigma))
        assert got == pytest.approx(ref, rel=1e-9, abs=0), complete


def test_sufficient_is_exact_on_gcsemv():
    """On the shipped gcsemv data (382 partly missing rows in 67 of 73 schools) the closed form
    (numpy and the PyMC model) and the literal marginal model equal scipy's stacked MvNormal at
    a random point."""
    data = load("gcsemv")
    mu, V, Sigma = random_point(data, 9)
    ref = scipy_loglik(data, mu, V, Sigma)
    got = mvstats.marginal_loglik(mvstats.pattern_stats(data), mu, V, Sigma)
    assert got == pytest.approx(ref, rel=1e-9)
    values = MvPriors.default(data).point(mu, V, Sigma)
    got = model_loglik(mv.build_sufficient(data), values)
    assert got == pytest.approx(ref, rel=1e-9, abs=0)


@pytest.mark.slow
def test_marginal_is_exact_on_gcsemv():
    """The literal marginal model on gcsemv (68 MvNormal blocks, up to 187 dims; slow: its
    PyMC graph takes ~6 s to compile) equals scipy's stacked MvNormal."""
    data = load("gcsemv")
    mu, V, Sigma = random_point(data, 9)
    ref = scipy_loglik(data, mu, V, Sigma)
    values = MvPriors.default(data).point(mu, V, Sigma)
    got = model_loglik(mv.build_marginal(data), values)
    assert got == pytest.approx(ref, rel=1e-9, abs=0)


def test_a_broken_closed_form_fails_the_agreement(make_partly_missing):
    """The agreement check can fail: dropping the missing rows' terms changes the density."""
    data = make_partly_missing(2, 0)
    mu, V, Sigma = random_point(data, 100)
    st = mvstats.pattern_stats(data)
    broken = mvstats.PatternStats(st.patterns, st.row_pattern, st.n * st.patterns.all(axis=1),
                                  st.mean, st.scatter, st.cluster_scatter)
    ref = scipy_loglik(data, mu, V, Sigma)
    assert abs(mvstats.marginal_loglik(broken, mu, V, Sigma) - ref) > 1e-3 * abs(ref)


@pytest.mark.parametrize("MODE", ["FAST_COMPILE", pytest.param("NUMBA", marks=pytest.mark.slow)])
def test_sufficient_gradient_matches_finite_differences(MODE, make_partly_missing):
    """d logp / d theta of the eigh form equals the 2x2 form's and a central finite
    difference of the Cholesky form. In numba (the sampler's backend; slow tier: ~45 s to
    compile) pytensor 2.38 runs EighGrad in object mode: correct, but a Python call per
    gradient, which is why p = 2 uses the elementwise 2x2 algebra."""
    data = make_partly_missing(2, 3, L=8, prob=0.1)
    st = mvstats.pattern_stats(data)
    mu, V, Sigma = random_point(data, 4)
    m, cv, cs = pt.dvector("mu"), pt.dmatrix("chol_V"), pt.dmatrix("chol_Sigma")
    low = np.tril_indices(2)

    def fn(complete, mode):
        ll = mv.sufficient_loglik(st, m, cv, cs, complete=complete)
        grads = pytensor.grad(ll, [m, cv, cs])
        f = pytensor.function([m, cv, cs], [ll, *grads], mode=mode)

        def packed(x):  # the free coordinates: mu and the lower triangles of the factors
            cvx, csx = np.zeros((2, 2)), np.zeros((2, 2))
            cvx[low], csx[low] = x[2:5], x[5:8]
            out = f(x[:2], cvx, csx)
            return out[0], np.concatenate([out[1], out[2][low], out[3][low]])

        return packed

    x0 = np.concatenate([mu, np.linalg.cholesky(V)[low], np.linalg.cholesky(Sigma)[low]])
    f_eigh, g_eigh = fn("eigh", MODE)(x0)
    f_2x2, g_2x2 = fn("2x2", "FAST_COMPILE")(x0)
    assert f_eigh == pytest.approx(f_2x2, rel=1e-12)
    np.testing.assert_allclose(g_eigh, g_2x2, rtol=1e-8, atol=1e-10)
    f = fn("cholesky", MODE)
    h = 1e-6
    fd = [(f(x0 + h * e)[0] - f(x0 - h * e)[0]) / (2 * h) for e in np.eye(x0.size)]
    np.testing.assert_allclose(g_2x2, fd, rtol=1e-5, atol=1e-6)


def test_standardised_coordinates_make_the_sampler_scale_free(make_partly_missing):
    """Data a + b y at (a + b mu, b^2 V, b^2 Sigma) map to the same sampler coordinates as y at
    (mu, V, Sigma), and the log density shifts by a constant (the Jacobian of the units)."""
    data = make_partly_missing(2, 7, L=8, prob=0.1)
    frame = data.to_frame()
    a, b = 1e6, 1e-3  # data rounding at 1e6 (ulp 1e-10) stays far below 1e-6 of b * sd
    frame[list(data.responses)] = a + b * frame[list(data.responses)]
    scaled = type(data).from_frame(frame, group="group", response=list(data.responses))
    mu, V, Sigma = random_point(data, 8)
    logps = []
    for d, pt_ in ((data, (mu, V, Sigma)), (scaled, (a + b * mu, b * b * V, b * b * Sigma))):
        model = mv.build_sufficient(d)
        point = value_point(model, MvPriors.default(d).point(*pt_))
        logps.append((point, model.compile_logp(mode="FAST_COMPILE")(point)))
    for k in logps[0][0]:
        np.testing.assert_allclose(logps[1][0][k], logps[0][0][k], rtol=1e-6, atol=1e-6)
    n_obs = np.isfinite(data.y).sum()
    assert logps[1][1] - logps[0][1] == pytest.approx(-n_obs * np.log(b), rel=1e-6)


# ------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", list(family_named("multivariate").forms))
def test_structure_names_and_dims(name, bivariate_missing):
    """Shared names and dims: outcome labels are the response names; matrices are
    (outcome, outcome_bis); Deterministics evaluate to V, Sigma and their derived quantities."""
    data = bivariate_missing
    model = MV.form(name).build(data)
    assert model.coords["outcome"] == data.responses
    assert model.coords["outcome_bis"] == data.responses
    assert model.coords["group"] == tuple(str(g) for g in data.groups)
    dims = model.named_vars_to_dims
    for v in ("V", "Sigma", "corr_between", "corr_within"):
        assert dims[v] == ("outcome", "outcome_bis")
    for v in ("mu", "tau", "sigma", "icc"):
        assert dims[v] == ("outcome",)
    free = {v.name for v in model.free_RVs}
    latent = {"centred": {"group_mean"}, "noncentred": {"group_effect_offset"}}
    assert free == set(PARAMS) | latent.get(name, set())
    if name in latent:
        assert dims["group_effect"] == ("group", "outcome")
    mu, V, Sigma = random_point(data, 1)
    values = MvPriors.default(data).point(mu, V, Sigma)
    if name == "centred":
        values["group_mean"] = np.zeros((data.n_groups, 2))
    if name == "noncentred":
        values["group_effect_offset"] = np.zeros((data.n_groups, 2))
    outs = model.replace_rvs_by_values(
        [model[v] for v in ("V", "Sigma", "tau", "icc", "corr_within")])
    det = model.compile_fn(outs, inputs=model.value_vars, mode="FAST_COMPILE", point_fn=False,
                           on_unused_input="ignore")
    point = value_point(model, values)
    got = det(*[point[v.name] for v in model.value_vars])
    np.testing.assert_allclose(got[0], V, rtol=1e-12)
    np.testing.assert_allclose(got[1], Sigma, rtol=1e-12)
    np.testing.assert_allclose(got[2], np.sqrt(np.diag(V)), rtol=1e-12)
    np.testing.assert_allclose(got[3], np.diag(V) / (np.diag(V) + np.diag(Sigma)), rtol=1e-12)
    np.testing.assert_allclose(got[4][0, 1], Sigma[0, 1] / np.sqrt(Sigma[0, 0] * Sigma[1, 1]))


@pytest.mark.parametrize("name", ["centred", "noncentred"])
def test_latent_forms_leave_missing_components_out(name, make_partly_missing):
    """One observed node per row pattern holds exactly the observed values, and the nodes
    can be simulated (prior predictive) with their shapes."""
    import pymc as pm

    data = make_partly_missing(3, 2)
    model = getattr(mv, f"build_{name}")(data)
    # observed values live in the pm.Data containers (shared variables) of data_values
    observed = {v.name: model.rvs_to_values[v].get_value() for v in model.observed_RVs}
    assert sum(np.size(v) for v in observed.values()) == np.isfinite(data.y).sum()
    assert all(np.isfinite(v).all() for v in observed.values())
    assert observed["y"].shape == (int(np.isfinite(data.y).all(axis=1).sum()), 3)
    draws = pm.draw(model.observed_RVs, random_seed=1, mode="FAST_COMPILE")  # one compile
    for v, draw in zip(model.observed_RVs, draws, strict=True):
        assert draw.shape == observed[v.name].shape


def test_builders_refuse_univariate_data_and_oversized_marginal_clusters(unbalanced):
    """The multivariate builders need p >= 2; the marginal form refuses huge clusters."""
    with pytest.raises(ValueError, match="one response"):
        mv.build_sufficient(unbalanced)
    sim = simulate_multivariate(2, mv.MARGINAL_MAX_DIM // 2 + 1, [0.0, 0.0], V_NOTES,
                                SIGMA_NOTES, 0)
    with pytest.raises(DataError, match="use the 'sufficient' form"):
        mv.build_marginal(sim.data())


def test_marginal_batches_clusters_by_missingness_signature(make_partly_missing):
    """Clusters with the same rows-per-pattern counts share one MvNormal block, whose stacked
    components are each cluster's observed values."""
    data = make_partly_missing(2, 0, L=10)
    blocks = list(mvstats.marginal_blocks(data))
    assert sum(v.shape[0] for _, _, v in blocks) == data.n_groups
    assert sum(v.size for _, _, v in blocks) == np.isfinite(data.y).sum()
    assert all(np.isfinite(v).all() for _, _, v in blocks)


# --------------------------------------------------------------------- conditional effects
def test_cluster_conditional_is_the_gaussian_conditional(make_partly_missing):
    """E[M_l | x_l] and Cov(M_l | x_l) equal the dense formulas
    C_MX C_XX^-1 (x - mu) and V - C_MX C_XX^-1 C_XM on the stacked observed vector."""
    data = make_partly_missing(3, 4)
    mu, V, Sigma = random_point(data, 5)
    mean, root = mvstats.cluster_conditional(mvstats.pattern_stats(data), mu, V, Sigma)
    for g in range(data.n_groups):
        y = data.y[data.codes == g]
        r, k = np.nonzero(np.isfinite(y))
        cxx = V[np.ix_(k, k)] + (r[:, None] == r[None, :]) * Sigma[np.ix_(k, k)]
        cmx = V[:, k]
        np.testing.assert_allclose(mean[g], cmx @ np.linalg.solve(cxx, y[r, k] - mu[k]),
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(root[g] @ root[g].T, V - cmx @ np.linalg.solve(cxx, cmx.T),
                                   rtol=1e-9, atol=1e-12)


def test_add_group_effects_mv_draws_from_the_conditional(make_partly_missing):
    """Draws at one fixed (mu, V, Sigma) repeated 4000 times have the conditional mean:
    |z| < 4.5 per component (false-alarm rate < 1e-5 each)."""
    import arviz as az

    data = make_partly_missing(2, 1)
    mu, V, Sigma = random_point(data, 2)
    S = 4000
    post = {"mu": np.broadcast_to(mu, (1, S, 2)), "V": np.broadcast_to(V, (1, S, 2, 2)),
            "Sigma": np.broadcast_to(Sigma, (1, S, 2, 2))}
    idata = az.from_dict(posterior={k: np.array(v) for k, v in post.items()})
    idata = mvstats.add_group_effects_mv(idata, data, seed=3)
    ge = idata.posterior["group_effect"]
    assert ge.dims == ("chain", "draw", "group", "outcome")
    assert list(ge.outcome.values) == list(data.responses)
    mean, root = mvstats.cluster_conditional(mvstats.pattern_stats(data), mu, V, Sigma)
    sd = np.sqrt(np.einsum("lij,lij->li", root, root))
    z = (ge.values[0].mean(axis=0) - mean) / (sd / np.sqrt(S))
    assert np.all(np.abs(z) < 4.5)
    assert mvstats.add_group_effects_mv(idata, data) is idata  # already present: unchanged


# -------------------------------------------------------------------------- slow: sampling
@pytest.mark.slow
def test_posterior_intervals_cover_the_notes_parameters():
    """Simulated from the notes' V = [[4, 3], [3, 4]], Sigma = D R D (D = diag(0.5, 0.6),
    corr -0.8), 50 clusters x 20: the posterior intervals of V, Sigma and icc cover the truth.

    Eight scalars (V11, V12, V22, S11, S12, S22, icc1, icc2) are checked. Each must lie in its
    Bonferroni interval (central 1 - 0.06/8 = 99.25%), so the family-wise false-alarm rate is
    at most 6%; and at least 6 of the 8 central 94% intervals must cover (with independent
    intervals, 3+ misses out of 8 at 6% each has probability 1%).
    """
    from varcomp.models.sampling import diagnose, sample_model

    sim = simulate_multivariate(50, 20, [10.0, 20.0], V_NOTES, SIGMA_NOTES, 20261127)
    data = sim.data()
    idata, _ = sample_model(mv.build_sufficient(data), draws=1000, tune=1000, chains=2,
                            seed=1)
    diag = diagnose(idata, var_names=("mu", "V", "Sigma", "icc"))
    assert diag["ok"], diag["problems"]
    post = idata.posterior
    truth = {"V": V_NOTES, "Sigma": SIGMA_NOTES,
             "icc": np.diag(V_NOTES) / (np.diag(V_NOTES) + np.diag(SIGMA_NOTES))}
    covered94, bonferroni = [], []
    for name, value in truth.items():
        draws = post[name].values.reshape(-1, *post[name].shape[2:])
        entries = [(0, 0), (0, 1), (1, 1)] if draws.ndim == 3 else [(0,), (1,)]
        for e in entries:
            x = draws[(slice(None), *e)]
            lo94, hi94 = np.quantile(x, [0.03, 0.97])
            lo, hi = np.quantile(x, [0.06 / 16, 1 - 0.06 / 16])
            covered94.append(lo94 <= value[e] <= hi94)
            bonferroni.append(lo <= value[e] <= hi)
    assert all(bonferroni)
    assert sum(covered94) >= 6
