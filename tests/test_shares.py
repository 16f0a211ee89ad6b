"""models.shares: every share against its definition written independently (the marginal
covariance matrix of a design's rows), and every place that reports a share equals shares.py.

The oracle builds Cov(y) = sum_f tau_f^2 [rows share f's level] + residual I from the frame's
own columns (not the design's codes): a correlation is C_ij / C_ii for a pair of rows, a design
effect 1' C 1 / (N C_ii), a reliability tau^2 / (tau^2 + residual / n).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from varcomp.models import shares
from varcomp.models.design import from_formula
from varcomp.models.likelihoods import GAUSSIAN
from varcomp.models.lmm import add_derived, estimates, fixed_variance

DIMS = ("chain", "draw")


def _nested_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"A{a}", f"S{s}", f"C{c}") for a in range(3) for s in range(rng.integers(2, 4))
            for c in range(rng.integers(1, 3)) for _ in range(rng.integers(1, 5))]
    df = pd.DataFrame(rows, columns=["area", "school", "klass"])
    df["x"] = rng.normal(size=len(df))
    df["y"] = 2.0 + df.x + rng.normal(size=len(df))
    return df


def _crossed_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    reps = rng.integers(1, 4, size=a.size)
    df = pd.DataFrame({"a": np.repeat(a.ravel(), reps).astype(str),
                       "b": np.repeat(b.ravel(), reps).astype(str)})
    df["x"] = rng.normal(size=len(df))
    df["y"] = df.x + rng.normal(size=len(df))
    return df


CASES = {"nested": (_nested_frame, "y ~ x + (1|area/school/klass)"),
         "crossed": (_crossed_frame, "y ~ x + (1|a) + (1|b) + (1|a:b)"),
         "one": (_crossed_frame, "y ~ x + (1|a)")}


def _same(frame: pd.DataFrame, name: str) -> np.ndarray:
    """(N, N): whether two rows share the level of factor ``name`` (its columns all equal)."""
    keys = frame[name.split(":")].astype(str).agg("|".join, axis=1).to_numpy()
    return keys[:, None] == keys[None, :]


def _cov(frame, names, t2: dict, residual: float) -> np.ndarray:
    C = residual * np.eye(len(frame))
    for f in names:
        C = C + t2[f] * _same(frame, f)
    return C


def _case(kind):
    make, formula = CASES[kind]
    frame = make()
    data = from_formula(frame, formula)
    frame = frame.iloc[np.asarray(data.rows)].reset_index(drop=True) if data.rows is not None \
        else frame
    return frame, data, [f.name for f in data.design.factors]


def _draw(names, seed=1):
    rng = np.random.default_rng(seed)
    return {f: float(rng.gamma(2.0, 0.5)) for f in names}, float(rng.gamma(2.0, 0.5))


# ---------------------------------------------------------------------------- definitions
@pytest.mark.parametrize("kind", ["nested", "crossed", "one"])
def test_corr_vpc_deff_against_the_covariance_matrix(kind):
    frame, data, names = _case(kind)
    t2, s2 = _draw(names)
    C = _cov(frame, names, t2, s2)
    var = C[0, 0]
    N = len(frame)
    got = shares.corr(t2, s2, bool(data.design.nested))
    for f in names:
        implied = [g for g in names if set(g.split(":")) <= set(f.split(":"))
                   or (data.design.nested and names.index(g) <= names.index(f))]
        other = [g for g in names if g not in implied]
        ok = _same(frame, f) & ~np.eye(N, dtype=bool)
        for g in other:
            ok &= ~_same(frame, g)
        i, j = np.argwhere(ok)[0]
        assert got[f] == pytest.approx(C[i, j] / var, rel=1e-13), f
    v = shares.vpc(t2, s2)
    assert list(v) == [*names, "residual"]
    assert v["residual"] == pytest.approx(s2 / var, rel=1e-14)
    for f in names:
        assert v[f] == pytest.approx(t2[f] / var, rel=1e-14)
    sizes = {f: n for f, n in zip(names, _weighted_level_sizes(frame, names), strict=True)}
    want = C.sum() / (N * var)  # Var(mean of all rows) / (var / N)
    assert shares.deff_components(t2, s2, sizes) == pytest.approx(want, rel=1e-13)


def _weighted_level_sizes(frame, names):
    return [float((frame.groupby(f.split(":")).size() ** 2).sum()) / len(frame) for f in names]


def test_one_factor_shares_and_cluster_sizes():
    """icc = the correlation of two rows of a cluster; Kish's deff with the size-weighted mean
    size = 1' C 1 / (N var); reliability of a mean of n rows = tau^2 / (tau^2 + sigma^2 / n)."""
    frame, data, names = _case("one")
    (f,) = names
    t2, s2 = _draw(names, seed=3)
    C = _cov(frame, names, t2, s2)
    icc = shares.icc(t2[f], s2)
    same = _same(frame, f) & ~np.eye(len(frame), dtype=bool)
    i, j = np.argwhere(same)[0]
    assert icc == pytest.approx(C[i, j] / C[i, i], rel=1e-14)
    n = frame.groupby("a").size().to_numpy()
    nw = shares.weighted_size(n)
    assert shares.deff(icc, nw) == pytest.approx(C.sum() / (len(frame) * C[0, 0]), rel=1e-13)
    assert shares.mean_size(np.r_[n, 0]) == pytest.approx(len(frame) / len(n), rel=1e-15)
    for m in (1, 2, 7.5):
        assert shares.reliability(icc, m) == pytest.approx(t2[f] / (t2[f] + s2 / m), rel=1e-14)


def test_fixed_variance_and_r2_are_the_variance_of_x_beta():
    rng = np.random.default_rng(5)
    X = np.c_[np.ones(40), rng.normal(size=(40, 2))]
    beta = rng.normal(size=(3, 4, 3))
    sf2 = shares.fixed_variance(beta, np.cov(X.T))
    want = np.array([[np.var(X @ b, ddof=1) for b in row] for row in beta])
    np.testing.assert_allclose(sf2, want, rtol=1e-13)
    t2, s2 = rng.gamma(2.0, size=(3, 4)), rng.gamma(2.0, size=(3, 4))
    total = want + t2 + s2  # Var(y) of a row: fixed part, cluster, residual
    np.testing.assert_allclose(shares.r2_marginal(t2, s2, sf2), want / total, rtol=1e-13)
    np.testing.assert_allclose(shares.r2_conditional(t2, s2, sf2), (want + t2) / total,
                               rtol=1e-13)
    np.testing.assert_allclose(shares.icc_unadjusted(t2, s2, sf2), t2 / total, rtol=1e-13)
    np.testing.assert_allclose(shares.icc(t2, s2), t2 / (t2 + s2), rtol=1e-15)


@pytest.mark.parametrize("broken", ["crossed_as_nested", "deff_mean_size"])
def test_the_oracle_fails_a_broken_share(broken):
    """The covariance-matrix oracle above tells a wrong share from the right one."""
    frame, data, names = _case("crossed")
    t2, s2 = _draw(names)
    C = _cov(frame, names, t2, s2)
    if broken == "crossed_as_nested":  # read as nested, the same b would imply the same a
        got = shares.corr(t2, s2, nested=True)["b"]
        ok = _same(frame, "b") & ~_same(frame, "a")
        i, j = np.argwhere(ok)[0]
        assert abs(got - C[i, j] / C[i, i]) > 1e-3
    else:
        sizes = {f: float(frame.groupby(f.split(":")).size().mean()) for f in names}
        got = shares.deff_components(t2, s2, sizes)
        assert abs(got - C.sum() / (len(frame) * C[0, 0])) > 1e-3


# ---------------------------------------------------------------------------- every reader
def _posterior(data, names, seed=7, S=(2, 5)):
    rng = np.random.default_rng(seed)
    k = data.design.k
    post = xr.Dataset({"beta": (("chain", "draw", "term"), rng.normal(size=(*S, k))),
                       "sigma": (DIMS, rng.gamma(2.0, 0.5, size=S))})
    if len(names) == 1:
        post["tau"] = (DIMS, rng.gamma(2.0, 0.5, size=S))
    else:
        post["tau"] = xr.DataArray(rng.gamma(2.0, 0.5, size=(*S, len(names))),
                                   dims=(*DIMS, "factor"), coords={"factor": names})
    return post


@pytest.mark.parametrize("kind", ["nested", "crossed", "one"])
def test_add_derived_writes_the_shares(kind):
    """The posterior's derived variables (summary.json's rows) are shares.py's, and the
    one-factor R^2 equal their definitions with sigma_f^2 = Var(X beta) over the rows."""
    frame, data, names = _case(kind)
    post = _posterior(data, names)
    add_derived(SimpleNamespace(posterior=post), data, GAUSSIAN)
    s2 = post["sigma"].values ** 2
    sf2 = np.array([[np.var(data.design.X @ b, ddof=1) for b in row]
                    for row in post["beta"].values])
    if len(names) == 1:
        t2 = post["tau"].values ** 2
        np.testing.assert_array_equal(post["icc"].values, shares.icc(t2, s2))
        total = sf2 + t2 + s2
        np.testing.assert_allclose(post["icc_unadjusted"].values, t2 / total, rtol=1e-12)
        np.testing.assert_allclose(post["r2_marginal"].values, sf2 / total, rtol=1e-12)
        np.testing.assert_allclose(post["r2_conditional"].values, (sf2 + t2) / total, rtol=1e-12)
        return
    t2 = {f: post["tau"].sel(factor=f).values ** 2 for f in names}
    for c, v in shares.vpc(t2, s2).items():
        np.testing.assert_array_equal(post["vpc"].sel(component=c).values, v)
    for f, v in shares.corr(t2, s2, bool(data.design.nested)).items():
        np.testing.assert_array_equal(post["corr"].sel(shared=f).values, v)
    sizes = dict(zip(names, _weighted_level_sizes(frame, names), strict=True))
    np.testing.assert_allclose(post["deff"].values, shares.deff_components(t2, s2, sizes),
                               rtol=1e-13)
    total = sf2 + sum(t2.values()) + s2
    np.testing.assert_allclose(post["r2_marginal"].values, sf2 / total, rtol=1e-12)


@pytest.mark.parametrize("kind", ["nested", "one"])
def test_reml_estimates_report_the_shares(kind):
    _, data, names = _case(kind)
    d = estimates(data)["reml"].as_dict()
    if len(names) == 1:
        assert d["icc"] == shares.icc(d["tau"] ** 2, d["sigma"] ** 2)
    else:
        assert d["vpc"] == shares.vpc({f: t * t for f, t in d["tau"].items()}, d["sigma"] ** 2)


def test_report_design_effects_and_variance_box_read_the_shares(unbalanced):
    from varcomp.analyses.report.compute import design_effects
    from varcomp.analyses.report.mixed import variance_box

    rng = np.random.default_rng(2)
    icc = rng.uniform(0.05, 0.9, size=(2, 50))
    out = design_effects(xr.Dataset({"icc": (DIMS, icc)}), unbalanced, [None])
    n = unbalanced.stats.n[:, 0]
    nbar, nw = n.mean(), (n**2).sum() / n.sum()
    deff, rel = out["rows"]
    assert deff["mean"] == pytest.approx(float(np.mean(1 + (nbar - 1) * icc)), rel=1e-14)
    assert rel["mean"] == pytest.approx(float(np.mean(nbar * icc / (1 + (nbar - 1) * icc))),
                                        rel=1e-14)
    assert out["notes"][0]["deff_weighted"] == pytest.approx(
        float(np.mean(1 + (nw - 1) * icc)), rel=1e-14)

    _, data, names = _case("one")
    post = _posterior(data, names)
    add_derived(SimpleNamespace(posterior=post), data, GAUSSIAN)
    post = post.assign_coords(term=list(data.design.terms))
    reml = estimates(data)["reml"].as_dict()
    fam = SimpleNamespace(summary_vars=("icc", "icc_unadjusted", "r2_marginal", "r2_conditional"),
                          likelihood=GAUSSIAN)
    box = variance_box(SimpleNamespace(data=data, family=fam), post, {}, {"reml": reml})
    b = np.array([reml["beta"][t] for t in data.design.terms])
    sf2 = float(b @ fixed_variance(data) @ b)
    t2, s2 = reml["tau"] ** 2, reml["sigma"] ** 2
    total = sf2 + t2 + s2
    want = {"icc": t2 / (t2 + s2), "icc_unadjusted": t2 / total, "r2_marginal": sf2 / total,
            "r2_conditional": (sf2 + t2) / total}
    assert {r["var"]: r["reml"] for r in box["rows"]} == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------------------- in the samplers
def test_graph_and_compiled_icc_equal_shares(unbalanced, bivariate_missing):
    """The Deterministic ``icc`` of the PyMC graphs and the compiled kernels' expanded ``icc``
    (computed where numpy cannot be called) equal shares.icc on the same draws."""
    import pymc as pm

    from varcomp.models.compiled import multivariate as cmv
    from varcomp.models.compiled import oneway as c1
    from varcomp.models.forms import multivariate as fmv
    from varcomp.models.forms import oneway as f1
    from varcomp.models.priors import Priors

    model = f1.build_sufficient(unbalanced)
    model = model[0] if isinstance(model, tuple) else model
    tau, sigma, icc = pm.draw([model["tau"], model["sigma"], model["icc"]], draws=30,
                              random_seed=0)
    np.testing.assert_allclose(icc, shares.icc(tau**2, sigma**2), rtol=1e-14)

    model = fmv.build_sufficient(bivariate_missing)
    model = model[0] if isinstance(model, tuple) else model
    tau, sigma, icc = pm.draw([model["tau"], model["sigma"], model["icc"]], draws=30,
                              random_seed=0)
    np.testing.assert_allclose(icc, shares.icc(tau**2, sigma**2), rtol=1e-13)

    block = c1.parameter_block(unbalanced.stats, Priors.default(unbalanced))
    out = np.zeros(len(c1.EXPANDED))
    for z in np.random.default_rng(0).normal(size=(10, 3)):
        c1._expand(z, block, out)
        assert out[6] == pytest.approx(shares.icc(out[4] ** 2, out[5] ** 2), rel=1e-15)

    block = cmv.parameter_block(bivariate_missing)
    layout = cmv.expanded_names(2)
    at, o = {}, 0
    for name, s in layout:
        at[name] = (o, int(np.prod(s)))
        o += int(np.prod(s))
    out = np.zeros(o)
    for x in np.random.default_rng(1).normal(scale=0.5, size=(10, 8)):
        cmv._expand(x, block, out)
        v = {name: out[a:a + m] for name, (a, m) in at.items()}
        np.testing.assert_allclose(v["icc"], shares.icc(v["tau"] ** 2, v["sigma"] ** 2),
                                   rtol=1e-14)
    assert math.isfinite(out.sum())
