r"""Closed-form marginal density of the one-way model, from sufficient statistics.

Integrating M_l ~ N(0, tau^2) out of X_lj | M_l ~ N(mu + M_l, sigma^2) gives
X_l ~ N(mu 1, sigma^2 I + tau^2 1 1^T). Completing the square in m_l (the notes' derivation, with
ERRATA item 3 fixed: the last term of the exponent is n (xbar - mu)^2 / (sigma^2 + n tau^2)):

.. math::
    \log p(x_l) = -\tfrac{n}{2}\log 2\pi - \tfrac{n-1}{2}\log\sigma^2
                  - \tfrac12\log(\sigma^2 + n\tau^2)
                  - \frac{S_l}{2\sigma^2} - \frac{n(\bar x_l - \mu)^2}{2(\sigma^2 + n\tau^2)},

with S_l = sum_j (x_lj - xbar_l)^2. The determinant uses
det(sigma^2 I + tau^2 11^T) = sigma^{2(n-1)} (sigma^2 + n tau^2), so the expression is finite and
exact as tau -> 0 and for n = 1 (S_l = 0). Every function here takes an array module ``xp``
(numpy, or ``pytensor.tensor``) so the PyMC ``sufficient`` builder evaluates the same code.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

__all__ = [
    "compound_symmetry_chol",
    "group_effect_conditional",
    "marginal_logp",
    "marginal_logp_terms",
]

LOG_2PI = float(np.log(2.0 * np.pi))


def marginal_logp_terms(n, xbar, ss, mu, tau, sigma, xp: ModuleType = np):
    """Per-cluster log marginal densities (vectorised over clusters; see the module docstring)."""
    s2 = sigma * sigma
    v = s2 + n * tau * tau  # sigma^2 + n tau^2: the eigenvalue of the covariance along 1
    d = xbar - mu
    return (
        -0.5 * n * LOG_2PI
        - 0.5 * (n - 1.0) * xp.log(s2)
        - 0.5 * xp.log(v)
        - 0.5 * ss / s2
        - 0.5 * n * d * d / v
    )


def marginal_logp(n, xbar, ss, mu, tau, sigma, xp: ModuleType = np):
    """Log marginal density of a whole data set: the sum over clusters, O(L)."""
    return xp.sum(marginal_logp_terms(n, xbar, ss, mu, tau, sigma, xp=xp))


def group_effect_conditional(n, xbar, mu, tau, sigma):
    """Mean and variance of M_l given the cluster's data (a Normal-Normal update).

    E[M_l | x_l] = n tau^2 (xbar - mu) / (sigma^2 + n tau^2),
    Var[M_l | x_l] = tau^2 sigma^2 / (sigma^2 + n tau^2).
    """
    t2, s2 = tau * tau, sigma * sigma
    v = s2 + n * t2
    return n * t2 * (xbar - mu) / v, t2 * s2 / v


def compound_symmetry_chol(k: int, sigma, tau, xp: ModuleType = np):
    r"""Closed-form lower Cholesky factor of ``sigma^2 I_k + tau^2 1 1^T``.

    With a = sigma^2, b = tau^2 and s_j = a + j b (s_0 = a), for j = 1..k:
    L_jj = sqrt(a s_j / s_{j-1}) and L_ij = b sqrt(a / (s_{j-1} s_j)) for i > j.
    (Induction on k: the Schur complement of a compound-symmetry block is again one.)
    No factorisation is computed, so the literal MvNormal density costs O(k^2) to set up.
    """
    a, b = sigma * sigma, tau * tau
    j = np.arange(1, k + 1, dtype=np.float64)
    # the parameter comes first in each product so pytensor (not numpy) owns the expression
    s_prev = a + b * (j - 1.0)
    s_j = a + b * j
    diag = xp.sqrt(a * s_j / s_prev)
    off = b * xp.sqrt(a / (s_prev * s_j))  # column j's value below the diagonal
    return diag[None, :] * np.eye(k) + off[None, :] * np.tril(np.ones((k, k)), -1)
