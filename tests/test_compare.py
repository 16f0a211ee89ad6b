"""Leave-one-cluster-out, model comparison, prior sensitivity, new clusters, partition priors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from varcomp.analyses import compare as cmp
from varcomp.analyses.cli import main
from varcomp.models import load
from varcomp.models.checks import compare_logp
from varcomp.models.forms import family_of
from varcomp.models.priors import NormalPrior, PartitionPriors, ScalePrior

SMALL = ["--draws", "300", "--tune", "300", "--chains", "2"]


def _fake_posterior(values: dict, S: int = 3):
    import arviz as az

    return az.from_dict(posterior={k: np.asarray(v)[None, :S] for k, v in values.items()}).posterior


def test_cluster_loglik_is_each_clusters_stacked_mvnormal():
    """A cluster's log-likelihood (effects integrated out) equals scipy's MvNormal of its rows:
    one-way and bivariate with missing cells (the leave-one-cluster-out quantity)."""
    d = load("rail")
    fam = family_of(d)
    post = _fake_posterior({"mu": [60.0, 70.0, 66.0], "tau": [20.0, 30.0, 25.0],
                            "sigma": [4.0, 5.0, 3.5]})
    ll = fam.cluster_loglik(d, post)
    for s, (mu, tau, sigma) in enumerate([(60, 20, 4), (70, 30, 5), (66, 25, 3.5)]):
        for i in range(d.n_groups):
            x = d.y[d.codes == i, 0]
            cov = sigma**2 * np.eye(x.size) + tau**2
            assert ll[s, i] == pytest.approx(stats.multivariate_normal(
                np.full(x.size, mu), cov).logpdf(x), rel=1e-12)
    g = load("gcsemv")
    V = np.array([[50.0, 30.0], [30.0, 80.0]])
    Sigma = np.array([[150.0, 60.0], [60.0, 200.0]])
    post = _fake_posterior({"mu": np.array([[47.0, 73.0]] * 3), "V": np.array([V] * 3),
                            "Sigma": np.array([Sigma] * 3)})
    ll = family_of(g).cluster_loglik(g, post)
    for i in (0, 5, 40):
        y = g.y[g.codes == i]
        r, k = np.nonzero(np.isfinite(y))
        cov = V[np.ix_(k, k)] + (r[:, None] == r[None, :]) * Sigma[np.ix_(k, k)]
        want = stats.multivariate_normal(np.array([47.0, 73.0])[k], cov).logpdf(y[r, k])
        assert ll[0, i] == pytest.approx(want, rel=1e-10)


def test_compare_ranks_with_pooled_and_exact_refits_match_psis(monkeypatch):
    """Dyestuff: the one-way model and the pooled model (tau = 0) ranked by elpd; with every
    cluster refitted exactly (threshold forced below every k), the exact leave-one-cluster-out
    elpd agrees with the PSIS value within its standard error."""
    psis = cmp.compare("dyestuff", ["Yield ~ 1 + (1|Batch)"], draws=1000, tune=1000, seed=2)
    table = psis.as_dict()
    assert set(table["ranking"]) == {"m1", "pooled"}
    for row in table["models"]:
        assert set(row) >= {"name", "formula", "elpd", "se", "elpd_diff", "dse",
                            "pareto_k_max", "exact_clusters"}
    monkeypatch.setattr(cmp, "K_THRESHOLD", -np.inf)
    exact = cmp.compare("dyestuff", ["Yield ~ 1 + (1|Batch)"], draws=1000, tune=1000, seed=2)
    by_name = {m.name: m for m in exact.models}
    assert by_name["m1"].exact == [str(g) for g in load("dyestuff").groups]
    for m in psis.models:
        assert abs(m.elpd - by_name[m.name].elpd) <= m.se, (m.name, m.elpd, by_name[m.name].elpd)


def test_compare_cli_writes_json_and_html_and_refuses_crossed(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "radon", "--formula", "log.radon ~ 1 + (1|county)", "--formula",
                 "log.radon ~ basement + (1|county)", *SMALL, "--out", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert res["ranking"][0] == "m2" and res["ranking"][-1] == "pooled"
    assert (out / "compare.html").stat().st_size > 1000
    capsys.readouterr()
    assert main(["compare", "penicillin", "--formula", "diameter ~ 1 + (1|plate) + (1|sample)",
                 *SMALL, "--out", str(tmp_path / "x")]) == 2
    assert "crossed" in capsys.readouterr().err


def test_summary_has_prior_sensitivity_and_new_cluster(dyestuff_fit):
    """Power-scaling sensitivity of every reported parameter; on Dyestuff (6 clusters) tau leans
    on its prior: flagged. A new cluster's effect is centred on 0 with sd about tau."""
    summary = dyestuff_fit.summary
    sens = summary["fits"]["sufficient"]["prior_sensitivity"]
    assert set(sens) == {"mu", "tau", "sigma", "icc"}
    assert sens["tau"]["flagged"] and sens["tau"]["prior"] > 0.05
    assert not sens["sigma"]["flagged"]
    new = summary["fits"]["sufficient"]["new_cluster"]
    assert new["new_cluster_effect"]["hdi_low"] < 0 < new["new_cluster_effect"]["hdi_high"]
    idata = dyestuff_fit.idata["sufficient"]
    assert {"log_likelihood", "log_prior", "posterior_predictive"} <= set(idata.groups())
    assert idata.log_likelihood["y"].shape[-1] == 6


def test_prior_sensitivity_equals_arviz_psens_on_the_pointwise_values(dyestuff_fit):
    """The summary's likelihood sensitivity (from each draw's summed log-likelihood) equals
    ``az.psens`` given the per-cluster values, and the prior's is az.psens itself."""
    import arviz as az

    from varcomp.analyses.fit import prior_sensitivity

    idata = dyestuff_fit.idata["sufficient"]
    ours = prior_sensitivity(idata, ["mu", "tau", "sigma", "icc"])
    lik = az.psens(idata, component="likelihood", var_names=["mu", "tau", "sigma", "icc"])
    prior = az.psens(idata, component="prior", var_names=["mu", "tau", "sigma", "icc"])
    for v in ("mu", "tau", "sigma", "icc"):
        assert ours[v]["likelihood"] == pytest.approx(float(lik[v]), rel=1e-9, abs=1e-12)
        assert ours[v]["prior"] == float(prior[v])


def test_prior_sensitivity_equals_arviz_psens_for_vectors_and_matrices(gcsemv_fit):
    """Vectors (mu[written]) and matrices' upper triangles (corr_between[written,course]) get
    az.psens's numbers too (NumPy route, element by element); draws of the log prior taken in
    the wrong order (a broken alignment of draws) give other prior sensitivities."""
    import arviz as az

    from varcomp.analyses.fit import prior_sensitivity

    idata = gcsemv_fit.idata["sufficient"]
    names = ["mu", "tau", "sigma", "icc", "corr_between", "corr_within"]
    ours = prior_sensitivity(idata, names)
    assert {"mu[written]", "corr_between[written,course]"} <= set(ours)
    lik = az.psens(idata, component="likelihood", var_names=names)
    prior = az.psens(idata, component="prior", var_names=names)
    for label, row in ours.items():
        var, _, inner = label.partition("[")
        da_p, da_l = prior[var], lik[var]
        for dim, value in zip([d for d in da_p.dims], inner.rstrip("]").split(",") if inner
                              else [], strict=False):
            da_p, da_l = da_p.sel({dim: value}), da_l.sel({dim: value})
        assert row["prior"] == pytest.approx(float(da_p), rel=1e-12, abs=0), label
        assert row["likelihood"] == pytest.approx(float(da_l), rel=1e-9, abs=1e-12), label
    broken = idata.copy()
    broken.log_prior = broken.log_prior.isel(draw=slice(None, None, -1)).assign_coords(
        draw=idata.log_prior.draw)
    bad = prior_sensitivity(broken, names)
    assert any(abs(bad[k]["prior"] - ours[k]["prior"]) > 1e-6 for k in ours)


PARTITION = PartitionPriors(mu=NormalPrior(0.0, 1.0), total=ScalePrior("halfnormal", 1.5),
                            center=0.0, scale=1.0)


def test_partition_prior_is_exact_in_every_form(unbalanced):
    """With the variance-partition prior (total sd, ICC ~ Beta) every form's likelihood still
    equals scipy's stacked MvNormal and the prior terms equal its numpy density."""
    res = compare_logp(unbalanced, n_points=6, priors=PARTITION)
    assert res.passed, res.text
    assert max(res.details["prior_max_abs_diff"].values()) < 1e-6


def test_partition_prior_density_has_the_jacobian():
    """p(tau, sigma) = p_T(T) p_icc(icc) 2 tau sigma / T^3: it integrates to 1 over (tau, sigma)."""
    from scipy import integrate

    p = PartitionPriors(mu=NormalPrior(0.0, 1.0), total=ScalePrior("halfnormal", 1.0),
                        a=2.0, b=3.0)
    f = lambda s, t: float(np.exp(p.logpdf(0.0, t, s) - p.mu.logpdf(0.0)))  # noqa: E731
    total, _ = integrate.dblquad(f, 1e-9, 8.0, 1e-9, 8.0)
    assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_variance_prior_partition_from_the_cli(tmp_path):
    """(slow: the partition prior's sufficient form is PyMC compiled by nutpie's numba, ~9 s)"""
    out = tmp_path / "p"
    assert main(["fit", "dyestuff", "--variance-prior", "partition", *SMALL,
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["fits"]["sufficient"]["params"]) == {"mu", "tau", "sigma", "icc"}


def test_variance_prior_partition_is_refused_where_the_family_has_none(tmp_path, capsys):
    assert main(["fit", "gcsemv", "--variance-prior", "partition", *SMALL,
                 "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "partition is available for the one-way model" in err and not (tmp_path / "q").exists()


@pytest.mark.slow
def test_partition_prior_passes_sbc():
    """SBC (100 simulations) of the sufficient form under the partition prior."""
    from varcomp.models.checks import OnewaySBC, sbc

    res = sbc(OnewaySBC(priors=PARTITION), n_sims=100, seed=5)
    assert res.passed, res.text


@pytest.mark.slow
def test_elpd_ranking_on_radon():
    """A covariate with a real effect wins (basement), the pooled model loses where REML tau is
    far from 0; on Dyestuff2 (REML tau = 0) pooled is within 2 se of the one-way model."""
    res = cmp.compare("radon", ["log.radon ~ 1 + (1|county)",
                                "log.radon ~ basement + (1|county)"], draws=1000, tune=1000)
    assert res.as_dict()["ranking"] == ["m2", "m1", "pooled"]
    d2 = cmp.compare("dyestuff2", ["Yield ~ 1 + (1|Batch)"], draws=1000, tune=1000).as_dict()
    pooled = next(m for m in d2["models"] if m["name"] == "pooled")
    assert abs(pooled["elpd_diff"]) <= 2 * max(pooled["dse"], 1e-9) or pooled["elpd_diff"] == 0
