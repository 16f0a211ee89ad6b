"""ML and REML for linear mixed models with crossed or nested random intercepts, as lme4 fits them.

The model, for N rows, p fixed effects and K grouping factors (factor k has m_k levels):

    y = X beta + sum_k Z_k b_k + e,   b_k ~ N(0, tau_k^2 I_{m_k}),   e ~ N(0, sigma^2 I_N),

where Z_k is the 0/1 indicator matrix of factor k's codes. Nested terms such as lme4's
``(1|batch/cask)`` arrive expanded as two factors (batch, and the batch:cask interaction codes).

Method: lme4's penalised least squares (Bates, Maechler, Bolker & Walker 2015, J. Stat. Softw.
67(1), sections 3.2-3.4). With theta_k = tau_k / sigma, Lambda = diag(theta_k on factor k's
levels) and A(theta) = Lambda Z'Z Lambda + I (q x q, q = sum m_k), the profiled criteria are

    ML:    d(theta)   = log|A| + N (1 + log(2 pi r2 / N)),
    REML:  d_R(theta) = log|A| + log|R_X' R_X| + (N - p)(1 + log(2 pi r2 / (N - p))),

with R_X' R_X = X'X - X'Z Lambda A^-1 Lambda Z'X and r2 = min_{u, beta} ||y - X beta -
Z Lambda u||^2 + ||u||^2. Everything is computed from cross-products (Z'Z, Z'X, Z'y, X'X, X'y,
y'y) of the data centred by their column means, so a response with mean 1e6 and sd 1 loses no
accuracy. A is factored blockwise: the factor with the most levels comes first, its diagonal block
is eliminated exactly, and the Schur complement of the other q - m_1 levels (at most 20,000) is
factored densely. The gradient in theta is analytic (envelope theorem for r2, the diagonal of A^-1
for log|A|), so the bounded L-BFGS-B search stops where the gradient vanishes, not where
criterion differences drown in rounding.

Cost: on a simulated data set of InstEval's shape (73,000 rows, 2,972 students x 1,128 lecturers,
crossed; ``tests/test_lmm_estimate.py`` builds it) one criterion evaluation took 0.05-0.10 s and one
with its gradient 0.13-0.4 s, the whole REML fit (27 evaluations) 4-6 s, on the shared 2-core
machine with one BLAS thread (ranges: other jobs' load). Threaded OpenBLAS made the same
evaluation take 0.1-1.1 s there, so ``fit_lmm`` runs under ``threadpool_limits(1, "blas")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize, sparse

from varcomp.models.errors import DataError

__all__ = ["LmmEstimate", "fit_lmm", "fit_lmm_cells"]

LOG_2PI = math.log(2.0 * math.pi)
MAX_DENSE_LEVELS = 20_000  # largest Schur complement (q - m_1) factored densely
COLLINEAR_TOL = 1e-9  # smallest singular value / largest of column-scaled, centred X
SNAP_THETA = 1e-4  # a theta_k below this is tried at 0 (kept there if the criterion is no worse)


@dataclass(frozen=True)
class LmmEstimate:
    """An ML or REML fit of a random-intercepts linear mixed model.

    Attributes
    ----------
    method : str
        ``"ml"`` or ``"reml"``.
    beta : dict of str to float
        Fixed effects by term name, in X's column order.
    tau : dict of str to float
        Random-intercept standard deviation by factor name, in the given order.
    sigma : float
        Residual standard deviation.
    criterion : float
        lme4's deviance (ML, -2 max log-likelihood) or REML criterion (-2 restricted
        log-likelihood, without the theta-free term log|X'X|).
    boundary : dict of str to bool
        Per factor: tau estimated at exactly 0 (lme4's singular fit).
    """

    method: str
    beta: dict[str, float]
    tau: dict[str, float]
    sigma: float
    criterion: float
    boundary: dict[str, bool]

    def as_dict(self) -> dict:
        """Plain-dict form for JSON."""
        return {"method": self.method,
                "beta": {k: float(v) for k, v in self.beta.items()},
                "tau": {k: float(v) for k, v in self.tau.items()},
                "sigma": float(self.sigma), "criterion": float(self.criterion),
                "boundary": {k: bool(v) for k, v in self.boundary.items()}}


@dataclass(frozen=True)
class _Design:
    """Cross-products of the centred data, factors in internal order (most levels first).

    Level layout: factor 1's m1 levels, then the other factors' levels (the "rest", n2 of them).
    """

    n: int
    p: int
    sizes: tuple[int, ...]  # levels per factor, internal order
    counts1: np.ndarray  # (m1,) rows per level of factor 1: the diagonal block Z_1'Z_1
    m_1r: sparse.csr_matrix  # (m1, n2) Z_1' Z_rest
    m_rr: np.ndarray  # (n2, n2) Z_rest' Z_rest, dense (its diagonal blocks are diagonal)
    ztw: np.ndarray  # (q, p + 1) Z' [X y]
    wtw: np.ndarray  # (p + 1, p + 1) [X y]' [X y]

    @property
    def m1(self) -> int:
        return self.sizes[0]

    @property
    def n2(self) -> int:
        return sum(self.sizes[1:])


def _evaluate(d: _Design, theta: np.ndarray, *, reml: bool, grad: bool = False,
              _lam: Callable[[np.ndarray], np.ndarray] | None = None):
    """Profiled criterion at theta (internal order); optionally its gradient.

    Returns ``(criterion, gradient or None, beta_hat, r2)``. ``_lam`` maps theta to the diagonal
    values of Lambda per factor (default: theta itself); the tests use it to break the model.
    """
    theta = np.asarray(theta, dtype=float)
    lam = theta if _lam is None else np.asarray(_lam(theta), dtype=float)
    p, m1, n2 = d.p, d.m1, d.n2
    t1 = lam[0]
    lam_r = np.repeat(lam[1:], d.sizes[1:])
    dd = t1 * t1 * d.counts1 + 1.0  # diagonal block of A for factor 1
    b1 = t1 * d.ztw[:m1]  # Lambda Z'[X y], factor-1 rows
    logdet = float(np.log(dd).sum())
    if n2:
        # Schur complement S = A_rr - C' D^-1 C, C = t1 M_1r Lambda_r:  S = Lambda_r T Lambda_r + I
        # with T = M_rr - t1^2 M_r1 D^-1 M_1r (formed sparsely, then dense n2 x n2).
        t_mat = d.m_rr - t1 * t1 * (d.m_1r.T @ sparse.diags(1.0 / dd) @ d.m_1r).toarray()
        s_mat = lam_r[:, None] * t_mat * lam_r[None, :]
        s_mat[np.diag_indices(n2)] += 1.0
        chol = linalg.cholesky(s_mat, lower=True, check_finite=False)
        logdet += 2.0 * float(np.log(np.diag(chol)).sum())
        br = lam_r[:, None] * d.ztw[m1:]
        # block solve of A x = Lambda Z'[X y]:
        # x_r = S^-1 (b_r - C' D^-1 b_1), x_1 = D^-1 (b_1 - C x_r)
        rhs_r = br - lam_r[:, None] * (d.m_1r.T @ (t1 * b1 / dd[:, None]))
        x_r = linalg.cho_solve((chol, True), rhs_r, check_finite=False)
        x_1 = (b1 - t1 * (d.m_1r @ (lam_r[:, None] * x_r))) / dd[:, None]
        x = np.vstack([x_1, x_r])
        b = np.vstack([b1, br])
    else:
        x = b1 / dd[:, None]
        b = b1
    # [X y]' V0^-1 [X y] = [X y]'[X y] - (Lambda Z'[X y])' A^-1 (Lambda Z'[X y]),  V0 = V / sigma^2
    g = d.wtw - b.T @ x
    g = 0.5 * (g + g.T)
    r_x = linalg.cholesky(g[:p, :p], lower=False, check_finite=False)  # R_X
    beta = linalg.cho_solve((r_x, False), g[:p, p], check_finite=False)
    r2 = float(g[p, p] - g[:p, p] @ beta)  # y'V0^-1 y - rhs' beta: the penalised residual sum
    dof = d.n - p if reml else d.n
    crit = logdet + dof * (1.0 + LOG_2PI + math.log(r2 / dof))
    if reml:
        crit += 2.0 * float(np.log(np.diag(r_x)).sum())
    if not grad:
        return crit, None, beta, r2
    if _lam is not None:
        raise DataError("the gradient is for Lambda = diag(theta) only")
    return crit, _gradient(d, theta, dd, lam_r, x, r_x, beta, r2, reml,
                           chol if n2 else None, t_mat if n2 else None), beta, r2


def _gradient(d: _Design, theta, dd, lam_r, x, r_x, beta, r2, reml, chol, t_mat) -> np.ndarray:
    """Analytic gradient of the profiled criterion in theta.

    - d log|A| / d theta_k = (2 / theta_k)(m_k - tr_k A^-1), from the diagonal of A^-1 in blocks:
      factor 1: 2 t1 [sum n_i / D_i - tr(S^-1 Lambda_r M_r1 D^-2 M_1r Lambda_r)];
      factor k in the rest: 2 sum_{i in k} sum_j (S^-1)_ij T_ij theta_j.
    - d r2 / d theta_k = -2 theta_k ||Z_k' V0^-1 (y - X beta)||^2 (envelope theorem).
    - REML: d log|X'V0^-1 X| / d theta_k = -2 theta_k ||Z_k' V0^-1 X R_X^-1||_F^2.
    Z' V0^-1 [X y] = Z'[X y] - Z'Z Lambda A^-1 Lambda Z'[X y], from the cross-products.
    """
    p, m1, n2, t1 = d.p, d.m1, d.n2, theta[0]
    counts1 = d.counts1
    g_logdet = np.zeros(theta.size)
    g_logdet[0] = 2.0 * t1 * float((counts1 / dd).sum())
    zlx_1 = counts1[:, None] * (t1 * x[:m1])  # Z'Z Lambda x, factor-1 rows
    if n2:
        x_r = lam_r[:, None] * x[m1:]
        zlx_1 = zlx_1 + d.m_1r @ x_r
        zlx_r = d.m_1r.T @ (t1 * x[:m1]) + d.m_rr @ x_r
        zlx = np.vstack([zlx_1, zlx_r])
        s_inv, _ = linalg.lapack.dpotri(chol, lower=1)  # S^-1 (lower triangle) from Cholesky
        s_inv = np.tril(s_inv) + np.tril(s_inv, -1).T
        k2 = (d.m_1r.T @ sparse.diags(1.0 / dd**2) @ d.m_1r).toarray()
        g_logdet[0] -= 2.0 * t1 * float((s_inv * (lam_r[:, None] * k2 * lam_r[None, :])).sum())
        per_level = (s_inv * t_mat) @ lam_r
        g_logdet[1:] = 2.0 * np.add.reduceat(per_level, np.cumsum((0,) + d.sizes[1:-1]))
    else:
        zlx = zlx_1
    q_mat = d.ztw - zlx  # Z' V0^-1 [X y]
    z_res = q_mat[:, p] - q_mat[:, :p] @ beta  # Z' V0^-1 (y - X beta)
    starts = np.cumsum((0,) + d.sizes[:-1])
    dr2 = -2.0 * theta * np.add.reduceat(z_res**2, starts)
    dof = d.n - p if reml else d.n
    grad = g_logdet + dof * dr2 / r2
    if reml:
        f = linalg.solve_triangular(r_x, q_mat[:, :p].T, trans="T", check_finite=False)
        grad -= 2.0 * theta * np.add.reduceat((f**2).sum(axis=0), starts)
    return grad


def _two_pass_mean(a: np.ndarray, weights=None) -> np.ndarray:
    """Column means accurate to rounding of the spread, not of the offset (weighted: cells)."""
    w = np.ones(a.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    m = w @ a
    return m + w @ (a - m)


def _check_rank(xc: np.ndarray, terms: list[str], bad: dict[str, str]) -> None:
    """Raise ValueError naming every column that is constant or in the span of earlier columns."""
    p = xc.shape[1]
    norms = np.linalg.norm(xc, axis=0)
    usable = [j for j in range(p) if terms[j] not in bad and norms[j] > 0]
    for j in range(p):
        if terms[j] not in bad and norms[j] == 0:
            bad[terms[j]] = "is all zero"
    if usable:
        # the triangular factor of the column-scaled X has X's singular values on any column subset
        r = np.linalg.qr(xc[:, usable] / norms[usable], mode="r")
        kept: list[int] = []
        for i, j in enumerate(usable):
            s = np.linalg.svd(r[:, kept + [i]], compute_uv=False)
            if s[-1] <= COLLINEAR_TOL * s[0]:
                bad[terms[j]] = "is a linear combination of the columns before it"
            else:
                kept.append(i)
    if bad:
        detail = "; ".join(f"{k!r} {v}" for k, v in bad.items())
        raise DataError(f"X is rank deficient: {detail}. Drop the offending column(s) "
                         f"{sorted(bad, key=terms.index)} (lme4 would drop them too).")


def _prepare(y, X, factors, terms, names, *, _centre: bool = True, _weights=None,
             _within=None) -> tuple[_Design, np.ndarray, Callable, list[str], list[str]]:
    """Validate, centre and form the cross-products in one pass.

    Returns the design, the internal order of the factors, the map from the centred fit's beta
    to the caller's, and the term and factor names. ``_centre=False`` (tests only) keeps the raw
    cross-products, to show what centring saves. With ``_weights`` (counts) and ``_within``
    ((p + 1, p + 1) within-cell cross-products of [X y]) the "rows" are cells
    (:func:`fit_lmm_cells`).
    """
    y = np.asarray(y, dtype=float).ravel()
    cells = y.size
    wts = np.ones(cells) if _weights is None else np.asarray(_weights, dtype=float)
    n = int(round(float(wts.sum())))
    x = np.asarray(X, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] != cells:
        raise DataError(f"X must be an (N, p) array with N = len(y) = {cells}; got shape "
                        f"{x.shape}")
    p = x.shape[1]
    if p == 0:
        raise DataError("X has no columns: give at least an intercept column")
    if not (np.isfinite(y).all() and np.isfinite(x).all()):
        raise DataError("y and X must be finite (drop rows with missing values first)")
    terms = [f"x{j}" for j in range(p)] if terms is None else [str(t) for t in terms]
    if len(terms) != p or len(set(terms)) != p:
        raise DataError(f"terms must be {p} distinct names, one per column of X; got {terms}")
    factors = list(factors)
    if not factors:
        raise DataError("no grouping factor: this is a linear model, use least squares")
    names = [f"f{k}" for k in range(len(factors))] if names is None else [str(s) for s in names]
    if len(names) != len(factors) or len(set(names)) != len(names):
        raise DataError(f"names must be {len(factors)} distinct factor names; got {names}")

    codes, sizes = [], []
    for name, f in zip(names, factors, strict=True):
        f = np.asarray(f)
        if f.shape != (cells,) or not np.issubdtype(f.dtype, np.integer):
            raise DataError(f"factor {name!r} must be an ({cells},) integer code array; "
                             f"got shape {f.shape}, dtype {f.dtype}")
        levels, c = np.unique(f, return_inverse=True)  # unused codes dropped, as lme4 does
        if levels.size < 2:
            raise DataError(f"factor {name!r} has only one level: its variance cannot be told "
                             "apart from the intercept (lme4 refuses it too)")
        if levels.size >= n:
            raise DataError(f"factor {name!r} has {levels.size} levels for {n} rows: its "
                             "variance cannot be told apart from the residual's")
        codes.append(c.ravel())
        sizes.append(int(levels.size))
    order = np.argsort([-s for s in sizes], kind="stable")
    codes = [codes[k] for k in order]
    sizes = tuple(sizes[k] for k in order)
    n2 = sum(sizes[1:])
    if n2 > MAX_DENSE_LEVELS:
        raise DataError(f"the factors other than the largest have {n2} levels together, more "
                         f"than the {MAX_DENSE_LEVELS} this dense Schur complement allows")

    # centring: with an intercept column (constant, non-zero), centring y and the other columns
    # re-parameterises the intercept only (a unit-triangular change of X: criteria unchanged)
    within = np.zeros((p + 1, p + 1)) if _within is None else np.asarray(_within, dtype=float)
    const = [j for j in range(p) if np.ptp(x[:, j]) == 0 and within[j, j] == 0]
    intercept = next((j for j in const if x[0, j] != 0), None)
    bad = {terms[j]: "is constant, like the intercept" for j in const
           if j != intercept and x[0, j] != 0}
    if intercept is not None and _centre:
        mx = _two_pass_mean(x, wts)
        my = float(_two_pass_mean(y[:, None], wts)[0])
        mx[intercept] = 0.0
        xc, yc = x - mx, y - my
    else:
        mx, my, xc, yc = np.zeros(p), 0.0, x, y
    # the rank of the rows' centred X: cells stand for their rows through sqrt(n_c) x their
    # means and a square root of the within-cell cross-products (the same Gram matrix)
    vals, vecs = np.linalg.eigh(within[:p, :p])
    root = (vecs * np.sqrt(np.clip(vals, 0.0, None))).T
    _check_rank(np.vstack([np.sqrt(wts)[:, None] * xc, root]), terms, bad)

    w = np.column_stack([xc, yc])
    m1 = sizes[0]
    ztw = np.vstack([np.column_stack([np.bincount(c, weights=wts * w[:, j], minlength=s)
                                      for j in range(p + 1)])
                     for c, s in zip(codes, sizes, strict=True)])
    offsets = np.cumsum((0,) + sizes[1:])
    rest = [c + o for c, o in zip(codes[1:], offsets, strict=False)]
    ones = np.tile(wts, len(rest))
    if rest:
        m_1r = sparse.coo_matrix((ones, (np.tile(codes[0], len(rest)), np.concatenate(rest))),
                                 shape=(m1, n2)).tocsr()
        pairs = [(a, b) for a in rest for b in rest]
        m_rr = sparse.coo_matrix((np.tile(wts, len(pairs)),
                                  (np.concatenate([a for a, _ in pairs]),
                                   np.concatenate([b for _, b in pairs]))),
                                 shape=(n2, n2)).toarray()
    else:
        m_1r, m_rr = sparse.csr_matrix((m1, 0)), np.zeros((0, 0))
    counts1 = np.bincount(codes[0], weights=wts, minlength=m1).astype(float)
    wtw = (w * wts[:, None]).T @ w + within
    rss = wtw[p, p] - wtw[:p, p] @ np.linalg.solve(wtw[:p, :p], wtw[:p, p])  # least squares
    if not rss > 1e-13 * wtw[p, p]:  # r2 <= rss, and r2 = 0 only if rss = 0
        raise DataError("y is an exact linear function of X's columns (e.g. constant): "
                         "there is no variance to decompose")
    design = _Design(n=n, p=p, sizes=sizes, counts1=counts1, m_1r=m_1r, m_rr=m_rr, ztw=ztw,
                     wtw=wtw)

    def to_caller(beta_c: np.ndarray) -> np.ndarray:
        beta = beta_c.copy()
        if intercept is not None:  # y = X_0 (b_0 + (ybar - sum_j m_j b_j) / c) + sum_j X_j b_j
            beta[intercept] += (my - float(mx @ beta_c)) / x[0, intercept]
        return beta

    return design, order, to_caller, terms, names


def _minimise(d: _Design, start: np.ndarray, reml: bool) -> tuple[np.ndarray, float]:
    """L-BFGS on the even extension theta -> d(|theta|), stopped by the analytic gradient.

    The criterion depends on theta_k through theta_k^2 only, so its minimum over [0, inf)^K is its
    minimum over R^K, folded. A bounded search (L-BFGS-B on theta >= 0) is not safe here: a first
    step that overshoots is projected onto theta_k = 0, where the gradient in theta_k is exactly 0
    whether 0 is a minimum or a maximum, and the search stops there (radon with the county-level
    uranium covariate: stopped at tau = 0, REML criterion 2142.14, against 2134.19 inside).
    """

    def fun(phi):
        crit, grad, _, _ = _evaluate(d, np.abs(phi), reml=reml, grad=True)
        return crit, np.sign(phi) * grad

    res = optimize.minimize(fun, start, jac=True, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 2000, "maxls": 50})
    theta = np.abs(res.x)
    return theta, _evaluate(d, theta, reml=reml)[0]


def _polish(d: _Design, theta: np.ndarray, crit: float, reml: bool,
            steps: int = 3) -> tuple[np.ndarray, float]:
    """Newton steps on the zero of the gradient in the interior components of theta.

    The Hessian is a forward difference of the analytic gradient: it only sets the step, while the
    fixed point is where the analytic gradient vanishes. A step is kept only if it lowers the
    gradient's norm without raising the criterion beyond rounding.
    """
    free = theta > 0.0
    if not free.any():
        return theta, crit
    _, grad, _, _ = _evaluate(d, theta, reml=reml, grad=True)
    for _ in range(steps):
        h = 1e-6 * theta[free]
        hess = np.empty((free.sum(), free.sum()))
        for j, i in enumerate(np.flatnonzero(free)):
            step = theta.copy()
            step[i] += h[j]
            hess[:, j] = (_evaluate(d, step, reml=reml, grad=True)[1][free] - grad[free]) / h[j]
        try:
            delta = linalg.solve(0.5 * (hess + hess.T), grad[free], assume_a="pos")
        except (linalg.LinAlgError, ValueError):
            break
        new = theta.copy()
        new[free] -= delta
        if not (new[free] > 0.0).all():
            break
        new_crit, new_grad, _, _ = _evaluate(d, new, reml=reml, grad=True)
        if (new_crit > crit + 1e-13 * abs(crit)
                or np.linalg.norm(new_grad[free]) >= np.linalg.norm(grad[free])):
            break
        theta, crit, grad = new, new_crit, new_grad
    return theta, crit


def _optimise(d: _Design, reml: bool) -> tuple[np.ndarray, float]:
    """Minimum of the profiled criterion over theta in [0, inf)^K, boundary included.

    Start at theta = 1 (lme4's start). A component that ends below ``SNAP_THETA`` is set to exactly
    0 when the criterion there is no worse (lme4's boundary fits land on 0 the same way); that
    point is checked to be a minimum along each zeroed component (the criterion does not fall
    when theta_k moves to ``SNAP_THETA``), otherwise the search restarts from there.
    """
    k = len(d.sizes)
    theta, crit = _minimise(d, np.ones(k), reml)
    for _ in range(k + 1):
        small = theta < SNAP_THETA
        if not small.any():
            break
        snapped = np.where(small, 0.0, theta)
        snap_crit = _evaluate(d, snapped, reml=reml)[0]
        if snap_crit > crit + 1e-10:
            break
        theta, crit = snapped, snap_crit
        probes = [np.where(np.arange(k) == i, SNAP_THETA, theta) for i in np.flatnonzero(small)]
        probe_crit, lower = min(((_evaluate(d, t, reml=reml)[0], t) for t in probes),
                                key=lambda ct: ct[0])
        if probe_crit >= crit:
            break
        theta, crit = min((theta, crit), _minimise(d, lower, reml), key=lambda tc: tc[1])
    return _polish(d, theta, crit, reml)


def fit_lmm(y, X, factors: Sequence, *, reml: bool = True, terms: Sequence[str] | None = None,
            names: Sequence[str] | None = None) -> LmmEstimate:
    r"""ML or REML fit of a linear mixed model with random intercepts, equal to lme4's.

    .. math::
        y = X\beta + \sum_k Z_k b_k + e, \quad b_k \sim N(0, \tau_k^2 I), \quad
        e \sim N(0, \sigma^2 I)

    Parameters
    ----------
    y : array_like, shape (N,)
        Response.
    X : array_like, shape (N, p)
        Fixed-effects design, full column rank (include a column of ones for an intercept). With
        a constant column the cross-products are formed from centred data (offset-stable);
        without one, from the raw data.
    factors : sequence of (N,) integer arrays
        Grouping factors as codes (any integers; unused codes are ignored). Crossed and nested
        factors alike: lme4's ``(1|a/b)`` is the two factors ``a`` and ``a:b``.
    reml : bool, default True
        REML (lme4's default) or ML.
    terms : sequence of str, optional
        Names of X's columns (default ``x0, x1, ...``).
    names : sequence of str, optional
        Names of the factors (default ``f0, f1, ...``).

    Returns
    -------
    LmmEstimate
        Fixed effects, random-intercept sds, residual sd, lme4's criterion and boundary flags.

    Raises
    ------
    ValueError
        Rank-deficient X (naming the offending columns), a factor with one level or as many
        levels as rows, y fitted exactly by X, mismatched shapes, non-finite values, or more
        than 20,000 levels outside the largest factor.
    """
    d, order, to_caller, terms, names = _prepare(y, X, factors, terms, names)
    return _fit(d, order, to_caller, terms, names, reml)


def _fit(d: _Design, order, to_caller, terms, names, reml: bool) -> LmmEstimate:
    from threadpoolctl import threadpool_limits

    # threaded OpenBLAS is many times slower on shared cores (DEVELOPERS.md): one thread
    with threadpool_limits(limits=1, user_api="blas"):
        theta, crit = _optimise(d, reml)
        _, _, beta_c, r2 = _evaluate(d, theta, reml=reml)
    sigma = math.sqrt(r2 / (d.n - d.p if reml else d.n))
    tau = {names[k]: float(theta[i] * sigma) for i, k in enumerate(order)}
    boundary = {names[k]: bool(theta[i] == 0.0) for i, k in enumerate(order)}
    return LmmEstimate(method="reml" if reml else "ml",
                       beta=dict(zip(terms, map(float, to_caller(beta_c)), strict=True)),
                       tau={s: tau[s] for s in names}, sigma=sigma, criterion=float(crit),
                       boundary={s: boundary[s] for s in names})


def fit_lmm_cells(n, mean, m2, factors: Sequence, *, reml: bool = True,
                  terms: Sequence[str] | None = None, names: Sequence[str] | None = None
                  ) -> LmmEstimate:
    r""":func:`fit_lmm` from per-cell statistics instead of rows (:mod:`models.cells`).

    A cell is a combination of the factors' levels: every Z_k is constant within it, so the
    cross-products the criterion needs are sums over cells: Z'Z and Z'[X y] from each cell's
    count and means, [X y]'[X y] from the means plus the within-cell cross-products. ``n``
    (C,) counts, ``mean`` (C, 1 + p) means of [y, X], ``m2`` (C, 1 + p, 1 + p) within-cell
    centred cross-products, ``factors`` each cell's level codes. The same optimum as
    :func:`fit_lmm` on the rows, to rounding.
    """
    n = np.asarray(n, dtype=float)
    mean = np.asarray(mean, dtype=float)
    m2 = np.asarray(m2, dtype=float)
    # [y, X] -> [X, y], the order _prepare uses
    perm = list(range(1, mean.shape[1])) + [0]
    mean, m2 = mean[:, perm], m2[:, perm][:, :, perm]
    d, order, to_caller, terms, names = _prepare(
        mean[:, -1], mean[:, :-1], factors, terms, names, _weights=n,
        _within=m2.sum(axis=0))
    return _fit(d, order, to_caller, terms, names, reml)
