"""The checks of the multivariate forms: exact densities, posterior comparison, SBC, LKJ start."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from varcomp.models import checks, mvstats
from varcomp.models.checks import oracles
from varcomp.models.checks.broken import BROKEN
from varcomp.models.checks.sbc_models import SBC_MV_PRIORS, mv_quantities
from varcomp.models.forms import family_named
from varcomp.models.priors import MvPriors
from varcomp.models.simulate import Simulated
from varcomp.models.simulate_mv import drop_components, simulate_multivariate

MV = family_named("multivariate")
V_NOTES = np.array([[4.0, 3.0], [3.0, 4.0]])
SIGMA_NOTES = np.array([[0.25, -0.24], [-0.24, 0.36]])


# ------------------------------------------------------------------------ exact log densities
@pytest.mark.parametrize("p, seed", [(2, 0), pytest.param(3, 2, marks=pytest.mark.slow)])
def test_four_forms_and_scipy_agree_exactly_including_missing_rows(p, seed, make_partly_missing):
    """compare_logp (the multivariate family's check kit): at 8 random (mu, V, Sigma) with
    tau/sigma over 1e-4..1e2, the four forms (whose data are pm.Data containers) and the numpy
    information form equal scipy's MvNormal of each cluster's stacked observed vector to
    relative 1e-9, with ~30% of the outcome values missing; the PyMC prior terms equal the
    independent numpy LKJ-Cholesky density (after PyMC's constant) to 1e-9."""
    data = make_partly_missing(p, seed)
    res = checks.compare_logp(data, n_points=8, seed=seed)
    assert res.name == "compare_logp"
    assert res.passed, res.text
    assert res.details["rows_partly_missing"] > 0
    assert set(res.details["max_rel_err"]) == {"numpy", *family_named("multivariate").forms}
    assert max(res.details["max_rel_err"].values()) <= 1e-9
    assert max(res.details["prior_max_rel_err"].values()) <= 1e-9
    assert res.table.tau_over_sigma.min() == pytest.approx(1e-4)
    assert res.table.tau_over_sigma.max() == pytest.approx(1e2)


def test_compare_logp_fails_the_broken_multivariate_model(make_partly_missing):
    """V / n_bar where V belongs (Sigma + V for Sigma + n V) is another density: the check
    fails it (off by more than 1%) while passing sufficient."""
    data = make_partly_missing(2, 1)
    broken = BROKEN["multivariate"]
    res = checks.compare_logp(data, names=["sufficient"], builders={broken.name: broken.build},
                              n_points=6, seed=3)
    assert not res.passed
    assert res.details["failed"] == ["broken_V_not_scaled_by_n"]
    assert res.details["max_rel_err"]["broken_V_not_scaled_by_n"] > 1e-2
    assert res.details["max_rel_err"]["sufficient"] <= 1e-9


def test_numpy_lkj_cholesky_density_is_the_closed_form_for_p2():
    """For p = 2 the packed factor (s1, s2 r, s2 sqrt(1 - r^2)) of diag(s) R diag(s) has density
    HalfNormal(s1) HalfNormal(s2) Beta((r + 1) / 2; eta, eta) / 2 * sqrt(1 - r^2) / s2 (the
    inverse Jacobian |d(s1, s2, r) / dL| by hand); the complex-step route gives it to 1e-12."""
    for s1, s2, r, eta, scale in ((0.7, 1.9, -0.8, 2.0, (1.0, 2.0)), (3.0, 0.2, 0.3, 0.6,
                                                                     (0.5, 0.5))):
        packed = np.array([s1, s2 * r, s2 * math.sqrt(1 - r * r)])
        want = (stats.halfnorm(scale=scale[0]).logpdf(s1) + stats.halfnorm(scale=scale[1])
                .logpdf(s2) + stats.beta(eta, eta).logpdf((r + 1) / 2) - math.log(2)
                + 0.5 * math.log(1 - r * r) - math.log(s2))
        got = oracles._lkj_cholesky_logpdf(packed, 2, eta, np.array(scale))
        assert got == pytest.approx(want, rel=1e-12)


def test_pymc_lkj_normalising_constant_has_the_wrong_sign():
    """PyMC 5.28 adds +log c_p(eta) where the LKJ density needs -log c_p(eta): its LKJCorr(n=2,
    eta=1) has logp +log 2 although r is uniform on (-1, 1). compare_logp (its multivariate kit)
    removes exactly this constant (2 log c per LKJ term) before comparing priors. If this test
    fails, PyMC has fixed it: drop the note in DEVELOPERS.md (the prior check then needs no
    offset)."""
    import pymc as pm

    assert float(pm.logp(pm.LKJCorr.dist(n=2, eta=1.0), np.array([0.3])).eval()) == \
        pytest.approx(math.log(2), rel=1e-8)
    pri = MvPriors(mu_loc=(0.0, 0.0, 0.0), mu_scale=(1.0,) * 3, tau_scale=(1.0,) * 3,
                   sigma_scale=(1.0,) * 3, eta_between=2.0, eta_within=3.5)
    want = 2 * (oracles._lkj_log_norm(3, 2.0) + oracles._lkj_log_norm(3, 3.5))
    assert oracles.pymc_lkj_constant_offset(pri) == pytest.approx(want, rel=1e-6)



def test_lkj_constant_of_the_production_code_is_the_known_volume():
    """``models.priors.lkj_log_norm`` (the compiled multivariate form's constant and the log
    prior of the pointwise densities): c_p(1) is the volume of the p x p correlation matrices,
    2 for p = 2 and pi^2 / 2 for p = 3; c_2(eta) = 2^(2 eta - 1) B(eta, eta); and it equals
    the oracle's own copy for p up to 5."""
    from scipy.special import betaln

    from varcomp.models.priors import lkj_log_norm

    assert lkj_log_norm(2, 1.0) == pytest.approx(math.log(2.0), rel=1e-14)
    assert lkj_log_norm(3, 1.0) == pytest.approx(math.log(math.pi ** 2 / 2), rel=1e-14)
    assert lkj_log_norm(2, 3.5) == pytest.approx(6.0 * math.log(2.0) + betaln(3.5, 3.5),
                                                 rel=1e-14)
    for p in range(2, 6):
        for eta in (0.5, 1.0, 2.0, 7.5):
            assert lkj_log_norm(p, eta) == pytest.approx(oracles._lkj_log_norm(p, eta), rel=1e-14)

# ------------------------------------------------------------------------ prior draws, loglik
def test_lkj_and_prior_draws_have_the_right_marginals():
    """C-vine LKJ draws: for p = 2, (r + 1) / 2 ~ Beta(eta, eta); for p = 3 every r_ij (incl.
    r_23, built by the vine recursion) has (r + 1) / 2 ~ Beta(eta - 1 + p/2, same). The prior
    draw's sds are HalfNormal(scale) and its mu Normal. Kolmogorov-Smirnov p > 1e-4 for each
    of the 7 tests (family-wise false-alarm rate < 1e-3; the seed is fixed)."""
    rng = np.random.default_rng(7)
    n = 3000
    r2 = np.array([oracles.lkj_corr_draw(2, 2.0, rng)[0, 1] for _ in range(n)])
    assert stats.kstest((r2 + 1) / 2, stats.beta(2.0, 2.0).cdf).pvalue > 1e-4
    R3 = np.array([oracles.lkj_corr_draw(3, 1.5, rng) for _ in range(n)])
    assert np.allclose(np.diagonal(R3, axis1=1, axis2=2), 1.0)
    assert (np.linalg.eigvalsh(R3)[:, 0] > 0).all()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert stats.kstest((R3[:, i, j] + 1) / 2, stats.beta(2.0, 2.0).cdf).pvalue > 1e-4
    pri = MvPriors(mu_loc=(1.0, -1.0), mu_scale=(2.0, 0.5), tau_scale=(3.0, 1.0),
                   sigma_scale=(1.0, 0.2))
    draws = [oracles.mv_prior_draw(pri, rng) for _ in range(n)]
    tau0 = np.sqrt([d["V"][0, 0] for d in draws])
    sig1 = np.sqrt([d["Sigma"][1, 1] for d in draws])
    mu1 = np.array([d["mu"][1] for d in draws])
    assert stats.kstest(tau0, stats.halfnorm(scale=3.0).cdf).pvalue > 1e-4
    assert stats.kstest(sig1, stats.halfnorm(scale=0.2).cdf).pvalue > 1e-4
    assert stats.kstest(mu1, stats.norm(-1.0, 0.5).cdf).pvalue > 1e-4


def test_vectorised_loglik_equals_the_scalar_form_and_scipy(make_partly_missing):
    """SBC's test quantity log p(X | mu, V, Sigma), vectorised over draws, equals
    marginal_loglik and scipy's stacked MvNormal draw by draw (missing rows included)."""
    data = make_partly_missing(2, 4)
    st = mvstats.pattern_stats(data)
    rng = np.random.default_rng(1)
    pri = MvPriors.default(data)
    thetas = [oracles.mv_prior_draw(pri, rng) for _ in range(5)]
    mu = np.stack([t["mu"] for t in thetas])
    V = np.stack([t["V"] for t in thetas])
    S = np.stack([t["Sigma"] for t in thetas])
    got = mvstats.loglik_draws(st, mu, V, S)
    assert got.shape == (5,)
    for k, t in enumerate(thetas):
        assert got[k] == pytest.approx(mvstats.marginal_loglik(st, t["mu"], t["V"], t["Sigma"]),
                                       rel=1e-12)
        assert got[k] == pytest.approx(oracles.scipy_loglik_mv(data, t["mu"], t["V"],
                                                               t["Sigma"]), rel=1e-9)


def test_sbc_quantities_are_the_draws_summaries():
    """SBC's quantities of (mu, V, Sigma): mu[k], the variances V[k,k] and Sigma[k,k], icc[k] and
    both correlations, read off matrices built from known sds and correlations; on a stack of
    draws each quantity is the vector of the draws' own values (no axis mixed up)."""
    s_b, s_w, r_b, r_w = np.array([2.0, 3.0]), np.array([0.5, 4.0]), 0.6, -0.25
    V = np.outer(s_b, s_b) * np.array([[1.0, r_b], [r_b, 1.0]])
    Sigma = np.outer(s_w, s_w) * np.array([[1.0, r_w], [r_w, 1.0]])
    q = mv_quantities({"mu": np.array([1.5, -7.0]), "V": V, "Sigma": Sigma})
    assert list(q) == ["mu[0]", "mu[1]", "V[0,0]", "V[1,1]", "Sigma[0,0]", "Sigma[1,1]",
                       "icc[0]", "icc[1]", "corr_between[0,1]", "corr_within[0,1]"]
    want = [1.5, -7.0, 4.0, 9.0, 0.25, 16.0, 4.0 / 4.25, 9.0 / 25.0, r_b, r_w]
    np.testing.assert_allclose([float(v) for v in q.values()], want, rtol=1e-14)
    rng = np.random.default_rng(2)
    draws = [oracles.mv_prior_draw(SBC_MV_PRIORS, rng) for _ in range(50)]
    stacked = mv_quantities({k: np.stack([d[k] for d in draws]) for k in ("mu", "V", "Sigma")})
    for i in (0, 17, 49):
        one = mv_quantities(draws[i])
        for label, values in stacked.items():
            assert values.shape == (50,)
            assert values[i] == pytest.approx(float(one[label]), rel=1e-14), label


def _twice_plus_one(data):
    """Data of the same design (clusters, sizes, missing cells): 1 + 2 y."""
    frame = data.to_frame()
    cols = list(data.responses)
    frame[cols] = 1.0 + 2.0 * frame[cols]
    return type(data).from_frame(frame, group=data.group_name, response=cols)


class _RecordingCompiled:
    """Stands in for a nutpie model: records the data ``with_data`` receives."""

    def with_data(self, **values):
        self.values = values
        return self


def _swapper(form, template):
    """A DataSwapper whose compiled model is a recorder (the design check, without compiling)."""
    from varcomp.models.sampling import DataSwapper, _design_signature

    swap = DataSwapper.__new__(DataSwapper)
    swap.form, swap.backend, swap.compiled = form, "numba", _RecordingCompiled()
    swap.shapes = {k: np.shape(v) for k, v in form.data_values(template).items()}
    swap.design = _design_signature(template)
    return swap


def test_data_swapper_takes_same_design_data_and_refuses_others(make_partly_missing):
    """One compiled model per design: data with the template's missing cells are swapped in
    (their statistics scaled as the data are: the scatter by 4), data missing other cells
    (another set of row patterns) are refused."""
    data = make_partly_missing(2, 5)
    swap = _swapper(MV.form("sufficient"), data)
    design = mvstats.pattern_stats(data)
    got = swap(_twice_plus_one(data)).values
    np.testing.assert_allclose(got["pattern_scatter"], 4.0 * design.scatter, rtol=1e-12)
    complete = data.to_frame()
    cols = list(data.responses)
    complete[cols] = complete[cols].fillna(0.0)
    with pytest.raises(ValueError, match="design"):
        swap(type(data).from_frame(complete, group=data.group_name, response=cols))


def test_data_swapper_refuses_the_same_patterns_in_other_clusters(make_partly_missing):
    """The multivariate sufficient graph holds each cluster's rows per pattern (``n``, a
    constant); moving a missing cell to a row of another cluster keeps every container's shape
    but changes the design, so the compiled density would be wrong: it must be refused (the
    old ``data_updates_mv`` compared ``n`` too)."""
    data = make_partly_missing(2, 5)
    swap = _swapper(MV.form("sufficient"), data)
    y = data.y.copy()
    st = mvstats.pattern_stats(data)
    q = 1  # an incomplete pattern: move one of its rows' missing cell to a complete row of
    row = int(np.flatnonzero(st.row_pattern == q)[0])  # another cluster
    other = int(np.flatnonzero((st.row_pattern == 0) & (data.codes != data.codes[row]))[0])
    y[other], y[row] = np.where(np.isfinite(y[row]), y[other], np.nan), y[other]
    moved = type(data)(y=y, codes=data.codes, groups=data.groups, responses=data.responses,
                       group_name=data.group_name, source=data.source)
    assert not np.array_equal(mvstats.pattern_stats(moved).n, st.n)
    with pytest.raises(ValueError, match="design"):
        swap(moved)


def test_data_swapper_compiles_once_and_reads_each_data_set():
    """``DataSwapper`` (PyTensor's C backend, cached on disk): the one compiled model, given
    data of the template's design, evaluates the density of the model built on those data;
    another number of clusters is refused."""
    from varcomp.models.priors import Priors
    from varcomp.models.sampling import DataSwapper
    from varcomp.models.simulate import simulate_univariate

    form = family_named("oneway").form("sufficient")
    a = simulate_univariate(4, [2, 3, 3, 5], rng=1).data()
    b = simulate_univariate(4, [2, 3, 3, 5], mu=3.0, rng=2).data()
    priors = Priors.default(a)
    swap = DataSwapper(form, a, priors, backend="c")
    x = np.array([0.1, -0.2, 0.3])
    for data in (b, a):
        value, grad = swap(data)._make_logp_func()(x)
        model = form.build(data, priors=priors)
        point = dict(zip([v.name for v in model.value_vars], x, strict=True))
        assert value == pytest.approx(float(model.compile_logp(mode="FAST_COMPILE")(point)),
                                      rel=1e-12)
        np.testing.assert_allclose(grad, model.compile_dlogp(mode="FAST_COMPILE")(point),
                                   rtol=1e-10)
    with pytest.raises(ValueError, match="design"):
        swap(simulate_univariate(5, [2, 3, 3, 5, 1], rng=2).data())


# ------------------------------------------------------------------------ posterior comparison
def test_mv_posteriors_agree_and_compare_every_summary(fake_mv_fit):
    """Two fits drawing from one bivariate posterior agree. Compared (the family's
    compare_vars, what analyses.fit passes for p > 1): mu[k], the upper triangles of V and
    Sigma, icc[k] and the off-diagonal correlations, 12 scalars x 4 statistics = 48
    comparisons; each falsely fails with probability 6.3e-5 (|z| > 4), so 0.3% for the pair
    (the seed is fixed)."""
    rng = np.random.default_rng(11)
    res = checks.compare_posteriors([fake_mv_fit("a", rng), fake_mv_fit("b", rng)],
                                    var_names=MV.compare_vars)
    assert res.passed, res.text
    assert res.details["status"] == {"a": "agrees", "b": "agrees"}
    assert len(res.table) == 48
    assert set(res.table.param) == {"mu[a]", "mu[b]", "V[a,a]", "V[a,b]", "V[b,b]",
                                    "Sigma[a,a]", "Sigma[a,b]", "Sigma[b,b]", "icc[a]", "icc[b]",
                                    "corr_between[a,b]", "corr_within[a,b]"}
    assert np.isfinite(res.table.z).all() and res.table.z.abs().max() < 4


def test_mv_posterior_with_shifted_correlation_disagrees(fake_mv_fit):
    """A within-cluster correlation moved by 0.05 on the atanh scale (about 1/2 posterior sd)
    differs by ~15 MCSEs with 4000 independent draws: the comparison fails, on corr_within
    (and Sigma[a,b], which carries it) only."""
    rng = np.random.default_rng(12)
    res = checks.compare_posteriors({"a": fake_mv_fit("a", rng),
                                     "b": fake_mv_fit("b", rng, shift_corr_within=0.05)},
                                    var_names=MV.compare_vars)
    assert not res.passed
    assert res.details["status"]["b"] == "DISAGREES"
    bad = set(res.table[res.table.verdict == "DIFFERS"].param)
    assert "corr_within[a,b]" in bad and bad <= {"corr_within[a,b]", "Sigma[a,b]"}


# ------------------------------------------------------------------------ nutpie / LKJ start
def test_default_mv_priors_initialise_in_nutpie():
    """nutpie 0.16.8 cannot generate initial points for an LKJCholeskyCov whose sd_dist is a
    HalfStudentT ("cannot set WRITEABLE flag", with 2 chains, both compile backends): MvPriors
    uses HalfNormal sds. The default-prior model must start and take draws in 2 chains
    (cached C backend: seconds)."""
    from varcomp.models.compiled.nutpie import compile_pymc
    from varcomp.models.sampling import quiet, sample_compiled

    sim = simulate_multivariate(5, 4, [1.0, 2.0], V_NOTES, SIGMA_NOTES, 3)
    model = MV.form("sufficient").build(sim.data())
    sd_dist = model["chol_V_std"].owner.inputs[-1]
    assert "halfnormal" in str(sd_dist.owner.op).lower()
    with quiet():
        idata = sample_compiled(compile_pymc(model, backend="c"), draws=20, tune=20, chains=2,
                                cores=1, seed=1)
    V = idata.posterior["V"].values
    assert V.shape == (2, 20, 2, 2) and np.isfinite(V).all()
    assert (np.linalg.eigvalsh(V)[..., 0] > 0).all()


# ------------------------------------------------------------------------ SBC and fits (slow)
@pytest.mark.slow
def test_sbc_mv_sufficient_calibrated(tmp_path):
    """Talts et al. (2018) for the multivariate sufficient form: 100 simulations of 8 clusters
    x 5 rows, p = 2, 10% of the cells missing (fixed design), prior draws from MvPriors' numpy
    twin; ranks of mu[k], V[k,k], Sigma[k,k], icc[k], both correlations and log p(X | theta)
    among 200 thinned draws are uniform: ECDF test at 0.05 / 11 per quantity (family-wise
    false-alarm rate <= 5%; the seed is fixed)."""
    t0 = time.perf_counter()
    res = checks.sbc(checks.MultivariateSBC(L=8, n=5, missing=0.1), n_sims=100, seed=11)
    checks.plot_sbc(res, tmp_path / "sbc_mv.png")
    print(f"SBC mv sufficient: {time.perf_counter() - t0:.0f} s; {res.text}")
    assert res.ranks.shape == (100, 11) and res.ranks.to_numpy().max() <= res.n_ranks == 200
    assert (tmp_path / "sbc_mv.png").stat().st_size > 0
    assert res.passed, res.text


@pytest.mark.slow
def test_sbc_mv_fails_the_broken_model():
    """Fitting Sigma + V where Sigma + 5 V belongs (30 clusters of 5 complete rows) inflates the
    posterior of V about fivefold: the ranks of the between-cluster variances pile up at 0 and
    30 simulations reject uniformity at 0.05 / 11 per quantity."""
    res = checks.sbc(checks.MultivariateSBC("broken_V_not_scaled_by_n", L=30, n=5), n_sims=30,
                     draws=200, tune=200, thin=4, seed=2)
    print(res.text)
    assert not res.passed
    alpha_q = res.details["alpha_per_quantity"]
    assert res.pvalues["V[0,0]"] < alpha_q and res.pvalues["V[1,1]"] < alpha_q


@pytest.mark.slow
def test_fit_compares_multivariate_forms_end_to_end():
    """analyses.fit.fit on bivariate data with two forms runs the posterior comparison on the
    multivariate summaries (what ``varcomp fit gcsemv --model all`` gets): sufficient and
    centred agree (false-alarm rate 0.3% for the 48 comparisons of the pair)."""
    from varcomp.analyses.fit import fit

    rng = np.random.default_rng(4)
    sim = simulate_multivariate(20, 6, [10.0, 20.0], V_NOTES, SIGMA_NOTES, rng)
    data = Simulated(drop_components(sim.frame, 0.15, rng), sim.effects, sim.params).data()
    result = fit(data, model=["sufficient", "centred"], draws=1000, tune=1000, chains=2, seed=3)
    cmp = result.comparison
    assert all(f.ok for f in result.fits.values()), {n: f.diagnostics["problems"]
                                                     for n, f in result.fits.items()}
    assert {"corr_within[y1,y2]", "V[y1,y2]", "icc[y2]"} <= set(cmp.table.param)
    assert len(cmp.table) == 48
    assert cmp.passed, cmp.text
    assert result.summary["comparison"]["passed"]
