"""What a formula means: response transforms, offsets, categorical interactions, centring and
scaling over the whole data (chunks, Dask), the size refusal and the messages naming the cause.

The oracle of each is the same model written without the feature (a pre-transformed column,
y - z, one factor of combined labels, the in-memory fit), compared by REML (models.lmm.estimates).
"""

from __future__ import annotations

import time

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from varcomp.models.design import _rank_check, from_formula
from varcomp.models.errors import DataError
from varcomp.models.lmm import estimates


def _frame(seed: int = 0, n: int = 300, L: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, L, n)
    df = pd.DataFrame({"g": g.astype(str), "x": rng.normal(size=n) + 3, "z": rng.normal(size=n),
                       "k": rng.choice(list("abc"), n), "h": rng.choice(list("pqrstu"), n)})
    df["y"] = np.exp(1 + 0.3 * df.x + 0.3 * rng.normal(size=L)[g] + 0.3 * rng.normal(size=n))
    return df


def _reml(data):
    return estimates(data)["reml"].fit


def _same_fit(a, b, rel: float = 1e-9, beta: bool = True) -> None:
    """Same REML criterion and sigma; same beta unless the two parametrise X differently."""
    fa, fb = _reml(a), _reml(b)
    assert fa.criterion == pytest.approx(fb.criterion, rel=rel)
    if beta:
        want = pytest.approx(list(fb.beta.values()), rel=1e-7, abs=1e-9)
        assert list(fa.beta.values()) == want
    assert fa.sigma == pytest.approx(fb.sigma, rel=1e-7)


def test_a_response_transform_is_fitted():
    """np.log(y) ~ x fits log y: REML equal to the fit of a pre-logged column, and not to y's."""
    df = _frame()
    df["ly"] = np.log(df.y)
    logged = from_formula(df, "np.log(y) ~ x + (1|g)")
    _same_fit(logged, from_formula(df, "ly ~ x + (1|g)"))
    assert logged.responses == ("np.log(y)",)
    raw = _reml(from_formula(df, "y ~ x + (1|g)"))
    assert abs(raw.criterion - _reml(logged).criterion) > 1.0  # the dropped transform differs


def test_an_offset_has_its_coefficient_fixed_at_one():
    """offset(z): REML equal to the fit of y - z; no beta[offset(z)]; the data say so."""
    df = _frame()
    df["ymz"] = df.y - 2 * df.z
    off = from_formula(df, "y ~ x + C(k) + offset(2 * z) + (1|g)")
    _same_fit(off, from_formula(df, "ymz ~ x + C(k) + (1|g)"))
    assert "offset(2 * z)" not in off.design.terms and off.design.offsets == ("offset(2 * z)",)
    assert off.responses == ("y - offset(2 * z)",)
    assert any("coefficient fixed at 1" in w for w in off.warnings)
    free = _reml(from_formula(df, "y ~ x + C(k) + z + (1|g)"))
    assert abs(free.criterion - _reml(off).criterion) > 1e-3


def test_an_interaction_of_two_categoricals_spans_their_cells():
    """C(k):C(h) (3 x 6 levels) beside C(h) spans the 18 cells: REML equal to one factor of the
    combined labels."""
    df = _frame()
    df["kh"] = df.k + "_" + df.h
    inter = from_formula(df, "y ~ C(h) + C(k):C(h) + (1|g)")
    assert inter.design.k == 18
    _same_fit(inter, from_formula(df, "y ~ C(kh) + (1|g)"), rel=1e-8, beta=False)


STATEFUL = ["y ~ center(x) + (1|g)",
            "np.log(y) ~ center(x) + scale(z) + C(k) + (1|g)",
            "y ~ I(center(x) ** 2) + standardize(z) + offset(z) + (1|g)"]


def _set_stateful_broken(monkeypatch):
    """The broken variant: no whole-data pass (the design keeps its template's statistics)."""
    import varcomp.models.distributed as distributed
    import varcomp.models.formula_stats as fs

    monkeypatch.setattr(fs, "set_stateful", lambda spec, partials: None)
    monkeypatch.setattr(distributed, "stateful_calls", lambda spec: {}, raising=False)


@pytest.mark.parametrize("formula", STATEFUL)
@pytest.mark.parametrize("broken", [False, True])
def test_centring_in_chunks_equals_in_memory(tmp_path, monkeypatch, formula, broken):
    from varcomp.models.formula_stats import read_formula_stats

    df = _frame(seed=1)
    df.to_csv(tmp_path / "d.csv", index=False)
    mem = from_formula(pd.read_csv(tmp_path / "d.csv", dtype={"g": str}), formula)
    if broken:  # the template's statistics: a wrong fit, or scale()'s sd 0 leaves no row
        _set_stateful_broken(monkeypatch)
        with pytest.raises((AssertionError, DataError)):
            _same_fit(read_formula_stats(tmp_path / "d.csv", formula, chunk_rows=37), mem)
        return
    chunked = read_formula_stats(tmp_path / "d.csv", formula, chunk_rows=37)
    _same_fit(chunked, mem)
    assert chunked.responses == mem.responses


@pytest.mark.parametrize("broken", [False, True])
def test_centring_and_scaling_on_dask_equal_in_memory(monkeypatch, broken):
    """Seven partitions on a local cluster: center(x), scale(z) from the whole data's mean/sd."""
    from varcomp.models.dask_clients import local_client
    from varcomp.models.distributed import formula_stats_dask

    formula = STATEFUL[1]
    df = _frame(seed=2)
    mem = from_formula(df, formula)
    ddf = dd.from_pandas(df, npartitions=7)
    if broken:
        _set_stateful_broken(monkeypatch)
    with local_client(n_workers=2, processes=False):
        if broken:
            with pytest.raises((AssertionError, DataError)):
                _same_fit(formula_stats_dask(ddf, formula, source="mem"), mem)
        else:
            _same_fit(formula_stats_dask(ddf, formula, source="mem"), mem)


def test_a_factor_with_many_levels_as_a_fixed_effect_is_refused_before_building():
    """C(id) with 10^4 levels beside (1|g), 20,000 rows: one line naming the group term, fast
    (the design, 1.6 GB, is never built)."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"id": np.repeat(np.arange(10_000), 2).astype(str),
                       "g": rng.integers(0, 50, 20_000).astype(str),
                       "y": rng.normal(size=20_000)})
    t0 = time.perf_counter()
    with pytest.raises(DataError) as info:
        from_formula(df, "y ~ C(id) + (1|g)")
    print(f"refused in {time.perf_counter() - t0:.2f} s")
    msg = str(info.value)
    assert "10,001 columns" in msg and "(1|id)" in msg and "\n" not in msg


MESSAGES = [
    ("~ x + (1|g)", lambda d: d, "has no response: write 'y ~ ...'"),
    ("y ~ x + a + (1|g)", lambda d: d.assign(a=np.nan), "covariate 'a' has no observed value"),
    ("y ~ x + t + (1|g)", lambda d: d.assign(t=d.z * 1e-300), "'t' is at most"),
    ("y ~ x + t + (1|g)", lambda d: d.assign(t=d.z * 1e305), "overflow"),
    ("np.log(z) ~ x + (1|g)", lambda d: d.assign(z=-1 - d.x.abs()), "has no finite value"),
    ("y ~ x + offset(k) + (1|g)", lambda d: d, "column 'k' is not numeric"),
]


@pytest.mark.parametrize(("formula", "change", "words"), MESSAGES)
def test_messages_name_the_real_cause(formula, change, words):
    with pytest.raises(DataError) as info:
        from_formula(change(_frame()), formula)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert "all zero" not in str(info.value) and "'data' does not" not in str(info.value)


def test_a_small_but_valid_covariate_is_fitted():
    """1e-100-scale values square to 1e-200, normal float64: fitted, same beta * scale."""
    df = _frame()
    small = _reml(from_formula(df.assign(t=df.x * 1e-100), "y ~ t + (1|g)"))
    plain = _reml(from_formula(df, "y ~ x + (1|g)"))
    assert small.beta["t"] * 1e-100 == pytest.approx(plain.beta["x"], rel=1e-7)


def _rank_check_per_column(X, terms):
    """The oracle: one rank per leading block of columns (the former loop)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    for j in range(X.shape[1]):
        if np.linalg.matrix_rank(Xs[:, :j + 1], tol=1e-9 * max(1.0, np.sqrt(X.shape[0]))) <= j:
            return terms[j]
    return None


@pytest.mark.parametrize("dependent", [None, 1, 4, 7, 11])
def test_the_rank_check_names_the_first_dependent_column(dependent):
    rng = np.random.default_rng(dependent or 0)
    X = np.column_stack([np.ones(40), rng.normal(size=(40, 11))])
    if dependent is not None:
        X[:, dependent] = X[:, :dependent] @ rng.normal(size=dependent)
        X[:, -1] = X[:, 2] + X[:, 3]  # a later dependent column must not be named first
    terms = [f"c{j}" for j in range(X.shape[1])]
    want = _rank_check_per_column(X, terms)
    if want is None:
        _rank_check(X, terms)
        return
    with pytest.raises(DataError, match=f"'{want}' is a linear combination"):
        _rank_check(X, terms)
