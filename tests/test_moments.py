"""GroupedMoments (models.moments): one-pass grouped moments and Chan's merge, against numpy."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pandas as pd
import pytest

from varcomp.models.data import group_stats
from varcomp.models.moments import GroupedMoments

COLUMNS = ("y", "x1", "x2")


def _data(rng: np.random.Generator, *, offset: float = 0.0, n_groups: int = 60):
    """Unbalanced groups (three singletons, sizes up to 30), rows in random order; 3 columns."""
    sizes = np.concatenate([[1, 1, 1, 2], rng.integers(1, 30, size=n_groups - 4)])
    labels = np.repeat(np.array([f"g{i:03d}" for i in range(sizes.size)], dtype=object), sizes)
    effects = np.repeat(rng.normal(0.0, 3.0, (sizes.size, 3)), sizes, axis=0)
    cov = np.array([[1.0, 0.6, -0.3], [0.6, 2.0, 0.1], [-0.3, 0.1, 0.5]])
    v = offset + effects + rng.multivariate_normal(np.zeros(3), cov, size=labels.size)
    order = rng.permutation(labels.size)
    return labels[order], v[order]


def _direct(keys: np.ndarray, v: np.ndarray):
    """Per-group n, mean, m2 by a Python loop over groups with np.mean and np.cov (the oracle)."""
    out = {}
    for k in pd.unique(keys):
        x = v[keys == k]
        out[k] = (x.shape[0], np.mean(x, axis=0), np.cov(x, rowvar=False, bias=True) * x.shape[0])
    return out


def _assert_close(got: GroupedMoments, want: GroupedMoments, rtol: float) -> None:
    """n exact; mean and m2 to ``rtol`` relative to each column's scale.

    Relative error of an off-diagonal cross-product is measured against sqrt(M_jj M_kk), the
    bound Cauchy-Schwarz gives for it (an off-diagonal entry near 0 has no relative accuracy);
    a mean against the column's overall spread for the same reason.
    """
    got, want = got.sorted(), want.sorted()
    np.testing.assert_array_equal(got.keys, want.keys)
    np.testing.assert_array_equal(got.n, want.n)
    mean_err, m2_err = _errors(got, want)
    assert mean_err <= rtol and m2_err <= rtol, (mean_err, m2_err)


def _errors(got: GroupedMoments, want: GroupedMoments) -> tuple[float, float]:
    """Largest relative errors of the means and cross-products (scales as in _assert_close)."""
    scale = np.maximum(np.abs(want.mean), np.sqrt(np.diagonal(want.pooled().m2) / want.n_obs))
    diag = np.diagonal(want.m2, axis1=1, axis2=2)
    bound = np.sqrt(diag[:, :, None] * diag[:, None, :])
    m2_err = np.abs(got.m2 - want.m2)
    exact = bound == 0  # singletons: both must be exactly 0
    assert np.all(m2_err[exact] == 0)
    return (float(np.max(np.abs(got.mean - want.mean) / scale, initial=0.0)),
            float(np.max(m2_err[~exact] / bound[~exact], initial=0.0)))


def test_from_arrays_equals_numpy_per_group(rng):
    """Per-group counts, means (np.mean) and centred cross-products (np.cov * n, i.e.
    np.cov * (n - 1) unbiased) are what one vectorised pass gives, to 1e-12 relative;
    singleton groups have M_g = 0 exactly."""
    keys, v = _data(rng)
    gm = GroupedMoments.from_arrays(keys, v, COLUMNS)
    direct = _direct(keys, v)
    assert list(gm.keys) == list(direct)  # order of first appearance
    worst = 0.0
    for g, k in enumerate(gm.keys):
        n, mean, m2 = direct[k]
        assert gm.n[g] == n
        np.testing.assert_allclose(gm.mean[g], mean, rtol=1e-12, atol=1e-12)
        if n > 1:  # np.cov(ddof=1) * (n - 1) is the same matrix
            np.testing.assert_allclose(np.cov(v[keys == k], rowvar=False) * (n - 1), m2,
                                       rtol=1e-12)
        scale = np.sqrt(np.outer(np.diag(m2), np.diag(m2))) if n > 1 else 1.0
        err = np.max(np.abs(gm.m2[g] - m2) / scale)
        worst = max(worst, err)
    assert worst < 1e-12, worst
    singletons = gm.n == 1
    assert singletons.sum() >= 3 and np.all(gm.m2[singletons] == 0.0)
    np.testing.assert_array_equal(gm.m2, np.swapaxes(gm.m2, 1, 2))


def _naive_m2(keys, v):
    """The broken textbook formula M = sum v v' - n mean mean' (sums of squares of raw values)."""
    codes, _ = pd.factorize(keys)
    G = codes.max() + 1
    n = np.bincount(codes, minlength=G)
    s = np.stack([np.bincount(codes, v[:, j], minlength=G) for j in range(v.shape[1])], 1)
    ss = np.stack([np.stack([np.bincount(codes, v[:, j] * v[:, k], minlength=G)
                             for k in range(v.shape[1])], 1) for j in range(v.shape[1])], 1)
    return ss - s[:, :, None] * s[:, None, :] / n[:, None, None]


def test_offset_of_1e6_costs_no_accuracy(rng):
    """Centred cross-products are shift invariant: data with mean 1e6 and sd 1 give the m2 of the
    same data shifted to mean 0 (the subtraction v - 1e6 is exact) to 1e-9 relative; the naive
    sum-of-squares formula misses by far more than that (it is shown failing)."""
    keys, v0 = _data(rng, n_groups=40)
    v0 = (v0 - v0.mean(axis=0)) / v0.std(axis=0)  # mean 0, sd 1
    v = 1e6 + v0
    shifted = v - 1e6  # exact (Sterbenz): the same numbers as the data, at mean 0
    big = GroupedMoments.from_arrays(keys, v, COLUMNS)
    ref = GroupedMoments.from_arrays(keys, shifted, COLUMNS)
    many = big.n > 1
    diag = np.diagonal(ref.m2[many], axis1=1, axis2=2)
    bound = np.sqrt(diag[:, :, None] * diag[:, None, :])
    stable = np.max(np.abs(big.m2[many] - ref.m2[many]) / bound)
    naive = np.max(np.abs(_naive_m2(keys, v)[many] - ref.m2[many]) / bound)
    assert stable < 1e-9, stable
    assert naive > 1e-9, naive  # the broken version fails the same check
    np.testing.assert_allclose(big.mean - 1e6, ref.mean, rtol=0, atol=1e-9)
    # pooled over groups (between-group scatter added to the within) is shift invariant too
    np.testing.assert_allclose(big.pooled().m2, ref.pooled().m2, rtol=1e-9)


def _random_split(rng, n_rows: int, n_parts: int, *, contiguous: bool) -> list[np.ndarray]:
    """Row index sets of n_parts parts; the first part is always empty."""
    if contiguous:  # cuts fall inside groups of the (shuffled) rows
        cuts = np.sort(rng.integers(0, n_rows + 1, size=n_parts - 2))
        parts = np.split(np.arange(n_rows), cuts)
    else:
        owner = rng.integers(0, n_parts - 1, size=n_rows)
        parts = [np.flatnonzero(owner == p) for p in range(n_parts - 1)]
    return [np.array([], dtype=np.int64), *parts]


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_merge_of_random_splits_equals_one_pass(rng, offset):
    """Merging the moments of any partition of the rows by Chan's rule gives the moments of all
    rows: counts exactly, means and cross-products to 1e-12 relative, whatever the split (cuts
    inside groups, empty parts, singleton groups), the merge order or the tree shape."""
    keys, v = _data(rng, offset=offset)
    whole = GroupedMoments.from_arrays(keys, v, COLUMNS)
    for trial in range(12):
        parts = _random_split(rng, keys.size, int(rng.integers(2, 9)), contiguous=trial % 2 == 0)
        pieces = [GroupedMoments.from_arrays(keys[i], v[i], COLUMNS) for i in parts]
        order = rng.permutation(len(pieces))
        left = reduce(GroupedMoments.merge, [pieces[i] for i in order])
        right = reduce(lambda a, b: GroupedMoments.merge(b, a), [pieces[i] for i in order[::-1]])
        while len(pieces) > 1:  # balanced pairwise tree
            pieces = [reduce(GroupedMoments.merge, pieces[i:i + 2])
                      for i in range(0, len(pieces), 2)]
        for merged in (left, right, pieces[0]):
            _assert_close(merged, whole, rtol=1e-12)


def test_merge_identity_commutativity_associativity(rng):
    """An empty GroupedMoments is the identity of merge (bitwise); merge is commutative and
    associative up to rounding (1e-14 relative)."""
    keys, v = _data(rng, offset=1e3)
    a, b, c = (GroupedMoments.from_arrays(keys[s], v[s], COLUMNS)
               for s in np.array_split(np.arange(keys.size), 3))
    empty = GroupedMoments.empty(COLUMNS)
    for e in (GroupedMoments.merge(a, empty), GroupedMoments.merge(empty, a)):
        np.testing.assert_array_equal(e.keys, a.keys)
        np.testing.assert_array_equal(e.n, a.n)
        np.testing.assert_array_equal(e.mean, a.mean)
        np.testing.assert_array_equal(e.m2, a.m2)
    _assert_close(GroupedMoments.merge(a, b), GroupedMoments.merge(b, a), rtol=1e-14)
    _assert_close(GroupedMoments.merge(GroupedMoments.merge(a, b), c),
                  GroupedMoments.merge(a, GroupedMoments.merge(b, c)), rtol=1e-14)


def test_keys_are_text():
    """Labels are text: "07" and "7", "1E1" and "10" are four groups, in one pass and after
    merges; an integer 7 is the text "7"."""
    keys = np.array(["07", "7", "1E1", "10", "07", "7"], dtype=object)
    v = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    gm = GroupedMoments.from_arrays(keys, v, ["y"])
    assert list(gm.keys) == ["07", "7", "1E1", "10"]
    np.testing.assert_array_equal(gm.n, [2, 2, 1, 1])
    np.testing.assert_array_equal(gm.mean[:, 0], [3.0, 4.0, 3.0, 4.0])
    merged = GroupedMoments.merge(GroupedMoments.from_arrays(keys[:3], v[:3], ["y"]),
                                  GroupedMoments.from_arrays(keys[3:], v[3:], ["y"]))
    _assert_close(merged, gm, rtol=1e-15)
    ints = GroupedMoments.from_arrays(np.array([7, 7]), [1.0, 2.0], ["y"])
    assert list(GroupedMoments.merge(ints, gm).sorted().keys) == ["07", "10", "1E1", "7"]


def test_compound_keys_merge_by_every_part(rng):
    """Compound keys (school, class) identify a cell by all parts; ("a", "b c") and ("a b", "c")
    stay apart, and merges of splits equal the one-pass statistics."""
    school = rng.choice(["a", "a b", "s1", "07", "7"], size=400)
    klass = rng.choice(["b c", "c", "1", "2"], size=400)
    keys = np.stack([school, klass], axis=1).astype(object)
    v = rng.normal(5.0, 1.0, size=(400, 2))
    whole = GroupedMoments.from_arrays(keys, v, ["y", "x"])
    assert whole.keys.shape == (whole.n_groups, 2)
    assert len({tuple(k) for k in whole.keys}) == whole.n_groups == len(set(map(tuple, keys)))
    pieces = [GroupedMoments.from_arrays(keys[s], v[s], ["y", "x"])
              for s in np.array_split(rng.permutation(400), 5)]
    _assert_close(GroupedMoments.merge_all(pieces), whole, rtol=1e-12)
    # the oracle: pandas groupby on the two parts
    frame = pd.DataFrame({"s": school, "c": klass, "y": v[:, 0]})
    counts = frame.groupby(["s", "c"]).size()
    s = whole.sorted()
    np.testing.assert_array_equal(s.n, counts.to_numpy())
    assert [tuple(k) for k in s.keys] == list(counts.index)


def test_pooled_equals_all_rows(rng):
    """pooled() adds the between-group scatter to the within: the count, mean and cross-products
    of all rows (np.cov * N), to 1e-12 relative, here at an offset of 1e6."""
    keys, v = _data(rng, offset=1e6)
    total = GroupedMoments.from_arrays(keys, v, COLUMNS).pooled()
    centred = v - 1e6  # exact; the oracle works at mean 0
    assert total.n == v.shape[0]
    np.testing.assert_allclose(total.mean - 1e6, centred.mean(axis=0), rtol=0, atol=1e-9)
    want = np.cov(centred, rowvar=False, bias=True) * v.shape[0]
    bound = np.sqrt(np.outer(np.diag(want), np.diag(want)))
    assert np.max(np.abs(total.m2 - want) / bound) < 1e-12
    np.testing.assert_allclose(total.cov, np.cov(centred, rowvar=False), rtol=1e-12)


def test_to_group_stats_equals_data_layer(rng):
    """The univariate statistics the models read (models.data.group_stats: n, mean, S, the
    within scatter) are the diagonal view of the grouped moments."""
    keys, v = _data(rng, offset=1e6)
    gm = GroupedMoments.from_arrays(keys, v, COLUMNS)
    codes, _ = pd.factorize(keys)
    ref = group_stats(v, codes, gm.n_groups)
    got = gm.to_group_stats()
    np.testing.assert_array_equal(got.n, ref.n)
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-15)
    np.testing.assert_allclose(got.ss, ref.ss, rtol=1e-12)
    np.testing.assert_allclose(got.scatter, ref.scatter, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    """The class takes finite values only; a NaN or infinite value is a ValueError naming the
    column (dropping rows is the caller's decision)."""
    v = np.array([[1.0, 2.0], [3.0, bad]])
    with pytest.raises(ValueError, match="column 'x' has 1 non-finite"):
        GroupedMoments.from_arrays(["a", "b"], v, ["y", "x"])
    with pytest.raises(ValueError, match="no group label"):
        GroupedMoments.from_arrays(["a", None], v[:, :1] * 0, ["y"])
