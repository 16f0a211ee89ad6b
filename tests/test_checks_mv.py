"""The checks of the multivariate forms: exact densities, posterior comparison, SBC, LKJ start."""

from __future__ import annotations

import math
import time

import arviz as az
import numpy as np
import pytest
from scipy import stats

from models import checks, checks_mv
from models import multivariate as mv
from models.priors import MvPriors
from models.sampling import Fit
from models.simulate import Simulated
from models.simulate_mv import drop_components, simulate_multivariate

V_NOTES = np.array([[4.0, 3.0], [3.0, 4.0]])
SIGMA_NOTES = np.array([[0.25, -0.24], [-0.24, 0.36]])


def partly_missing(p, seed, L=6, prob=0.3):
    """Small unbalanced clusters (sizes 1..6) with outcomes missing completely at random."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(p, p))
    b = rng.normal(size=(p, p))
    sim = simulate_multivariate(L, rng.integers(1, 7, size=L), rng.normal(50.0, 10.0, size=p),
                                9.0 * (a @ a.T / p + 0.3 * np.eye(p)),
                                4.0 * (b @ b.T / p + 0.3 * np.eye(p)), rng)
    return Simulated(drop_components(sim.frame, prob, rng), sim.effects, sim.params).data()


def twin(d, priors):
    return checks_mv.build_data_model_mv("sufficient", d, priors=priors)


# ------------------------------------------------------------------------ exact log densities
@pytest.mark.parametrize("p, seed", [(2, 0), (3, 2)])
def test_four_forms_and_scipy_agree_exactly_including_missing_rows(p, seed):
    """compare_logp (dispatching to compare_logp_mv for p > 1): at 8 random (mu, V, Sigma) with
    tau/sigma over 1e-4..1e2, the four forms, the pm.Data twin of sufficient and the numpy
    information form equal scipy's MvNormal of each cluster's stacked observed vector to
    relative 1e-9, with ~30% of the outcome values missing; the PyMC prior terms equal the
    independent numpy LKJ-Cholesky density (after PyMC's constant) to 1e-9."""
    data = partly_missing(p, seed)
    res = checks.compare_logp(data, n_points=8, seed=seed, builders={"twin": twin})
    assert res.name == "compare_logp_mv"
    assert res.passed, res.text
    assert res.details["rows_partly_missing"] > 0
    assert set(res.details["max_rel_err"]) == {"numpy", "centred", "noncentred", "marginal",
                                               "sufficient", "twin"}
    assert max(res.details["max_rel_err"].values()) <= 1e-9
    assert max(res.details["prior_max_rel_err"].values()) <= 1e-9
    assert res.table.tau_over_sigma.min() == pytest.approx(1e-4)
    assert res.table.tau_over_sigma.max() == pytest.approx(1e2)


def test_compare_logp_mv_fails_the_broken_model():
    """V / n_bar where V belongs (Sigma + V for Sigma + n V) is another density: the check
    fails it (off by more than 1%) while passing sufficient."""
    data = partly_missing(2, 1)
    res = checks_mv.compare_logp_mv(data, names=["sufficient"], builders=checks_mv.BROKEN_MV,
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
        got = checks_mv._lkj_cholesky_logpdf(packed, 2, eta, np.array(scale))
        assert got == pytest.approx(want, rel=1e-12)


def test_pymc_lkj_normalising_constant_has_the_wrong_sign():
    """PyMC 5.28 adds +log c_p(eta) where the LKJ density needs -log c_p(eta): its LKJCorr(n=2,
    eta=1) has logp +log 2 although r is uniform on (-1, 1). compare_logp_mv removes exactly
    this constant (2 log c per LKJ term) before comparing priors. If this test fails, PyMC has
    fixed it: drop the note in DEVELOPERS.md (the prior check then needs no offset)."""
    import pymc as pm

    assert float(pm.logp(pm.LKJCorr.dist(n=2, eta=1.0), np.array([0.3])).eval()) == \
        pytest.approx(math.log(2), rel=1e-8)
    pri = MvPriors(mu_loc=(0.0, 0.0, 0.0), mu_scale=(1.0,) * 3, tau_scale=(1.0,) * 3,
                   sigma_scale=(1.0,) * 3, eta_between=2.0, eta_within=3.5)
    want = 2 * (checks_mv._lkj_log_norm(3, 2.0) + checks_mv._lkj_log_norm(3, 3.5))
    assert checks_mv.pymc_lkj_constant_offset(pri) == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------------ prior draws, loglik
def test_lkj_and_prior_draws_have_the_right_marginals():
    """C-vine LKJ draws: for p = 2, (r + 1) / 2 ~ Beta(eta, eta); for p = 3 every r_ij (incl.
    r_23, built by the vine recursion) has (r + 1) / 2 ~ Beta(eta - 1 + p/2, same). The prior
    draw's sds are HalfNormal(scale) and its mu Normal. Kolmogorov-Smirnov p > 1e-4 for each
    of the 7 tests (family-wise false-alarm rate < 1e-3; the seed is fixed)."""
    rng = np.random.default_rng(7)
    n = 3000
    r2 = np.array([checks_mv.lkj_corr_draw(2, 2.0, rng)[0, 1] for _ in range(n)])
    assert stats.kstest((r2 + 1) / 2, stats.beta(2.0, 2.0).cdf).pvalue > 1e-4
    R3 = np.array([checks_mv.lkj_corr_draw(3, 1.5, rng) for _ in range(n)])
    assert np.allclose(np.diagonal(R3, axis1=1, axis2=2), 1.0)
    assert (np.linalg.eigvalsh(R3)[:, 0] > 0).all()
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert stats.kstest((R3[:, i, j] + 1) / 2, stats.beta(2.0, 2.0).cdf).pvalue > 1e-4
    pri = MvPriors(mu_loc=(1.0, -1.0), mu_scale=(2.0, 0.5), tau_scale=(3.0, 1.0),
                   sigma_scale=(1.0, 0.2))
    draws = [checks_mv.mv_prior_draw(pri, rng) for _ in range(n)]
    tau0 = np.sqrt([d["V"][0, 0] for d in draws])
    sig1 = np.sqrt([d["Sigma"][1, 1] for d in draws])
    mu1 = np.array([d["mu"][1] for d in draws])
    assert stats.kstest(tau0, stats.halfnorm(scale=3.0).cdf).pvalue > 1e-4
    assert stats.kstest(sig1, stats.halfnorm(scale=0.2).cdf).pvalue > 1e-4
    assert stats.kstest(mu1, stats.norm(-1.0, 0.5).cdf).pvalue > 1e-4


def test_vectorised_loglik_equals_the_scalar_form_and_scipy():
    """SBC's test quantity log p(X | mu, V, Sigma), vectorised over draws, equals
    marginal_loglik and scipy's stacked MvNormal draw by draw (missing rows included)."""
    data = partly_missing(2, 4)
    st = mv.pattern_stats(data)
    rng = np.random.default_rng(1)
    pri = MvPriors.default(data)
    thetas = [checks_mv.mv_prior_draw(pri, rng) for _ in range(5)]
    mu = np.stack([t["mu"] for t in thetas])
    V = np.stack([t["V"] for t in thetas])
    S = np.stack([t["Sigma"] for t in thetas])
    got = checks_mv.mv_loglik_draws(st, mu, V, S)
    assert got.shape == (5,)
    for k, t in enumerate(thetas):
        assert got[k] == pytest.approx(mv.marginal_loglik(st, t["mu"], t["V"], t["Sigma"]),
                                       rel=1e-12)
        assert got[k] == pytest.approx(checks_mv.scipy_loglik_mv(data, t["mu"], t["V"],
                                                                 t["Sigma"]), rel=1e-9)


def test_sbc_quantities_and_ranks():
    """The SBC quantities of a p = 2 draw: mu, diagonal variances, icc and both correlations
    (10) with the draws' shapes; ranks of the truth lie in 0..M."""
    rng = np.random.default_rng(2)
    theta = checks_mv.mv_prior_draw(checks_mv.SBC_MV_PRIORS, rng)
    q = checks_mv._sbc_quantities(theta)
    assert list(q) == ["mu[0]", "mu[1]", "V[0,0]", "V[1,1]", "Sigma[0,0]", "Sigma[1,1]",
                       "icc[0]", "icc[1]", "corr_between[0,1]", "corr_within[0,1]"]
    assert q["icc[1]"] == pytest.approx(theta["V"][1, 1] / (theta["V"][1, 1]
                                                            + theta["Sigma"][1, 1]))
    M = 50
    draws = [checks_mv.mv_prior_draw(checks_mv.SBC_MV_PRIORS, rng) for _ in range(M)]
    stacked = {k: np.stack([d[k] for d in draws]) for k in ("mu", "V", "Sigma")}
    qd = checks_mv._sbc_quantities(stacked)
    assert all(v.shape == (M,) for v in qd.values())
    ranks = {k: int(np.sum(qd[k] < q[k])) for k in q}
    assert all(0 <= r <= M for r in ranks.values())
    assert -1 < q["corr_within[0,1]"] < 1


def test_data_model_refuses_another_design():
    """The pm.Data twin holds the design (patterns, counts) in its graph: new data with the
    template's missing cells are accepted, data missing other cells are refused."""
    data = partly_missing(2, 5)
    design = mv.pattern_stats(data)
    frame = data.to_frame()
    cols = list(data.responses)
    same = frame.copy()
    same[cols] = same[cols] * 2.0 + 1.0
    upd = checks_mv.data_updates_mv("sufficient", type(data).from_frame(
        same, group="group", response=cols), design)
    np.testing.assert_allclose(upd["pattern_scatter"], 4.0 * design.scatter, rtol=1e-12)
    other = frame.copy()
    other[cols] = other[cols].fillna(0.0)
    with pytest.raises(ValueError, match="design"):
        checks_mv.data_updates_mv("sufficient", type(data).from_frame(
            other, group="group", response=cols), design)


# ------------------------------------------------------------------------ posterior comparison
def _fake_mv_fit(name, rng, *, shift_corr_within=0.0, chains=4, draws=1000):
    """Independent draws (ESS = draws) of a bivariate posterior: mu, and V, Sigma built from
    log-normal sds and tanh-normal correlations; the Deterministics as the models define them."""
    size = (chains, draws)
    mu = np.stack([rng.normal(10.0, 0.3, size), rng.normal(20.0, 0.3, size)], axis=-1)
    mats = {}
    for nm, sd0, r0 in (("V", 2.0, 0.7), ("Sigma", 0.5, -0.8)):
        s = np.exp(rng.normal(math.log(sd0), 0.1, size + (2,)))
        r = np.tanh(rng.normal(math.atanh(r0), 0.1, size))
        if nm == "Sigma":
            r = np.tanh(np.arctanh(r) + shift_corr_within)
        R = np.ones(size + (2, 2))
        R[..., 0, 1] = R[..., 1, 0] = r
        mats[nm] = s[..., :, None] * R * s[..., None, :]
    V, S = mats["V"], mats["Sigma"]
    tau = np.sqrt(np.diagonal(V, axis1=-2, axis2=-1))
    sigma = np.sqrt(np.diagonal(S, axis1=-2, axis2=-1))
    post = {"mu": mu, "V": V, "Sigma": S, "tau": tau, "sigma": sigma,
            "icc": tau**2 / (tau**2 + sigma**2),
            "corr_between": V / (tau[..., :, None] * tau[..., None, :]),
            "corr_within": S / (sigma[..., :, None] * sigma[..., None, :])}
    dims = {"mu": ["outcome"], "tau": ["outcome"], "sigma": ["outcome"], "icc": ["outcome"]}
    dims.update({k: ["outcome", "outcome_bis"] for k in ("V", "Sigma", "corr_between",
                                                          "corr_within")})
    coords = {"outcome": ["a", "b"], "outcome_bis": ["a", "b"]}
    idata = az.from_dict(posterior=post, dims=dims, coords=coords,
                         sample_stats={"diverging": np.zeros(size, dtype=bool)})
    return Fit(name, idata, {}, {}, {})


def test_mv_posteriors_agree_and_compare_every_summary():
    """Two fits drawing from one bivariate posterior agree. Compared by default (what
    analyses.fit passes for p > 1): mu[k], the upper triangles of V and Sigma, icc[k] and the
    off-diagonal correlations, 12 scalars x 4 statistics = 48 comparisons; each falsely fails
    with probability 6.3e-5 (|z| > 4), so 0.3% for the pair (the seed is fixed)."""
    rng = np.random.default_rng(11)
    res = checks.compare_posteriors([_fake_mv_fit("a", rng), _fake_mv_fit("b", rng)])
    assert res.passed, res.text
    assert res.details["status"] == {"a": "agrees", "b": "agrees"}
    assert len(res.table) == 48
    assert set(res.table.param) == {"mu[a]", "mu[b]", "V[a,a]", "V[a,b]", "V[b,b]",
                                    "Sigma[a,a]", "Sigma[a,b]", "Sigma[b,b]", "icc[a]", "icc[b]",
                                    "corr_between[a,b]", "corr_within[a,b]"}
    assert np.isfinite(res.table.z).all() and res.table.z.abs().max() < 4


def test_mv_posterior_with_shifted_correlation_disagrees():
    """A within-cluster correlation moved by 0.05 on the atanh scale (about 1/2 posterior sd)
    differs by ~15 MCSEs with 4000 independent draws: the comparison fails, on corr_within
    (and Sigma[a,b], which carries it) only."""
    rng = np.random.default_rng(12)
    res = checks.compare_posteriors({"a": _fake_mv_fit("a", rng),
                                     "b": _fake_mv_fit("b", rng, shift_corr_within=0.05)})
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
    import nutpie

    from models.compile_cache import compile_nutpie
    from models.sampling import _quiet

    sim = simulate_multivariate(5, 4, [1.0, 2.0], V_NOTES, SIGMA_NOTES, 3)
    model = mv.build_sufficient(sim.data())
    sd_dist = model["chol_V_std"].owner.inputs[-1]
    assert "halfnormal" in str(sd_dist.owner.op).lower()
    with _quiet():
        idata = nutpie.sample(compile_nutpie(model, backend="c"), draws=20, tune=20, chains=2,
                              cores=1, seed=1, progress_bar=False)
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
    res = checks_mv.sbc_mv(100, L=8, n=5, missing=0.1, seed=11)
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
    res = checks_mv.sbc_mv(30, form="broken_V_not_scaled_by_n", L=30, n=5, draws=200, tune=200,
                           thin=4, seed=2)
    print(res.text)
    assert not res.passed
    alpha_q = res.details["alpha_per_quantity"]
    assert res.pvalues["V[0,0]"] < alpha_q and res.pvalues["V[1,1]"] < alpha_q


@pytest.mark.slow
def test_fit_compares_multivariate_forms_end_to_end():
    """analyses.fit.fit on bivariate data with two forms runs the posterior comparison on the
    multivariate summaries (what ``varcomp fit gcsemv --model all`` gets): sufficient and
    centred agree (false-alarm rate 0.3% for the 48 comparisons of the pair)."""
    from analyses.fit import fit

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
