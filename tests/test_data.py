"""The data layer: validation, dropped-row counting, sufficient statistics, loading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varcomp.models.data import DATASETS, ClusteredData, DataError, GroupStats, group_stats, load


def test_sufficient_statistics_match_a_per_group_loop(unbalanced):
    """n_l, group means and within-group SS equal the textbook per-group formulas."""
    st = unbalanced.stats
    assert unbalanced.groups.tolist() == ["a", "b", "c"]
    assert st.n[:, 0].tolist() == [4, 1, 2]
    for k, vals in enumerate([[1.0, 2.0, 4.0, 7.0], [3.0], [5.0, 6.5]]):
        v = np.array(vals)
        assert st.mean[k, 0] == pytest.approx(v.mean(), rel=1e-15)
        assert st.ss[k, 0] == pytest.approx(((v - v.mean()) ** 2).sum(), rel=1e-13, abs=0)
    assert st.ss[1, 0] == 0.0  # a singleton has no within-group spread


def test_offset_1e9_leaves_within_ss_unchanged(rng):
    """SS about the group mean is shift-invariant; the naive sum x^2 - n xbar^2 is not."""
    codes = rng.integers(0, 50, size=20_000)
    y = rng.normal(size=codes.size) + codes * 0.1
    a = group_stats(y, codes, 50)
    b = group_stats(y + 1e9, codes, 50)
    # the data themselves are rounded at 1e9 (ulp 1.2e-7): compare at that resolution
    np.testing.assert_allclose(b.ss, a.ss, rtol=1e-6)
    np.testing.assert_allclose(b.mean - 1e9, a.mean, atol=1e-6)
    naive = np.bincount(codes, weights=(y + 1e9) ** 2) - a.n[:, 0] * b.mean[:, 0] ** 2
    assert np.max(np.abs(naive - a.ss[:, 0]) / a.ss[:, 0]) > 1e-3  # why the two-pass form matters


def test_missing_response_rows_are_dropped_and_counted():
    """Univariate rows with NaN/inf responses are dropped, counted and warned about."""
    df = pd.DataFrame({"g": list("aabbcc"), "y": [1.0, np.nan, 2.0, np.inf, 3.0, 4.0]})
    d = ClusteredData.from_frame(df, group="g", response="y")
    assert d.n_obs == 4 and d.dropped_rows == 2
    assert any("2 row(s)" in w for w in d.warnings)


def test_all_missing_response_is_an_error():
    df = pd.DataFrame({"g": list("ab"), "y": [np.nan, np.nan]})
    with pytest.raises(DataError, match="missing"):
        ClusteredData.from_frame(df, group="g", response="y")


def test_missing_group_label_is_an_error():
    """A row without a cluster cannot be placed in the model: refuse, naming the rows."""
    df = pd.DataFrame({"g": ["a", None, "b"], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match="no 'g' label"):
        ClusteredData.from_frame(df, group="g", response="y")


def test_missing_column_lists_the_columns_present():
    df = pd.DataFrame({"Batch": ["a"], "Yield": [1.0]})
    with pytest.raises(DataError, match="columns present: Batch, Yield"):
        ClusteredData.from_frame(df, group="Batch", response="Nope")


def test_non_numeric_response_is_an_error():
    df = pd.DataFrame({"g": list("ab"), "y": ["1.0", "high"]})
    with pytest.raises(DataError, match="not numeric"):
        ClusteredData.from_frame(df, group="g", response="y")


def test_multivariate_rows_keep_a_mask():
    """Rows with some outcomes missing are kept (masked); a row with none is dropped, counted."""
    df = pd.DataFrame({"g": list("aabb"), "y1": [1.0, np.nan, 2.0, np.nan],
                       "y2": [3.0, 4.0, np.nan, np.nan]})
    d = ClusteredData.from_frame(df, group="g", response=["y1", "y2"])
    assert d.n_obs == 3 and d.dropped_rows == 1 and d.p == 2
    assert d.mask.tolist() == [[True, True], [False, True], [True, False]]
    assert d.stats.n.tolist() == [[1, 2], [1, 0]]


def test_scatter_matrix_is_the_pooled_within_group_scatter(rng):
    """W = sum_l sum_j (x - xbar_l)(x - xbar_l)^T, with diagonal equal to the per-column SS."""
    codes = np.repeat(np.arange(7), [3, 1, 4, 2, 5, 1, 2])
    y = rng.normal(size=(codes.size, 3))
    st = group_stats(y, codes, 7)
    w = np.zeros((3, 3))
    for g in range(7):
        r = y[codes == g] - y[codes == g].mean(axis=0)
        w += r.T @ r
    np.testing.assert_allclose(st.scatter, w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.diag(st.scatter), st.ss.sum(axis=0), rtol=1e-12)


def test_combine_equals_one_pass(rng):
    """Merging the statistics of two row sets (a group split across them) equals one pass."""
    codes = rng.integers(0, 9, size=500)
    y = rng.normal(size=500) * 3 + 100
    a, b = group_stats(y[:200], codes[:200], 9), group_stats(y[200:], codes[200:], 9)
    full = group_stats(y, codes, 9)
    merged = GroupStats.combine(a, b)
    np.testing.assert_array_equal(merged.n, full.n)
    np.testing.assert_allclose(merged.mean, full.mean, rtol=1e-13)
    np.testing.assert_allclose(merged.ss, full.ss, rtol=1e-11)


def test_shipped_datasets_load_with_natural_columns():
    for name in DATASETS:
        d = load(name)
        assert d.n_obs > 0 and d.n_groups > 1
    rail = load("rail")
    assert rail.n_groups == 6 and set(rail.sizes) == {3}
    radon = load("radon")
    assert radon.n_obs == 919 and radon.n_groups == 85 and int((radon.sizes == 1).sum()) == 3
    gcse = load("gcsemv")
    assert gcse.p == 2 and gcse.n_obs == 1905 and gcse.n_groups == 73 and gcse.dropped_rows == 0


def test_dyestuff_anova_matches_box_and_tiao():
    """Box & Tiao (1973): mean squares 11271.5 (5 df) and 2451.25 (24 df), F = 4.598."""
    a = load("dyestuff").anova()
    assert a["ms_between"] == pytest.approx(11271.5) and a["df_between"] == 5
    assert a["ms_within"] == pytest.approx(2451.25) and a["df_within"] == 24
    assert round(a["F"], 3) == 4.598
    assert not a["truncated"]
    assert load("dyestuff2").anova()["truncated"]


def test_csv_and_parquet_paths_load_the_same(tmp_path):
    df = load("dyestuff").to_frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    a = load(tmp_path / "d.csv", group="Batch", response="Yield")
    b = load(tmp_path / "d.parquet", group="Batch", response="Yield")
    np.testing.assert_array_equal(a.y, b.y)
    assert a.groups.tolist() == b.groups.tolist()


def test_identifiability_errors():
    """One cluster, all singletons, or a constant response leave tau/sigma unidentifiable."""
    one = ClusteredData.from_frame(pd.DataFrame({"g": ["a"] * 3, "y": [1.0, 2, 3]}),
                                   group="g", response="y")
    with pytest.raises(DataError, match="only one cluster"):
        one.require_identifiable()
    singles = ClusteredData.from_frame(pd.DataFrame({"g": list("abc"), "y": [1.0, 2, 3]}),
                                       group="g", response="y")
    with pytest.raises(DataError, match="single"):
        singles.require_identifiable()
    const = ClusteredData.from_frame(pd.DataFrame({"g": list("aabb"), "y": [2.0] * 4}),
                                     group="g", response="y")
    with pytest.raises(DataError, match="constant"):
        const.require_identifiable()
