"""Shared fixtures: small designs, fake posteriors (``az.from_dict``) and small nutpie fits of
dyestuff and gcsemv (``dyestuff_fit``, ``gcsemv_fit``), sampled once per session and inspected by
several tests.

Designs:

- ``oneway_design``: each of :data:`ONEWAY_DESIGNS` in turn (balanced, unbalanced, with
  singleton clusters).
- ``make_partly_missing(p, seed)``: small unbalanced multivariate clusters (sizes 1..6) with
  outcomes missing completely at random; ``bivariate_missing`` is one of them.
- ``unbalanced``: three clusters of sizes 4, 1 (a singleton) and 2, written out.

Fakes: ``fake_fit(name, rng)`` (one-way) and ``fake_mv_fit(name, rng)`` (bivariate) make
:class:`models.sampling.Fit` objects of independent draws from known distributions, for summary,
comparison and report code that must not wait for MCMC. The factories are fixtures (conftest is
not imported by the tests).
"""

from __future__ import annotations

import math
import os
import warnings

import matplotlib

matplotlib.use("Agg")
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("PYTENSOR_FLAGS", "")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from varcomp.models.data import ClusteredData  # noqa: E402

# ---------------------------------------------------------------------------------- designs
ONEWAY_DESIGNS = {
    "balanced": (4, 4, 4, 4, 4),
    "unbalanced": (2, 3, 5, 7),
    "singletons": (1, 1, 3, 6, 1, 2),
}
"""Cluster sizes of the shared one-way designs."""



def _simulate_oneway(sizes, seed: int, *, mu: float = 3.0, tau: float = 1.5,
                    sigma: float = 0.7) -> ClusteredData:
    """One-way data with the given cluster sizes (labels g1..gL)."""
    from varcomp.models.simulate import simulate_univariate

    return simulate_univariate(len(sizes), list(sizes), mu=mu, tau=tau, sigma=sigma,
                               rng=seed).data()


def _random_cov(rng: np.random.Generator, p: int, scale: float = 1.0) -> np.ndarray:
    """A well-conditioned random covariance (eigenvalues >= 0.3 scale^2)."""
    a = rng.normal(size=(p, p))
    return scale**2 * (a @ a.T / p + 0.3 * np.eye(p))


def _partly_missing(p: int, seed: int, L: int = 6, prob: float = 0.3) -> ClusteredData:
    """Small unbalanced clusters (sizes 1..6) with outcomes missing completely at random."""
    from varcomp.models.simulate import Simulated
    from varcomp.models.simulate_mv import drop_components, simulate_multivariate

    rng = np.random.default_rng(seed)
    mu = rng.normal(50.0, 10.0, size=p)
    sim = simulate_multivariate(L, rng.integers(1, 7, size=L), mu, _random_cov(rng, p, 3.0),
                                _random_cov(rng, p, 2.0), rng)
    return Simulated(drop_components(sim.frame, prob, rng), sim.effects, sim.params).data()


@pytest.fixture
def unbalanced_frame() -> pd.DataFrame:
    """Three clusters of sizes 4, 1 (a singleton) and 2."""
    return pd.DataFrame({"g": ["a", "a", "a", "a", "b", "c", "c"],
                         "y": [1.0, 2.0, 4.0, 7.0, 3.0, 5.0, 6.5]})


@pytest.fixture
def unbalanced(unbalanced_frame) -> ClusteredData:
    return ClusteredData.from_frame(unbalanced_frame, group="g", response="y")


@pytest.fixture(params=list(ONEWAY_DESIGNS))
def oneway_design(request) -> ClusteredData:
    """Each shared one-way design in turn (balanced, unbalanced, with singletons)."""
    return _simulate_oneway(ONEWAY_DESIGNS[request.param], seed=11)


@pytest.fixture(scope="session")
def make_partly_missing():
    """``make_partly_missing(p, seed, L=6, prob=0.3) -> ClusteredData``."""
    return _partly_missing


@pytest.fixture
def bivariate_missing() -> ClusteredData:
    """p = 2, six clusters of 1..6 rows, ~30% of the cells missing."""
    return _partly_missing(2, 0)


def _formula_frame(family: str, seed: int) -> tuple[pd.DataFrame, str]:
    """Small rows of a formula family and the formula that fits them.

    regression: 6 clusters of 2..5 rows with a covariate; nested: 3 a's, each with 2 b's of 2
    or 3 rows (b's labels recur under each a: ``(1|a/b)`` makes them cells); crossed: a
    balanced 3 x 4 layout with 2 rows per cell (so ``sufficient`` applies).
    """
    rng = np.random.default_rng(seed)
    if family == "regression":
        g = np.repeat([f"g{i}" for i in range(6)], [2, 3, 5, 4, 2, 3])
        x = rng.normal(size=g.size)
        y = 1.0 + 0.5 * x + np.repeat(rng.normal(size=6), [2, 3, 5, 4, 2, 3])
        return pd.DataFrame({"g": g, "x": x, "y": y + rng.normal(0.0, 0.7, g.size)}), \
            "y ~ x + (1|g)"
    if family == "nested":
        rows = [(f"a{i}", f"b{j}") for i in range(3) for j in range(2)
                for _ in range(2 + (i + j) % 2)]
        a, b = (np.array(c) for c in zip(*rows, strict=True))
        return pd.DataFrame({"a": a, "b": b, "y": rng.normal(size=a.size)
                             + pd.factorize(a)[0] * 0.8}), "y ~ 1 + (1|a/b)"
    if family == "crossed":
        a, b = (np.array(c) for c in zip(*[(f"a{i}", f"b{j}") for i in range(3) for j in range(4)
                                          for _ in range(2)], strict=True))
        return pd.DataFrame({"a": a, "b": b, "y": rng.normal(size=a.size)
                             + pd.factorize(a)[0] * 0.6 - pd.factorize(b)[0] * 0.4}), \
            "y ~ 1 + (1|a) + (1|b)"
    if family == "slopes":
        sizes = [3, 4, 5, 4, 3, 5]
        g = np.repeat([f"g{i}" for i in range(6)], sizes)
        x = rng.normal(size=g.size)
        y = (1.0 + 0.5 * x + np.repeat(rng.normal(size=6), sizes)
             + np.repeat(rng.normal(0.0, 0.4, 6), sizes) * x)
        return pd.DataFrame({"g": g, "x": x, "y": y + rng.normal(0.0, 0.7, g.size)}), \
            "y ~ x + (1 + x|g)"
    raise KeyError(family)


def _glmm_data(family: str, shift: float, scale: float, seed: int):
    """Binomial or Poisson rows: one factor with a covariate, or crossed factors (multilevel).

    ``shift + scale * y`` (and the same of the trials) keeps them counts when shift and scale
    are whole numbers, and successes <= trials.
    """
    from varcomp.models.design import from_formula

    rng = np.random.default_rng(seed)
    kind, several = family.split("_")[0], family.endswith("_multilevel")
    a = np.repeat([f"a{i}" for i in range(4)], 6)
    b = np.tile([f"b{j}" for j in range(3)], 8)
    x = rng.normal(size=a.size)
    n = rng.integers(1, 6, a.size)
    y = rng.binomial(n, 0.4) if kind == "binomial" else rng.poisson(2.0, a.size)
    frame = pd.DataFrame({"a": a, "b": b, "x": x, "y": shift + scale * y,
                          "n": shift + scale * n})
    rhs = "1 + (1|a) + (1|b)" if several else "x + (1|a)"
    lhs = "p(y, n)" if kind == "binomial" else "y"
    return from_formula(frame, f"{lhs} ~ {rhs}", family=kind)


def _mixed_data(family: str, shift: float = 0.0, scale: float = 1.0, seed: int = 0):
    """Small data of ``family`` with responses ``shift + scale * y`` (the same design)."""
    from varcomp.models.design import from_formula

    if family.startswith(("binomial", "poisson")):  # the GLMMs: counts stay counts
        return _glmm_data(family, shift, scale, seed)
    if family == "oneway":
        from varcomp.models.simulate import simulate_univariate

        data = simulate_univariate(5, [1, 2, 3, 5, 4], mu=10.0, tau=1.0, sigma=2.0,
                                   rng=3 + seed).data()
    elif family == "multivariate":
        data = _partly_missing(2, seed)
    else:
        frame, formula = _formula_frame(family, seed)
        frame["y"] = shift + scale * frame["y"]
        return from_formula(frame, formula)
    frame = data.to_frame()
    cols = list(data.responses)
    frame[cols] = shift + scale * frame[cols]
    return type(data).from_frame(frame, group=data.group_name,
                                 response=cols if len(cols) > 1 else cols[0])


@pytest.fixture(scope="session")
def mixed_data():
    """``mixed_data(family, shift=0, scale=1) -> data``: small data of every registered family
    (``models.forms.FAMILY_MODULES``); ``shift + scale * y`` keeps the design."""
    return _mixed_data


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


# ---------------------------------------------------------------------------------- fakes
def _fake_fit(name: str, rng: np.random.Generator, *, shift: dict | None = None,
             divergences: int = 0, chains: int = 4, draws: int = 1000):
    """A one-way Fit of independent draws (ESS = draws): mu ~ N(1, 0.5), log tau ~ N(0, 0.3),
    log sigma ~ N(0.5, 0.1), icc derived; ``shift`` adds to a variable before icc is derived."""
    import arviz as az

    from varcomp.models.sampling import Fit

    size = (chains, draws)
    post = {"mu": rng.normal(1.0, 0.5, size), "tau": np.exp(rng.normal(0.0, 0.3, size)),
            "sigma": np.exp(rng.normal(0.5, 0.1, size))}
    for var, delta in (shift or {}).items():
        post[var] = post[var] + delta
    post["icc"] = post["tau"] ** 2 / (post["tau"] ** 2 + post["sigma"] ** 2)
    div = np.zeros(size, dtype=bool)
    div.flat[:divergences] = True
    idata = az.from_dict(posterior=post, sample_stats={"diverging": div})
    return Fit(name, idata, {}, {}, {})


def _fake_mv_fit(name: str, rng: np.random.Generator, *, shift_corr_within: float = 0.0,
                chains: int = 4, draws: int = 1000, outcomes=("a", "b")):
    """A bivariate Fit of independent draws: mu, and V, Sigma built from log-normal sds and
    tanh-normal correlations; the Deterministics as the models define them."""
    import arviz as az

    from varcomp.models.sampling import Fit

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
    coords = {"outcome": list(outcomes), "outcome_bis": list(outcomes)}
    idata = az.from_dict(posterior=post, dims=dims, coords=coords,
                         sample_stats={"diverging": np.zeros(size, dtype=bool)})
    return Fit(name, idata, {}, {}, {})


@pytest.fixture(scope="session")
def fake_fit():
    """``fake_fit(name, rng, *, shift=None, divergences=0, chains=4, draws=1000) -> Fit``."""
    return _fake_fit


@pytest.fixture(scope="session")
def fake_mv_fit():
    """``fake_mv_fit(name, rng, *, shift_corr_within=0, chains=4, draws=1000) -> Fit``."""
    return _fake_mv_fit


# ---------------------------------------------------------------------- one fit per session
SMALL_FIT = {"draws": 300, "tune": 300, "chains": 2, "seed": 1}
"""Settings of the session's shared fits: enough for structure and contract checks."""


@pytest.fixture(scope="session")
def dyestuff_fit():
    """``analyses.fit.fit(dyestuff)``: the default (compiled sufficient) form, 2 x 300 draws."""
    from varcomp.analyses.fit import fit
    from varcomp.models import load

    return fit(load("dyestuff"), **SMALL_FIT)


@pytest.fixture(scope="session")
def gcsemv_fit():
    """``analyses.fit.fit(gcsemv)``: the compiled multivariate sufficient form (382 partly
    missing rows), 2 x 300 draws, group effects added from their exact conditional."""
    from varcomp.analyses.fit import fit
    from varcomp.models import load

    return fit(load("gcsemv"), **SMALL_FIT)
