"""The GLMM and random-slopes simulators: their moments against independent formulas (scipy
quadrature over the random effect, the log-normal closed form, the slopes' row covariance), the
CLI's files read back by ``varcomp fit``'s loader, and their one-line refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from varcomp.analyses.cli import main
from varcomp.models.design import load_formula
from varcomp.models.errors import DataError
from varcomp.models.forms import family_of
from varcomp.models.simulate_glmm import simulate_glmm, simulate_slopes

Z_MAX = 4.5
"""Monte Carlo z-score limit for a moment (the simulators are seeded: no flakiness)."""


def _normal_moment(f, mu, tau):
    """E f(mu + M), M ~ N(0, tau^2), by scipy quad (independent of the simulator)."""
    return integrate.quad(lambda u: f(mu + u) * stats.norm.pdf(u, 0, tau), -12 * tau, 12 * tau,
                          epsabs=0, epsrel=1e-12, limit=200)[0]


def _z_mean_var(values, mean, var):
    """z-scores of the sample mean and sample variance of ``values`` against (mean, var)."""
    L = values.size
    z_mean = (values.mean() - mean) / np.sqrt(var / L)
    dev2 = (values - values.mean()) ** 2
    z_var = (dev2.mean() * L / (L - 1) - var) / (dev2.std(ddof=1) / np.sqrt(L))
    return abs(z_mean), abs(z_var)


def _cluster_means(sim, col="y"):
    return sim.frame.groupby("group", sort=False)[col].mean().to_numpy()


@pytest.mark.parametrize("family, link, trials", [("binomial", "logit", 4),
                                                  ("bernoulli", "probit", None)])
def test_cluster_proportions_vary_as_tau_says(family, link, trials):
    """Cluster proportions: mean E p and variance Var p + E p(1 - p) / (n K), p = g^-1(mu + M),
    the moments of p by quadrature over M."""
    L, n, mu, tau = 4000, 5, -0.5, 0.8
    sim = simulate_glmm(family, L, n, mu=mu, tau=tau, trials=trials, link=link, rng=3)
    K = trials or 1
    inv = special.expit if link == "logit" else special.ndtr
    ep = _normal_moment(inv, mu, tau)
    ep2 = _normal_moment(lambda e: inv(e) ** 2, mu, tau)
    var = ep2 - ep**2 + (ep - ep2) / (n * K)
    props = _cluster_means(sim) / K
    assert max(_z_mean_var(props, ep, var)) < Z_MAX
    # a simulator with tau 15% off fails the same check
    assert max(_z_mean_var(props, ep, _normal_moment(lambda e: inv(e) ** 2, mu, 1.15 * tau)
                           - ep**2 + (ep - ep2) / (n * K))) > Z_MAX


def test_poisson_cluster_means_follow_the_lognormal_closed_form():
    """Cluster mean counts: E = exp(mu + tau^2/2), Var = (e^{tau^2} - 1) e^{2 mu + tau^2} + E/n."""
    L, n, mu, tau = 4000, 4, 0.3, 0.6
    sim = simulate_glmm("poisson", L, n, mu=mu, tau=tau, rng=5)
    mean = np.exp(mu + tau**2 / 2)
    var = np.expm1(tau**2) * np.exp(2 * mu + tau**2) + mean / n
    means = _cluster_means(sim)
    assert max(_z_mean_var(means, mean, var)) < Z_MAX
    assert max(_z_mean_var(means, mean, 1.3 * var)) > Z_MAX  # a wrong variance fails


def test_slopes_rows_have_covariance_zVz_plus_sigma2():
    """Two rows i != j of one cluster: E[r_i r_j | x] = z_i' V z_j (r = y - x'beta); one row:
    E[r_i^2 | x] = z_i' V z_i + sigma^2. Regressing the products on (1, x_i + x_j, x_i x_j)
    recovers V's entries."""
    V = np.array([[1.0, 0.3], [0.3, 0.25]])
    sim = simulate_slopes(6000, 2, beta=(1.0, 0.5), V=V, sigma=0.7, x_mean=0.5, rng=7)
    f = sim.frame
    r = (f["y"] - 1.0 - 0.5 * f["x"]).to_numpy().reshape(-1, 2)
    x = f["x"].to_numpy().reshape(-1, 2)
    A = np.column_stack([np.ones(len(x)), x.sum(1), x.prod(1)])
    target = r.prod(1)
    coef, *_ = np.linalg.lstsq(A, target, rcond=None)
    resid = target - A @ coef
    bread = np.linalg.inv(A.T @ A)
    se = np.sqrt(np.diag(bread @ (A.T * resid**2) @ A @ bread))  # HC0 sandwich
    want = np.array([V[0, 0], V[0, 1], V[1, 1]])
    assert np.all(np.abs(coef - want) / se < Z_MAX)
    assert not np.all(np.abs(coef - want * [1, -1, 1]) / se < Z_MAX)  # the wrong correlation fails
    diag = r[:, 0] ** 2 - (V[0, 0] + 2 * V[0, 1] * x[:, 0] + V[1, 1] * x[:, 0] ** 2)
    assert abs(diag.mean() - 0.49) / (diag.std() / np.sqrt(diag.size)) < Z_MAX


@pytest.mark.parametrize("sim, family", [
    (lambda: simulate_glmm("binomial", 6, 3, trials=5, rng=0), "binomial"),
    (lambda: simulate_glmm("bernoulli", 6, 3, rng=0), "binomial"),
    (lambda: simulate_glmm("poisson", 6, 3, rng=0), "poisson"),
    (lambda: simulate_slopes(6, 3, rng=0), "slopes")])
def test_simulated_data_read_back_into_their_family(sim, family):
    data = sim().data()
    assert family_of(data).name == family and data.n_obs == 18


@pytest.mark.parametrize("family, extra, formula, columns", [
    ("binomial", ["--trials", "6"], "p(y, trials) ~ 1 + (1|group)", ["group", "y", "trials"]),
    ("bernoulli", [], "y ~ 1 + (1|group)", ["group", "y"]),
    ("poisson", [], "y ~ 1 + (1|group)", ["group", "y"])])
def test_cli_simulate_writes_a_file_varcomp_fit_reads(tmp_path, capsys, family, extra, formula,
                                                      columns):
    out = tmp_path / "sim.csv"
    code = main(["simulate", "--family", family, "--clusters", "8", "--size", "5", "--mu",
                 "-0.3", "--tau", "0.7", *extra, "--seed", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and f"--family {family}" in printed and formula in printed
    frame = pd.read_csv(out)
    assert list(frame.columns) == columns and len(frame) == 40
    data = load_formula(out, formula, family=family)
    assert data.n_obs == 40 and data.likelihood == ("poisson" if family == "poisson"
                                                    else "binomial")


BAD = [
    (dict(family="binomial"), "needs trials"),
    (dict(family="binomial", trials=0), "needs trials"),
    (dict(family="binomial", trials=2.5), "needs trials"),
    (dict(family="poisson", trials=3), "binomial simulator only"),
    (dict(family="bernoulli", trials=3), "binomial simulator only"),
    (dict(family="poisson", link="logit"), "takes link log"),
    (dict(family="gaussian"), "family must be one of"),
    (dict(family="poisson", tau=0.0), "tau must be a positive"),
    (dict(family="poisson", mu=float("nan")), "mu must be a finite"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_glmm_simulator_refuses_bad_settings(kwargs, message):
    with pytest.raises(DataError, match=message):
        simulate_glmm(L=4, n=3, rng=0, **kwargs)


CLI_BAD = [
    (["--family", "binomial"], "needs trials"),
    (["--family", "poisson", "--trials", "3"], "binomial simulator only"),
    (["--family", "poisson"], "needs --tau"),
    (["--family", "poisson", "--tau", "1", "--sigma", "1"], "no --sigma"),
    (["--family", "poisson", "--tau", "1", "--mu", "0,1"], "one --mu"),
    (["--tau", "1", "--sigma", "1", "--trials", "3"], "--trials needs --family"),
]


@pytest.mark.parametrize("args, message", CLI_BAD)
def test_cli_simulate_refuses_bad_combinations(tmp_path, capsys, args, message):
    out = tmp_path / "sim.csv"
    base = ["simulate", "--clusters", "4", "--size", "3", "--out", str(out)]
    if "--tau" not in args and "needs --tau" not in message:
        args = [*args, "--tau", "1"]
    code = main([*base, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_check_settings_include_a_binomial_and_a_slopes_design():
    """``varcomp check`` simulates them into their families; not sampled in --quick."""
    from varcomp.analyses.checks_run import SETTINGS

    by_name = {s.name: s for s in SETTINGS}
    for name, family in (("binomial-L15", "binomial"), ("slopes-L12", "slopes")):
        assert family_of(by_name[name].simulate(0)).name == family
        assert by_name[name].quick == ()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["binomial-L15", "slopes-L12"])
def test_check_setting_exact_logp_passes(name):
    from varcomp.analyses import checks_run as cr

    setting = {s.name: s for s in cr.SETTINGS}[name]
    res = cr._check_setting(setting, 0, quick=True, plan=cr._sampling_plan(True), t_start=0.0)
    assert res["logp"]["passed"] and max(res["logp"]["max_rel_err"].values()) < 1e-9


def test_the_check_table_of_a_family_with_no_sampled_setting_prints():
    """`varcomp check --quick` samples no GLMM or slopes setting: their table has no column, and
    printing it raised TypeError at the end of a 390 s run (max(18, *()))."""
    from varcomp.analyses.checks_run import _print_table

    text = _print_table({"centred": {}}, [])
    assert text.splitlines()[0].startswith("form") and "centred" in text
    assert "agrees" in _print_table({"centred": {"s1": "agrees"}}, ["s1"])
