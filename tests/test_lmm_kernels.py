"""The compiled random-intercept LMM kernels: exact against dense Gaussians, analytic gradients."""

from __future__ import annotations

from decimal import Decimal, localcontext

import numba
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from varcomp.models.compiled.lmm_nested import (
    NESTED_LAYOUT,
    nested_loglik,
    nested_loglik_grad_fast,
    nested_loglik_grad_work,
    nested_stats,
    nested_work_size,
    pack_nested,
)
from varcomp.models.compiled.lmm_strata import (
    pack_strata,
    strata_loglik,
    strata_loglik_grad,
    strata_stats,
)

EXACT = 1e-9        # relative, value against scipy's dense multivariate normal
# ------------------------------------------------------------------------------------ designs


def _indicator(*codes) -> np.ndarray:
    """Row-by-unit indicator of the combination of ``codes`` (Z_d, or Z_T of an interaction)."""
    keys = np.unique(np.column_stack(codes), axis=0, return_inverse=True)[1].ravel()
    return (keys[:, None] == np.arange(keys.max() + 1)).astype(np.float64)


def _nested_codes(rng, children: list[int], sizes_of_cells) -> list[np.ndarray]:
    """Codes of a nested design, top first; ``children[d]`` units below each level-d unit."""
    units = [np.arange(children[0])]
    for d in range(1, len(children)):
        m = units[-1].size                                  # units[d]: parent of each unit
        units.append(np.repeat(np.arange(m), rng.integers(1, children[d] + 1, m)))
    cell_parent = [np.arange(units[-1].size)]              # the cells' own index, bottom level
    for d in range(len(units) - 1, 0, -1):
        cell_parent.insert(0, units[d][cell_parent[0]])
    sizes = sizes_of_cells(units[-1].size)
    row_cell = np.repeat(np.arange(units[-1].size), sizes)
    return [chain[row_cell] for chain in cell_parent]


def _simulate(rng, effects, X, beta, tau, sigma):
    """y = X beta + random intercepts + noise; ``effects``: per term, the codes it crosses."""
    N = X.shape[0]
    y = X @ beta + sigma * rng.normal(size=N)
    for codes, t in zip(effects, tau, strict=True):
        Z = _indicator(*codes)
        y = y + Z @ (t * rng.normal(size=Z.shape[1]))
    return y


def nested_design(name: str) -> dict:
    """Small nested data sets (N 30-80), rows shuffled and labels non-contiguous."""
    rng = np.random.default_rng(NESTED.index(name))
    if name == "D1 balanced":
        codes = [np.repeat(np.arange(6), 5)]
    elif name == "D1 unbalanced":
        codes = [np.repeat(np.arange(12), [1, 1, 1, 2, 3, 5, 8, 1, 4, 6, 2, 9])]
    elif name in ("D2 unbalanced", "D2 offset"):
        codes = _nested_codes(rng, [4, 4], lambda c: rng.choice([1, 1, 2, 3, 6], c))
    elif name == "D3":
        codes = _nested_codes(rng, [4, 3, 4], lambda c: rng.choice([1, 2, 3, 4, 5], c))
    else:
        raise KeyError(name)
    N = codes[0].size
    order = rng.permutation(N)
    codes = [c[order] for c in codes]
    top = rng.normal(size=codes[0].max() + 1)[codes[0]]   # a covariate constant within top units
    offset = name.endswith("offset")
    x2 = top + (1e4 if offset else 0.0)
    X = np.column_stack([np.ones(N), rng.normal(size=N), x2])
    beta = np.array([1e6 - 0.5e4 if offset else 0.5, 0.3, 0.5])
    D = len(codes)
    y = _simulate(rng, [[c] for c in codes], X, beta, [0.7] * D, 1.0)
    labelled = [c * 7 + 100 for c in codes]                # any labels, not 0..m-1
    return {"y": y, "X": X, "codes": labelled, "Zs": [_indicator(c) for c in codes], "beta": beta,
            "beta_sd": np.array([0.3, 0.3, 0.3])}


def crossed_design(name: str) -> dict:
    """Small balanced crossed data sets with a row and a factor-level covariate."""
    rng = np.random.default_rng(100 + CROSSED.index(name))
    levels, n, terms = {"axb n1": ((6, 7), 1, [(0,), (1,)]),
                        "axb n2": ((5, 6), 2, [(0,), (1,), (0, 1)]),
                        "axb offset": ((4, 5), 2, [(0,), (1,), (0, 1)]),
                        "axbxc n1": ((3, 4, 3), 1, [(0,), (1,), (2,), (0, 1)])}[name]
    grid = np.stack(np.meshgrid(*[np.arange(m) for m in levels], indexing="ij"), -1)
    grid = np.repeat(grid.reshape(-1, len(levels)), n, axis=0)
    grid = grid[rng.permutation(grid.shape[0])]
    codes = [grid[:, f] for f in range(len(levels))]
    N = grid.shape[0]
    offset = name.endswith("offset")
    xa = rng.normal(size=levels[0])[codes[0]] + (1e4 if offset else 0.0)
    X = np.column_stack([np.ones(N), rng.normal(size=N), xa])
    beta = np.array([1e6 - 0.5e4 if offset else 0.5, 0.3, 0.5])
    y = _simulate(rng, [[codes[f] for f in T] for T in terms], X, beta, [0.7] * len(terms), 1.0)
    return {"y": y, "X": X, "codes": codes, "terms": terms, "beta": beta,
            "Zs": [_indicator(*[codes[f] for f in T]) for T in terms],
            "beta_sd": np.array([0.3, 0.3, 0.3])}


NESTED = ["D1 balanced", "D1 unbalanced", "D2 unbalanced", "D3", "D2 offset"]
CROSSED = ["axb n1", "axb n2", "axbxc n1", "axb offset"]


def _grad_error(g, ref, theta) -> float:
    """Largest componentwise relative error of gradient ``g`` against ``ref`` at ``theta``.

    A component is compared with itself, floored at a thousandth of the gradient's scale in log
    coordinates (max_j |ref_j theta_j| / |theta_i|): a component far below that is the remainder
    of a cancellation, whose rounding error is set by the terms that cancel, not by itself.
    """
    floor = 1e-3 * np.max(np.abs(ref * theta)) / np.maximum(np.abs(theta), 1e-300)
    return float(np.max(np.abs(g - ref) / np.maximum(np.abs(ref), floor)))


def _perturbed(rng, beta, sd, X) -> np.ndarray:
    """beta moved by N(0, sd) in centred-covariate coordinates (the intercept absorbs xbar'dbeta),
    as posterior draws move: residuals stay O(1) even when a covariate's mean is 1e4."""
    step = sd * rng.normal(size=beta.size)
    step[0] -= X[:, 1:].mean(axis=0) @ step[1:]
    return beta + step


def _points(rng, d: dict, n_tau: int, count: int = 24):
    """Random (beta, tau2, s2): sigma log-uniform in [0.3, 3], tau/sigma in [1e-4, 1e2]."""
    for _ in range(count):
        sigma = 10 ** rng.uniform(-0.5, 0.5)
        tau = sigma * 10 ** rng.uniform(-4, 2, n_tau)
        yield _perturbed(rng, d["beta"], d["beta_sd"], d["X"]), tau**2, sigma**2


# ---------------------------------------------------------------------------------- references
def _dense_cov(Zs, tau2, s2):
    N = Zs[0].shape[0]
    return s2 * np.eye(N) + sum(t * (Z @ Z.T) for t, Z in zip(tau2, Zs, strict=True))


def _scipy_loglik(d, beta, tau2, s2) -> float:
    return float(multivariate_normal(d["X"] @ beta, _dense_cov(d["Zs"], tau2, s2)).logpdf(d["y"]))


def _complex_loglik(d, beta, tau2, s2) -> complex:
    """The dense Gaussian log density, complex-analytic in every parameter (no conjugates)."""
    r = d["y"] - d["X"] @ beta
    V = _dense_cov(d["Zs"], tau2, s2)
    sign, logabs = np.linalg.slogdet(V)
    return -0.5 * (r.size * np.log(2 * np.pi) + np.log(sign) + logabs + r @ np.linalg.solve(V, r))


def _complex_step_grad(d, beta, tau2, s2) -> np.ndarray:
    """(d/dbeta, d/dtau2, d/ds2) of the dense density by complex step (h = 1e-30)."""
    h = 1e-30
    theta = np.concatenate([beta, tau2, [s2]]).astype(complex)
    k, D = beta.size, tau2.size
    grad = np.empty(theta.size)
    for i in range(theta.size):
        th = theta.copy()
        th[i] += 1j * h
        grad[i] = _complex_loglik(d, th[:k], th[k:k + D], th[-1]).imag / h
    return grad


def _decimal_loglik(d, beta, tau2, s2) -> Decimal:
    """The dense Gaussian log density in 40-digit decimal arithmetic (LDL' of the exact V),
    from the exact values of the float64 inputs: an oracle more accurate than float64."""
    with localcontext() as ctx:
        ctx.prec = 40
        D = [Decimal(float(v)) for v in (*tau2, s2)]
        share = [Z @ Z.T for Z in d["Zs"]]
        N = d["y"].size
        V = [[(D[-1] if i == j else 0)
              + sum(t for t, S in zip(D[:-1], share, strict=True) if S[i, j])
              for j in range(N)] for i in range(N)]
        r = [Decimal(float(y)) - sum(Decimal(float(x)) * Decimal(float(b))
                                     for x, b in zip(row, beta, strict=True))
             for y, row in zip(d["y"], d["X"], strict=True)]
        L = [[Decimal(0)] * N for _ in range(N)]
        diag = [Decimal(0)] * N
        z = [Decimal(0)] * N
        for j in range(N):
            diag[j] = V[j][j] - sum(L[j][m] * L[j][m] * diag[m] for m in range(j))
            for i in range(j + 1, N):
                L[i][j] = (V[i][j] - sum(L[i][m] * L[j][m] * diag[m] for m in range(j))) / diag[j]
            z[j] = r[j] - sum(L[j][m] * z[m] for m in range(j))
        pi = Decimal("3.141592653589793238462643383279502884197")
        return -(N * (2 * pi).ln() + sum(x.ln() for x in diag)
                 + sum(zi * zi / di for zi, di in zip(z, diag, strict=True))) / 2


def _compiled(d, kind):
    """(evaluate(beta, tau2, s2) -> (value, flat gradient), block) for a design."""
    if kind == "nested":
        block = pack_nested(nested_stats(d["y"], d["X"], d["codes"]))

        def evaluate(beta, tau2, s2, fast=False):
            v, gb, gt, gs = nested_loglik(beta, tau2, s2, block, fast=fast)
            return v, np.concatenate([gb, gt, [gs]])
    else:
        block = pack_strata(strata_stats(d["y"], d["X"], d["codes"], d["terms"]))

        def evaluate(beta, tau2, s2, fast=False):
            v, gb, gt, gs = strata_loglik(beta, tau2, s2, block)
            return v, np.concatenate([gb, gt, [gs]])
    return evaluate, block


CASES = [("nested", n) for n in NESTED] + [("crossed", n) for n in CROSSED]


def _design(kind, name):
    return nested_design(name) if kind == "nested" else crossed_design(name)


# -------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("kind", "name"), CASES)
def test_loglik_equals_dense_multivariate_normal(kind, name):
    """Integrating out every random intercept leaves y ~ N(X beta, s2 I + sum tau2 Z Z'): the
    recursion (nested) and the strata eigen-decomposition (crossed) give its log density exactly,
    from tau/sigma = 1e-4 to 1e2, also for y of mean 1e6 and a covariate of mean 1e4."""
    d = _design(kind, name)
    evaluate, _ = _compiled(d, kind)
    rng = np.random.default_rng(7)
    errs = []
    for beta, tau2, s2 in _points(rng, d, len(d["Zs"])):
        ref = _scipy_loglik(d, beta, tau2, s2)
        errs.append(abs(evaluate(beta, tau2, s2)[0] - ref) / abs(ref))
    print(f"{kind} {name}: N={d['y'].size}, max relative error {max(errs):.2e}")
    assert max(errs) < EXACT


def test_offset_data_defeat_uncentred_sums():
    """The offset data are hard: log L from uncentred cross-products (y'y ~ N 1e12) misses the
    exact value by far more than the 1e-9 the centred kernel meets, so the test has teeth."""
    d = nested_design("D2 offset")
    y, X = d["y"], d["X"]
    beta, tau2, s2 = d["beta"], np.array([0.5, 0.5]), 1.0
    rss_naive = y @ y - 2 * beta @ (X.T @ y) + beta @ (X.T @ X) @ beta
    rss = np.sum((y - X @ beta) ** 2)
    evaluate, _ = _compiled(d, "nested")
    ref = _scipy_loglik(d, beta, tau2, s2)
    assert abs(rss_naive - rss) / (2 * s2) / abs(ref) > 1e3 * EXACT
    assert abs(evaluate(beta, tau2, s2)[0] - ref) / abs(ref) < EXACT


@pytest.mark.parametrize(("kind", "name"), [("nested", "D2 offset"), ("crossed", "axb offset")])
def test_offset_data_lose_no_accuracy(kind, name):
    """With y of mean 1e6 (sd ~1) and a covariate of mean 1e4, the centred statistics keep the
    log density accurate to 1e-10 relative against a 40-digit evaluation of the dense density
    (scipy's float64 evaluation itself is off by up to ~3e-11 there)."""
    d = _design(kind, name)
    evaluate, _ = _compiled(d, kind)
    rng = np.random.default_rng(7)
    errs = []
    for beta, tau2, s2 in _points(rng, d, len(d["Zs"]), count=6):
        ref = _decimal_loglik(d, beta, tau2, s2)
        errs.append(float(abs((Decimal(evaluate(beta, tau2, s2)[0]) - ref) / ref)))
    print(f"{kind} {name}: max relative error against 40 digits {max(errs):.2e}")
    assert max(errs) < 1e-10


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_gradient_equals_complex_step_of_dense_density(kind, name):
    """The hand-written reverse-mode gradient in (beta, tau2, sigma2) equals the complex-step
    derivative (exact to rounding) of the independent dense log density."""
    d = _design(kind, name)
    evaluate, _ = _compiled(d, kind)
    rng = np.random.default_rng(11)
    worst = 0.0
    for beta, tau2, s2 in _points(rng, d, len(d["Zs"]), count=8):
        g = evaluate(beta, tau2, s2)[1]
        ref = _complex_step_grad(d, beta, tau2, s2)
        worst = max(worst, _grad_error(g, ref, np.concatenate([beta, tau2, [s2]])))
    print(f"{kind} {name}: max relative gradient error vs complex step {worst:.2e}")
    assert worst < 1e-8


@pytest.mark.parametrize(("kind", "name"), [("nested", "D3"), ("nested", "D1 unbalanced"),
                                            ("crossed", "axb n2")])
def test_gradient_equals_finite_differences_of_the_kernel(kind, name):
    """The kernel's gradient is the derivative of the kernel's own value: five-point central
    differences (step 1e-3 of each coordinate's scale) agree to 1e-6 relative."""
    d = _design(kind, name)
    evaluate, _ = _compiled(d, kind)
    rng = np.random.default_rng(3)
    k = d["beta"].size
    worst = 0.0
    for beta, tau2, s2 in _points(rng, d, len(d["Zs"]), count=6):
        theta = np.concatenate([beta, tau2, [s2]])
        g = evaluate(beta, tau2, s2)[1]

        def f(th):
            return evaluate(th[:k], th[k:-1], th[-1])[0]

        fd = np.empty_like(theta)
        for i in range(theta.size):
            e = np.zeros_like(theta)
            e[i] = h = 1e-3 * (d["beta_sd"][i] if i < k else theta[i])
            fd[i] = (8 * (f(theta + e) - f(theta - e)) - f(theta + 2 * e) + f(theta - 2 * e)) / (
                12 * h)
        worst = max(worst, _grad_error(g, fd, theta))
    print(f"{kind} {name}: max relative error vs finite differences {worst:.2e}")
    assert worst < 1e-6


def _big_single_factor(rng, clusters: int, k: int, *, offset: float = 0.0):
    """A single-factor regression with many clusters of geometric sizes (1 to ~100 rows)."""
    sizes = np.minimum(rng.geometric(0.12, clusters), 120)
    g = np.repeat(np.arange(clusters), sizes)
    N = g.size
    X = np.column_stack([np.ones(N), rng.normal(size=(N, k - 2)),
                         rng.normal(size=clusters)[g] + offset])   # one cluster-level covariate
    y = X @ np.linspace(0.2, 1.0, k) + 0.8 * rng.normal(size=clusters)[g] + rng.normal(size=N)
    perm = rng.permutation(N)
    return y[perm], X[perm], g[perm]


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_fast_path_equals_the_recursion(offset):
    """For one factor, grouping clusters by size is an identity: the size-grouped kernel's value
    and gradient equal the general recursion's to 1e-10 relative."""
    rng = np.random.default_rng(5)
    y, X, g = _big_single_factor(rng, 3000, 4, offset=offset)
    block = pack_nested(nested_stats(y, X, [g]))
    worst_v = worst_g = 0.0
    for _ in range(20):
        beta = _perturbed(rng, np.linspace(0.2, 1.0, 4), 0.05, X)
        s2 = 10 ** rng.uniform(-0.5, 0.5)
        tau2 = s2 * 10 ** rng.uniform(-8, 4, 1)
        v0, *g0 = nested_loglik(beta, tau2, s2, block, fast=False)
        v1, *g1 = nested_loglik(beta, tau2, s2, block, fast=True)
        a, b = np.concatenate([g0[0], g0[1], [g0[2]]]), np.concatenate([g1[0], g1[1], [g1[2]]])
        worst_v = max(worst_v, abs(v1 - v0) / abs(v0))
        worst_g = max(worst_g, _grad_error(b, a, np.concatenate([beta, tau2, [s2]])))
    print(f"fast vs general (offset {offset:g}): value {worst_v:.2e}, gradient {worst_g:.2e}")
    assert worst_v < 1e-10 and worst_g < 1e-10


@pytest.mark.parametrize(("kind", "name"), [("nested", "D2 unbalanced"), ("nested", "D1 balanced"),
                                            ("crossed", "axb n2")])
def test_broken_kernel_fails_the_exactness_check(kind, name):
    """tau in place of tau^2 (the packed ``broken`` flag) is a different model: the exactness
    check must reject it, or it could not catch a real error."""
    d = _design(kind, name)
    if kind == "nested":
        block = pack_nested(nested_stats(d["y"], d["X"], d["codes"]), broken=True)
        value = lambda b, t, s: nested_loglik(b, t, s, block, fast=False)[0]  # noqa: E731
    else:
        block = pack_strata(strata_stats(d["y"], d["X"], d["codes"], d["terms"]), broken=True)
        value = lambda b, t, s: strata_loglik(b, t, s, block)[0]  # noqa: E731
    rng = np.random.default_rng(7)
    errs = [abs(value(b, t, s) - _scipy_loglik(d, b, t, s)) / abs(_scipy_loglik(d, b, t, s))
            for b, t, s in _points(rng, d, len(d["Zs"]))]
    print(f"broken {kind} {name}: max relative error {max(errs):.2e}")
    assert max(errs) > 1e3 * EXACT


def test_unit_under_two_parents_is_refused():
    """A class code shared by two schools is not a nested design: refused, naming the factor."""
    school = np.array([0, 0, 1, 1, 2, 2])
    klass = np.array([10, 11, 12, 11, 13, 13])
    y, X = np.arange(6.0), np.ones((6, 1))
    with pytest.raises(ValueError, match="'class' is not nested in 'school'.*11"):
        nested_stats(y, X, [school, klass], names=["school", "class"])


def test_unbalanced_crossed_design_is_refused():
    """The strata are eigenspaces only for balanced designs: a missing combination, or one
    present more often than another, is refused."""
    a, b = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    y, X = np.arange(12.0), np.ones((12, 1))
    with pytest.raises(ValueError, match="unbalanced"):
        strata_stats(y[1:], X[1:], [a[1:], b[1:]], [(0,), (1,)])
    with pytest.raises(ValueError, match="unbalanced"):
        strata_stats(np.r_[y, 1.0], np.r_[X, X[:1]], [np.r_[a, 0], np.r_[b, 0]], [0, 1])


def test_blocks_follow_one_layout_and_are_not_interchangeable():
    """The block's header holds the layout's offsets (unpacked by the same spec), and a kernel
    handed another kind of block returns nan rather than reading garbage."""
    d = nested_design("D2 unbalanced")
    stats = nested_stats(d["y"], d["X"], d["codes"])
    block = pack_nested(stats)
    scalars, arrays = NESTED_LAYOUT.unpack(block)
    assert scalars["depth"] == 2 and scalars["n_cells"] == stats.cell_n.size
    np.testing.assert_array_equal(arrays["cell_s"], stats.cell_s)
    np.testing.assert_array_equal(arrays["cell_t"].reshape(-1, 3), stats.cell_t)
    c = crossed_design("axb n1")
    other = pack_strata(strata_stats(c["y"], c["X"], c["codes"], c["terms"]))
    gb, gt = np.empty(3), np.empty(2)
    assert np.isnan(strata_loglik_grad(d["beta"], np.ones(2), 1.0, block, gb, gt)[0])
    work = np.empty(nested_work_size(block))
    assert np.isnan(nested_loglik_grad_work(d["beta"], np.ones(2), 1.0, other, work, gb, gt)[0])
    assert np.isnan(nested_loglik_grad_fast(d["beta"], np.ones(2), 1.0, block, gb, gt)[0])  # D=2


@numba.njit(cache=True)
def _from_compiled_code(beta, tau2, s2, block, work, g_beta, g_tau2):
    """How a nutpie callback calls the kernels: from numba, into preallocated arrays."""
    value, g_s2 = nested_loglik_grad_work(beta, tau2, s2, block, work, g_beta, g_tau2)
    return value + 0.0 * g_s2


def test_kernels_are_callable_from_compiled_code():
    """The kernels compose with other numba code (the nutpie callbacks' route), and the
    scratch-passing variant equals the allocating one."""
    d = nested_design("D3")
    block = pack_nested(nested_stats(d["y"], d["X"], d["codes"]))
    gb, gt = np.empty(3), np.empty(3)
    beta, tau2 = d["beta"], np.array([0.3, 0.2, 0.1])
    value = _from_compiled_code(beta, tau2, 1.1, block, np.empty(nested_work_size(block)), gb, gt)
    v, g_beta, g_tau2, _ = nested_loglik(beta, tau2, 1.1, block)
    assert value == v
    np.testing.assert_array_equal(gb, g_beta)
    np.testing.assert_array_equal(gt, g_tau2)


def _stats_fields_equal(cells_side, rows_side) -> None:
    """Every field of two statistics records equal to rounding (y at 1e6 is resolved to 1e-10;
    measured differences up to 1.4e-10, on sums of order 1 to 60)."""
    for name, a in vars(rows_side).items():
        b = getattr(cells_side, name)
        if isinstance(a, tuple) and a and isinstance(a[0], np.ndarray):
            for u, v in zip(a, b, strict=True):
                np.testing.assert_array_equal(u, v, err_msg=name)
        elif isinstance(a, tuple) or isinstance(a, int) or a is None:
            assert a == b, name
        else:
            np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-9, err_msg=name)


def test_the_data_layers_statistics_equal_the_rows_statistics():
    """``models.cells.nested_of`` / ``strata_of`` (production: from the cells' moments) equal
    ``nested_stats`` / ``strata_stats`` of the rows (the route the exactness tests above check
    against scipy), field by field, at a mean of 1e6."""
    import pandas as pd

    from varcomp.models.cells import nested_of, strata_of
    from varcomp.models.design import from_formula

    rng = np.random.default_rng(4)
    area = np.repeat(["A0", "A1", "A2"], [7, 5, 9])
    school = np.array([f"S{i % 3}" for i in range(area.size)])
    df = pd.DataFrame({"area": area, "school": school, "x": rng.normal(size=area.size)})
    df["y"] = 1e6 + df.x + rng.normal(size=area.size)
    d = from_formula(df, "y ~ x + (1|area/school)")
    rows = nested_stats(d.y[:, 0], d.design.X, [f.codes for f in d.design.factors],
                        names=[f.name for f in d.design.factors])
    _stats_fields_equal(nested_of(d), rows)

    a, b = (g.ravel() for g in np.meshgrid(np.arange(4), np.arange(3), indexing="ij"))
    df = pd.DataFrame({"a": np.repeat(a, 2).astype(str), "b": np.repeat(b, 2).astype(str)})
    df["x"] = rng.normal(size=len(df))
    df["y"] = 1e6 + df.x + rng.normal(size=len(df))
    d = from_formula(df, "y ~ x + (1|a) + (1|b) + (1|a:b)")
    codes = [pd.factorize(df[v], sort=True)[0] for v in ("a", "b")]
    rows = strata_stats(d.y[:, 0], d.design.X, codes, [0, 1, (0, 1)], names=["a", "b"])
    _stats_fields_equal(strata_of(d), rows)
