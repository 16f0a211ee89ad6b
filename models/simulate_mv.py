r"""Seeded simulator of the notes' multivariate model, and the covariance-matrix checks it needs.

.. math::
    \mathbf M_l \sim N_p(\mathbf 0, V),\qquad
    \mathbf X_{lj} \mid \mathbf M_l \sim N_p(\boldsymbol\mu + \mathbf M_l, \Sigma),\qquad
    \Sigma = D R D
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from varcomp.models.errors import DataError
from varcomp.models.simulate import Simulated, cluster_sizes

__all__ = ["check_pd", "drop_components", "sigma_from_sd_corr", "simulate_multivariate"]


def check_pd(matrix, name: str = "matrix") -> np.ndarray:
    """Return ``matrix`` as a float array if it is a symmetric positive definite covariance.

    Raises
    ------
    ValueError
        If it is not square, not finite, not symmetric, or not positive definite; the message
        names the smallest eigenvalue. The notes' printed V = [[2, 3], [3, 4]] (determinant -1,
        ERRATA item 1) is refused; the R code's [[4, 3], [3, 4]] is accepted.
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise DataError(f"{name} must be a square (p, p) matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has non-finite entries: a covariance matrix must be finite")
    sym = 0.5 * (a + a.T)
    eig_min = float(np.linalg.eigvalsh(sym)[0])
    tol = 1e-12 * max(1.0, float(np.max(np.abs(a))))
    if np.max(np.abs(a - a.T)) > tol:
        i, j = np.unravel_index(np.argmax(np.abs(a - a.T)), a.shape)
        raise DataError(
            f"{name} is not symmetric ({name}[{i},{j}] = {a[i, j]:.6g} but {name}[{j},{i}] = "
            f"{a[j, i]:.6g}; the smallest eigenvalue of its symmetric part is {eig_min:.6g}): "
            f"a covariance matrix must equal its transpose")
    if not eig_min > 0:
        shown = f"{name} = {a.tolist()}" if a.shape[0] <= 4 else name
        raise DataError(
            f"{shown} is not positive definite: its smallest "
            f"eigenvalue is {eig_min:.6g} (determinant {np.linalg.det(a):.6g}); a covariance "
            f"matrix needs every eigenvalue > 0")
    try:  # eigenvalues of order rounding error pass eigvalsh; the Cholesky test is the one used
        np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise DataError(f"{name} is numerically singular (smallest eigenvalue {eig_min:.3g}): "
                         f"a covariance matrix needs every eigenvalue > 0") from None
    return a


def sigma_from_sd_corr(sd: Sequence[float], R) -> np.ndarray:
    """The covariance D R D from standard deviations ``sd`` (D = diag(sd)) and a correlation R.

    The notes' example: ``sigma_from_sd_corr([0.5, 0.6], [[1, -0.8], [-0.8, 1]])`` gives
    [[0.25, -0.24], [-0.24, 0.36]].
    """
    sd = np.asarray(sd, dtype=np.float64)
    if sd.ndim != 1 or not np.all(np.isfinite(sd) & (sd > 0)):
        raise DataError(f"standard deviations must be a vector of positive numbers, got {sd}")
    R = check_pd(R, "R")
    if R.shape != (sd.size, sd.size):
        raise DataError(f"R must be ({sd.size}, {sd.size}) to match {sd.size} standard "
                         f"deviations, got {R.shape}")
    if not np.allclose(np.diag(R), 1.0, rtol=0, atol=1e-12):
        raise DataError(f"R must be a correlation matrix (unit diagonal), got {np.diag(R)}")
    return sd[:, None] * R * sd[None, :]


def simulate_multivariate(
    L: int,
    n: int | Sequence[int],
    mu,
    V,
    Sigma,
    rng: np.random.Generator | int | None = None,
    *,
    responses: Sequence[str] | None = None,
) -> Simulated:
    """Simulate X_lj = mu + M_l + e_lj, M_l ~ N_p(0, V), e_lj ~ N_p(0, Sigma).

    Parameters
    ----------
    L : int
        Number of clusters.
    n : int or sequence of int
        One cluster size, or one size per cluster (each >= 1).
    mu : (p,) array
        Grand mean of each outcome.
    V, Sigma : (p, p) arrays
        Between- and within-cluster covariances, checked by :func:`check_pd`.
    rng : numpy Generator or seed
    responses : sequence of str, optional
        Outcome column names (default ``y1`` .. ``yp``).

    Returns
    -------
    Simulated
        ``frame`` with columns ``group`` (labels ``g1``..``gL``) and one per outcome;
        ``effects`` the (L, p) M_l; ``params`` mu, V, Sigma, sizes.
    """
    sizes = cluster_sizes(L, n)
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    p = mu.size
    if mu.ndim != 1 or not np.all(np.isfinite(mu)):
        raise DataError(f"mu must be a finite vector, got {mu}")
    V, Sigma = check_pd(V, "V"), check_pd(Sigma, "Sigma")
    for name, m in (("V", V), ("Sigma", Sigma)):
        if m.shape != (p, p):
            raise DataError(f"{name} must be ({p}, {p}) to match mu, got {m.shape}")
    names = [f"y{k + 1}" for k in range(p)] if responses is None else [str(r) for r in responses]
    if len(names) != p or len(set(names)) != p or "group" in names:
        raise DataError(f"give {p} distinct response names other than 'group', got {names}")
    rng = np.random.default_rng(rng)
    effects = rng.standard_normal((sizes.size, p)) @ np.linalg.cholesky(V).T
    codes = np.repeat(np.arange(sizes.size), sizes)
    e = rng.standard_normal((codes.size, p)) @ np.linalg.cholesky(Sigma).T
    y = mu + effects[codes] + e
    labels = np.array([f"g{i + 1}" for i in range(sizes.size)], dtype=object)
    frame = pd.DataFrame(y, columns=names)
    frame.insert(0, "group", labels[codes])
    return Simulated(frame, effects, {"mu": mu, "V": V, "Sigma": Sigma, "sizes": sizes})


def drop_components(frame: pd.DataFrame, prob: float, rng: np.random.Generator | int | None = None,
                    *, group: str = "group") -> pd.DataFrame:
    """A copy of ``frame`` with each outcome value missing (NaN) with probability ``prob``.

    Every row keeps at least one observed outcome (a row that would lose all of them keeps one
    chosen at random), so no row is dropped when the frame is read into ClusteredData: missing
    completely at random, as the model's likelihood for partly observed rows assumes.
    """
    if not 0.0 <= prob < 1.0:
        raise DataError(f"prob must be in [0, 1), got {prob}")
    rng = np.random.default_rng(rng)
    out = frame.copy()
    cols = [c for c in frame.columns if c != group]
    miss = rng.random((len(frame), len(cols))) < prob
    full = miss.all(axis=1)
    keep = rng.integers(0, len(cols), size=len(frame))
    miss[np.flatnonzero(full), keep[full]] = False
    values = out[cols].to_numpy(dtype=np.float64, copy=True)
    values[miss] = np.nan
    out[cols] = values
    return out
