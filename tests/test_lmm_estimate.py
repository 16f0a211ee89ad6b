"""ML/REML of random-intercepts mixed models: lme4's optima, statsmodels, a brute-force density."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from varcomp.models.lmm_estimate import LmmEstimate, _evaluate, _optimise, _prepare, fit_lmm

DATA = Path(__file__).resolve().parents[1] / "data"


def codes(values) -> np.ndarray:
    return pd.factorize(pd.Series(values))[0]


def ones(n: int) -> np.ndarray:
    return np.ones((n, 1))


def within_printed(value: float, printed: float, decimals: int) -> bool:
    """Rounding ``value`` to ``decimals`` could print ``printed`` (half a unit, plus rounding)."""
    return abs(value - printed) <= 0.5 * 10.0**-decimals * (1 + 1e-9)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


# --- 1. lme4's published optima ------------------------------------------------------------------


def test_dyestuff_matches_lme4_and_the_balanced_closed_form():
    """Dyestuff, Yield ~ 1 + (1|Batch): lme4's deviance 327.3270598811 and REML criterion
    319.6542768423 to 1e-8 relative; tau, sigma, intercept to lme4's printed digits; and, because
    the design is balanced, tau^2 and sigma^2 equal the closed forms from the ANOVA mean squares
    (MSB 11271.5, MSW 2451.25; ML tau^2 = ((L-1)/L MSB - MSW)/n, REML (MSB - MSW)/n) to 1e-10."""
    df = pd.read_csv(DATA / "dyestuff.csv")
    args = (df["Yield"], ones(30), [codes(df["Batch"])])
    ml = fit_lmm(*args, reml=False, terms=["(Intercept)"], names=["Batch"])
    reml = fit_lmm(*args, terms=["(Intercept)"], names=["Batch"])
    assert ml.method == "ml" and reml.method == "reml"
    assert rel(ml.criterion, 327.3270598811) < 1e-8
    assert rel(reml.criterion, 319.6542768423) < 1e-8
    assert within_printed(reml.tau["Batch"], 42.0006, 4)
    assert within_printed(reml.sigma, 49.5101, 4)
    assert within_printed(ml.tau["Batch"], 37.2603, 4)
    assert within_printed(ml.sigma, 49.5101, 4)
    assert rel([reml.beta["(Intercept)"], ml.beta["(Intercept)"]], 1527.5) < 1e-12
    msb, msw, n, L = 11271.5, 2451.25, 5, 6
    assert rel(ml.tau["Batch"] ** 2, ((L - 1) / L * msb - msw) / n) < 1e-10
    assert rel(ml.sigma**2, msw) < 1e-10
    assert rel(reml.tau["Batch"] ** 2, (msb - msw) / n) < 1e-10
    assert rel(reml.sigma**2, msw) < 1e-10
    assert reml.boundary == {"Batch": False}


def test_dyestuff2_is_a_boundary_fit():
    """Dyestuff2 (between-batch mean square below the within one): tau = 0 exactly, flagged, and
    the criterion is the linear model's (theta = 0): lme4's REML criterion 161.8283, sigma 3.716."""
    df = pd.read_csv(DATA / "dyestuff2.csv")
    y = df["Yield"].to_numpy()
    for reml in (True, False):
        e = fit_lmm(y, ones(30), [codes(df["Batch"])], reml=reml, names=["Batch"])
        assert e.tau == {"Batch": 0.0} and e.boundary == {"Batch": True}
        rss, dof = float(((y - y.mean()) ** 2).sum()), 29 if reml else 30
        ols = dof * (1 + math.log(2 * math.pi * rss / dof)) + (math.log(30) if reml else 0.0)
        assert rel(e.criterion, ols) < 1e-12
    e = fit_lmm(y, ones(30), [codes(df["Batch"])])
    assert within_printed(e.criterion, 161.8283, 4) and within_printed(e.sigma, 3.716, 3)


def test_pastes_nested_matches_lme4_and_the_anova():
    """Pastes, strength ~ 1 + (1|batch/cask) as factors batch and batch:cask: lme4's REML sds
    2.9041 (cask), 1.2874 (batch), 0.8234 (residual) and intercept 60.0533 to the printed digits;
    balanced nested design, so REML equals the nested ANOVA estimates to 1e-9."""
    df = pd.read_csv(DATA / "pastes.csv")
    y = df["strength"].to_numpy()
    e = fit_lmm(y, ones(60), [codes(df["batch"]), codes(df["sample"])], names=["batch", "cask"],
                terms=["(Intercept)"])
    assert within_printed(e.tau["cask"], 2.9041, 4) and within_printed(e.tau["batch"], 1.2874, 4)
    assert within_printed(e.sigma, 0.8234, 4) and within_printed(e.beta["(Intercept)"], 60.0533, 4)
    cask_mean = df.groupby("sample")["strength"].transform("mean").to_numpy()
    batch_mean = df.groupby("batch")["strength"].transform("mean").to_numpy()
    ms_w = float(((y - cask_mean) ** 2).sum()) / 30  # 30 casks x (2 - 1)
    ms_c = float(((cask_mean - batch_mean) ** 2).sum()) / 20  # 10 batches x (3 - 1)
    ms_b = float(((batch_mean - y.mean()) ** 2).sum()) / 9
    assert rel(e.sigma**2, ms_w) < 1e-9
    assert rel(e.tau["cask"] ** 2, (ms_c - ms_w) / 2) < 1e-9
    assert rel(e.tau["batch"] ** 2, (ms_b - ms_c) / 6) < 1e-9


def test_penicillin_crossed_matches_lme4_and_the_anova():
    """Penicillin, diameter ~ 1 + (1|plate) + (1|sample), crossed: lme4's REML sds 0.8467 (plate),
    1.9316 (sample), 0.5499 (residual), intercept 22.9722 to the printed digits; the design is a
    complete 24 x 6 table, so REML equals the two-way ANOVA estimates to 1e-9."""
    df = pd.read_csv(DATA / "penicillin.csv")
    assert df.shape == (144, 3)
    y = df["diameter"].to_numpy(dtype=float)
    e = fit_lmm(y, ones(144), [codes(df["plate"]), codes(df["sample"])],
                names=["plate", "sample"], terms=["(Intercept)"])
    assert within_printed(e.tau["plate"], 0.8467, 4) and within_printed(e.tau["sample"], 1.9316, 4)
    assert within_printed(e.sigma, 0.5499, 4) and within_printed(e.beta["(Intercept)"], 22.9722, 4)
    plate = df.groupby("plate")["diameter"].transform("mean").to_numpy()
    sample = df.groupby("sample")["diameter"].transform("mean").to_numpy()
    ms_e = float(((y - plate - sample + y.mean()) ** 2).sum()) / (23 * 5)
    ms_p = float(((plate - y.mean()) ** 2).sum()) / 23  # each plate mean counted 6 times
    ms_s = float(((sample - y.mean()) ** 2).sum()) / 5
    assert rel(e.sigma**2, ms_e) < 1e-9
    assert rel(e.tau["plate"] ** 2, (ms_p - ms_e) / 6) < 1e-9
    assert rel(e.tau["sample"] ** 2, (ms_s - ms_e) / 24) < 1e-9
    assert e.as_dict() == {"method": "reml", "beta": e.beta, "tau": e.tau, "sigma": e.sigma,
                           "criterion": e.criterion, "boundary": e.boundary}
    assert isinstance(e, LmmEstimate) and list(e.tau) == ["plate", "sample"]


# --- 2-3. statsmodels MixedLM, the independent frequentist oracle -------------------------------


def statsmodels_fit(formula: str, data: pd.DataFrame, reml: bool, **kw):
    """MixedLM with Powell and tight tolerances.

    Its default BFGS stopped short on radon's uranium model (converged=False, tau off by 3e-2
    relative); Powell with xtol 1e-12 reaches the optimum to ~1e-7 in tau.
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLM.from_formula(formula, data=data, **kw)
        result = model.fit(reml=reml, method=["powell"], xtol=1e-12, ftol=1e-14)
    assert result.converged
    return model, result


@pytest.mark.parametrize("covariates", [["basement"], ["basement", "uranium"]])
@pytest.mark.parametrize("reml", [True, False])
def test_radon_matches_statsmodels(covariates, reml):
    """radon, log.radon ~ covariates + (1|county): beta, tau, sigma equal statsmodels MixedLM's to
    1e-5 relative (measured <= 3e-7 in tau, 2e-8 in beta and sigma: the limit of its Powell
    search); our optimum is no worse (+1e-8) than statsmodels' -2 llf nor than our criterion at
    its theta; and llf = -criterion / 2 to 1e-9 (measured 8e-16) for ML and for REML:
    statsmodels' REML log-likelihood has lme4's convention (constant (N - p) log 2 pi, no
    log|X'X| term). With uranium (county-level) a bounded L-BFGS-B from theta = 1 stalled at
    tau = 0 (REML criterion 2142.14) and failed this test; the optimum is inside (2134.19)."""
    df = pd.read_csv(DATA / "radon.csv").rename(columns={"log.radon": "y"})
    model, r = statsmodels_fit("y ~ " + " + ".join(covariates), df, reml, groups="county")
    x = np.column_stack([np.ones(len(df))] + [df[c] for c in covariates])
    e = fit_lmm(df["y"], x, [codes(df["county"])], reml=reml, names=["county"],
                terms=["Intercept", *covariates])
    assert rel(list(e.beta.values()), r.fe_params.to_numpy()) < 1e-5
    assert rel(e.tau["county"], math.sqrt(r.cov_re.iloc[0, 0])) < 1e-5
    assert rel(e.sigma, math.sqrt(r.scale)) < 1e-5
    assert e.criterion <= -2.0 * r.llf + 1e-8
    d, *_ = _prepare(df["y"], x, [codes(df["county"])], None, None)
    theta_sm = math.sqrt(r.cov_re.iloc[0, 0] / r.scale)
    assert e.criterion <= _evaluate(d, np.array([theta_sm]), reml=reml)[0] + 1e-8
    assert abs(r.llf + e.criterion / 2) < 1e-9 * abs(r.llf)
    assert not e.boundary["county"]


@pytest.mark.parametrize("reml", [True, False])
def test_nested_with_covariate_matches_statsmodels_variance_components(reml):
    """Pastes' nested design (batch, batch:cask) with a simulated covariate: beta, both tau and
    sigma equal statsmodels MixedLM's variance components (vc_formula, one group holding all rows)
    to 1e-4 relative (measured <= 6e-8), and llf = -criterion / 2 to 1e-9."""
    df = pd.read_csv(DATA / "pastes.csv")
    df["x"] = np.random.default_rng(7).normal(size=len(df))
    df["one"] = 1
    model, r = statsmodels_fit("strength ~ x", df, reml, groups="one", re_formula="0",
                               vc_formula={"batch": "0 + C(batch)", "cask": "0 + C(sample)"})
    vc = dict(zip(model.exog_vc.names, np.sqrt(r.vcomp), strict=True))
    e = fit_lmm(df["strength"], np.column_stack([np.ones(60), df["x"]]),
                [codes(df["batch"]), codes(df["sample"])], reml=reml, names=["batch", "cask"],
                terms=["Intercept", "x"])
    assert rel(list(e.beta.values()), r.fe_params.to_numpy()) < 1e-4
    assert rel([e.tau["batch"], e.tau["cask"]], [vc["batch"], vc["cask"]]) < 1e-4
    assert rel(e.sigma, math.sqrt(r.scale)) < 1e-4
    assert abs(r.llf + e.criterion / 2) < 1e-9 * abs(r.llf)


# --- 4. the criterion itself, against a dense multivariate normal -------------------------------


def small_design(rng, n: int, sizes: tuple[int, ...]):
    """Unbalanced crossed design, one covariate, response with mean about 100."""
    factors = [rng.integers(0, m, n) for m in sizes]
    for f, m in zip(factors, sizes, strict=True):
        f[:m] = np.arange(m)  # every level used
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = 100 + 0.5 * x[:, 1] + sum(rng.normal(size=m)[f] for f, m in zip(factors, sizes,
                                                                           strict=True))
    return y + rng.normal(size=n), x, factors


def dense_criterion(y, x, factors, theta, reml: bool) -> float:
    """-2 max log-likelihood (ML) or -2 restricted log-likelihood (REML), sigma^2 and beta profiled,
    from scipy's N-variate normal density with V0 = I + sum theta_k^2 Z_k Z_k'.

    REML (lme4's convention): L_R = int L(beta) d beta = L(beta_hat) (2 pi)^{p/2}
    |X'V^-1 X|^{-1/2}, so -2 log L_R = -2 log L(beta_hat) - p log 2 pi + log|X' V^-1 X|,
    minimised over sigma^2 at r'V0^-1 r / (N - p).
    """
    n, p = x.shape
    v0 = np.eye(n)
    for f, t in zip(factors, theta, strict=True):
        z = (f[:, None] == np.arange(f.max() + 1)).astype(float)
        v0 += t * t * z @ z.T
    v0_inv = np.linalg.inv(v0)
    beta = np.linalg.solve(x.T @ v0_inv @ x, x.T @ v0_inv @ y)
    r = y - x @ beta
    s2 = float(r @ v0_inv @ r) / (n - p if reml else n)
    crit = -2.0 * stats.multivariate_normal(mean=x @ beta, cov=s2 * v0).logpdf(y)
    if reml:
        crit += -p * math.log(2 * math.pi) + np.linalg.slogdet(x.T @ v0_inv @ x / s2)[1]
    return crit, beta


@pytest.mark.parametrize("sizes", [(7, 5), (9, 4, 3)])
@pytest.mark.parametrize("reml", [True, False])
def test_criterion_equals_the_dense_normal_density(sizes, reml):
    """At fixed theta (including a 0), lme4's profiled criterion from cross-products and the blocked
    Cholesky equals -2 log of scipy's N-variate normal density (ML) or the restricted likelihood
    (REML) with beta and sigma^2 profiled, to 1e-9 relative; beta_hat equals the GLS estimate.
    Two (N = 40) and three (N = 60) unbalanced crossed factors, raw data of mean 100."""
    rng = np.random.default_rng(11 + len(sizes))
    y, x, factors = small_design(rng, 20 * len(sizes), sizes)
    d, order, to_caller, _, _ = _prepare(y, x, factors, None, None)
    for theta in ([0.3, 1.7, 0.8][: len(sizes)], [0.0, 2.5, 0.4][: len(sizes)]):
        crit, _, beta_c, _ = _evaluate(d, np.asarray(theta)[order], reml=reml)
        dense, beta = dense_criterion(y, x, factors, theta, reml)
        assert rel(crit, dense) < 1e-9
        assert rel(to_caller(beta_c), beta) < 1e-9


def test_criterion_check_fails_a_broken_model():
    """The dense check has teeth: theta where theta^2 belongs in A (Lambda = sqrt(theta)) gives a
    criterion off by far more than 1e-9 relative (measured 9e-2; the correct one 2e-14), and so does
    a swapped order of the factors (1.7e-1)."""
    rng = np.random.default_rng(13)
    y, x, factors = small_design(rng, 40, (7, 5))
    d, order, _, _, _ = _prepare(y, x, factors, None, None)
    theta = np.array([0.3, 1.7])
    dense, _ = dense_criterion(y, x, factors, theta, reml=False)
    broken = _evaluate(d, theta[order], reml=False, _lam=np.sqrt)[0]
    swapped = _evaluate(d, theta[order][::-1], reml=False)[0]
    assert rel(broken, dense) > 1e-4 and rel(swapped, dense) > 1e-4


@pytest.mark.parametrize("reml", [True, False])
def test_analytic_gradient_equals_central_differences(reml):
    """The analytic gradient in theta (diagonal of A^-1, envelope theorem, REML's log|R_X| term)
    equals central differences (h = 1e-5) to 1e-6 relative on a three-factor design (measured
    1.5e-9), and leaving out REML's term (the ML gradient for the REML criterion) fails the same
    comparison (off by 1.5)."""
    rng = np.random.default_rng(17)
    y, x, factors = small_design(rng, 60, (9, 4, 3))
    d, *_ = _prepare(y, x, factors, None, None)
    theta, h = np.array([0.6, 1.3, 0.4]), 1e-5
    fd = np.array([(_evaluate(d, theta + h * e, reml=reml)[0]
                    - _evaluate(d, theta - h * e, reml=reml)[0]) / (2 * h) for e in np.eye(3)])
    grad = _evaluate(d, theta, reml=reml, grad=True)[1]
    assert rel(grad, fd) < 1e-6
    if reml:
        assert rel(_evaluate(d, theta, reml=False, grad=True)[1], fd) > 1e-3


# --- 5. numerics, bad input, scale -------------------------------------------------------------


def test_offset_response_loses_no_accuracy():
    """y with mean 1e6 and sd about 1 (and a covariate shifted by 1e3) gives the same tau, sigma and
    slope as the same data shifted to mean 0, to 1e-8 relative (measured 3e-15), and the intercept
    shifted by exactly the offset (to 1e-6 absolute, measured 1e-10); the same fit from uncentred
    cross-products misses sigma by more than 1e-8 (measured 4e-4: the check's broken version)."""
    rng = np.random.default_rng(19)
    y0, x0, factors = small_design(rng, 300, (30, 12))
    y0, xs = y0 - 100.0, x0.copy()
    big = y0 + 1e6
    small = big - 1e6  # exact (Sterbenz): the same numbers as big, shifted
    xs[:, 1] += 1e3
    a = fit_lmm(small, x0, factors)
    b = fit_lmm(big, xs, factors)
    assert rel(list(b.tau.values()), list(a.tau.values())) < 1e-8
    assert rel(b.sigma, a.sigma) < 1e-8 and rel(b.beta["x1"], a.beta["x1"]) < 1e-8
    assert abs(b.beta["x0"] - (a.beta["x0"] + 1e6 - 1e3 * a.beta["x1"])) < 1e-6
    d, *_ = _prepare(big, xs, factors, None, None, _centre=False)
    theta, _ = _optimise(d, True)
    r2 = _evaluate(d, theta, reml=True)[3]
    assert rel(math.sqrt(r2 / (300 - 2)), a.sigma) > 1e-8


def test_rank_deficient_x_names_the_column():
    """Collinear columns, a constant covariate beside the intercept and an all-zero column are
    refused before optimising, each named; the same X with the column made independent fits."""
    rng = np.random.default_rng(23)
    y, x, factors = small_design(rng, 40, (7, 5))
    collinear = np.column_stack([x, 2 * x[:, 1] + 3])
    with pytest.raises(ValueError, match="'twice_x'.*linear combination"):
        fit_lmm(y, collinear, factors, terms=["icpt", "x", "twice_x"])
    with pytest.raises(ValueError, match="'batch_size' is constant"):
        fit_lmm(y, np.column_stack([x, np.full(40, 5.0)]), factors,
                terms=["icpt", "x", "batch_size"])
    with pytest.raises(ValueError, match="'z' is all zero"):
        fit_lmm(y, np.column_stack([x, np.zeros(40)]), factors, terms=["icpt", "x", "z"])
    collinear[0, 2] += 1.0
    assert fit_lmm(y, collinear, factors).sigma > 0


def test_bad_factors_are_refused():
    """A factor with one level (its variance is the intercept's), one with a level per row, and a
    non-integer factor are refused with the factor's name, a constant y too; unused codes are
    ignored as in lme4 (same criterion to 1e-12)."""
    rng = np.random.default_rng(29)
    y, x, factors = small_design(rng, 40, (7, 5))
    with pytest.raises(ValueError, match="'plate' has only one level"):
        fit_lmm(y, x, [factors[0], np.zeros(40, dtype=int)], names=["batch", "plate"])
    with pytest.raises(ValueError, match="'row' has 40 levels for 40 rows"):
        fit_lmm(y, x, [np.arange(40)], names=["row"])
    with pytest.raises(ValueError, match="'g' must be an \\(40,\\) integer"):
        fit_lmm(y, x, [factors[0] + 0.5], names=["g"])
    with pytest.raises(ValueError, match="no variance to decompose"):
        fit_lmm(np.full(40, 2.5), x, factors)
    gaps = fit_lmm(y, x, [factors[0] * 10 + 3, factors[1]])
    assert rel(gaps.criterion, fit_lmm(y, x, factors).criterion) < 1e-12


def test_too_many_levels_outside_the_largest_factor_is_refused():
    """More than 20,000 levels outside the largest factor would need a dense Schur complement of
    over 3 GB: refused with a clear message before any matrix is formed."""
    n = 26_000
    f = [np.arange(n) % 25_000, np.arange(n) % 12_000, np.arange(n) % 9_000]
    with pytest.raises(ValueError, match="21000 levels together"):
        fit_lmm(np.random.default_rng(0).normal(size=n), ones(n), f)


def test_insteval_shape_criterion_time():
    """InstEval's shape (73,000 rows, 2,972 students x 1,128 lecturers, crossed): one criterion
    evaluation is timed and printed (not asserted: the machine is shared); the analytic gradient
    there equals central differences to 1e-5 relative."""
    rng = np.random.default_rng(31)
    n, ms, ml = 73_000, 2_972, 1_128
    s, lec = rng.integers(0, ms, n), rng.integers(0, ml, n)
    y = 3 + 0.3 * rng.normal(size=ms)[s] + 0.5 * rng.normal(size=ml)[lec] + rng.normal(size=n)
    x = np.column_stack([np.ones(n), rng.integers(0, 2, n)])
    d, order, *_ = _prepare(y, x, [s, lec], None, None)
    assert d.sizes == (ms, ml)
    theta = np.array([0.3, 0.5])
    times = []
    with threadpool_limits(limits=1, user_api="blas"):  # as fit_lmm runs
        for _ in range(3):
            start = time.perf_counter()
            _evaluate(d, theta, reml=True)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        grad = _evaluate(d, theta, reml=True, grad=True)[1]
        with_grad = time.perf_counter() - start
        h = 1e-5
        fd = [(_evaluate(d, theta + h * e, reml=True)[0]
               - _evaluate(d, theta - h * e, reml=True)[0]) / (2 * h) for e in np.eye(2)]
    print(f"\nInstEval shape: criterion {min(times):.3f} s (best of 3), with gradient "
          f"{with_grad:.3f} s")
    assert rel(grad, fd) < 1e-5
