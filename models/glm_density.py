"""Per-row log densities of binomial and Poisson responses and their derivatives in eta.

numpy and scipy only (no PyMC): the numerical core that the quadrature (``models.quadrature``) and
the GLMM maximum likelihood (``models.glmm_estimate``) integrate. For row i with linear predictor
eta_i: eta_i:

- ``("binomial", "logit")``: log C(n, y) + y eta - n log(1 + e^eta)   (Bernoulli: n = 1)
- ``("binomial", "probit")``: log C(n, y) + y log Phi(eta) + (n - y) log Phi(-eta)
- ``("poisson", "log")``: -log y! + y eta - e^eta                   (``trials`` is ignored)

The densities are exact (normalising constants included); ``log_const`` gives the constants alone,
so a caller can keep them apart. Stable forms: ``logaddexp``/``expit`` for the logit,
``scipy.special.log_ndtr`` for the probit (Mills ratios from log-space differences, so no 0/0 in
the tails). the tails).

``derivs`` returns the log density and its first three derivatives in eta (the third is what the
exact gradient of a Laplace or adaptive-quadrature value needs: the curvature at the mode moves
with the parameters). ``fisher_weight`` is the expected information n mu'(eta)^2 / V(mu), the
weight of lme4's penalised IRLS; it equals minus the second derivative for the canonical links
(logit, log). (logit, log).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["FAMILIES", "GlmDensity", "density_for", "derivs", "fisher_weight", "log_const", "logp"]

_LOG_2PI_HALF = 0.5 * np.log(2.0 * np.pi)


def _binomial_const(y, n):
    return special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)


def _poisson_const(y, n):
    return -special.gammaln(y + 1.0)


def _logit_kernel(y, n, eta, order):
    p = special.expit(eta)
    q = special.expit(-eta)
    out = [y * eta - n * np.logaddexp(0.0, eta)]
    if order >= 1:
        out.append(y - n * p)
    if order >= 2:
        out.append(-n * p * q)
    if order >= 3:
        out.append(-n * p * q * (q - p))
    return out


def _mills(x):
    """phi(x) / Phi(x), from logs (finite for every x)."""
    return np.exp(-0.5 * x * x - _LOG_2PI_HALF - special.log_ndtr(x))


def _probit_kernel(y, n, eta, order):
    out = [y * special.log_ndtr(eta) + (n - y) * special.log_ndtr(-eta)]
    if order == 0:
        return out
    rp, rm = _mills(eta), _mills(-eta)  # d/deta log Phi(eta) = rp;  d/deta log Phi(-eta) = -rm
    out.append(y * rp - (n - y) * rm)
    if order >= 2:
        # g(x) = d2/dx2 log Phi(x) = -r(x) (x + r(x))
        gp, gm = -rp * (eta + rp), -rm * (-eta + rm)
        out.append(y * gp + (n - y) * gm)
    if order >= 3:
        # g'(x) = -r'(x)(x + r) - r(1 + r') with r'(x) = g(x)
        dgp = -gp * (eta + rp) - rp * (1.0 + gp)
        dgm = -gm * (-eta + rm) - rm * (1.0 + gm)
        out.append(y * dgp - (n - y) * dgm)
    return out


def _log_kernel(y, n, eta, order):
    mu = np.exp(eta)
    out = [y * eta - mu]
    out += [y - mu, -mu, -mu][:order]
    return out


def _logit_fisher(n, eta):
    return n * special.expit(eta) * special.expit(-eta)


def _probit_fisher(n, eta):
    # n phi^2 / (Phi(eta) Phi(-eta)) = n r(eta) r(-eta): the two Mills ratios
    return n * _mills(eta) * _mills(-eta)


def _log_fisher(n, eta):
    return np.exp(eta)


@dataclass(frozen=True)
class GlmDensity:
    """One (family, link): kernel (log density without constants), constants, Fisher weight."""

    family: str
    link: str
    kernel: object
    const: object
    fisher: object
    uses_trials: bool


FAMILIES = {
    ("binomial", "logit"): GlmDensity(
        "binomial", "logit", _logit_kernel, _binomial_const, _logit_fisher, True
    ),
    ("binomial", "probit"): GlmDensity(
        "binomial", "probit", _probit_kernel, _binomial_const, _probit_fisher, True
    ),
    ("poisson", "log"): GlmDensity(
        "poisson", "log", _log_kernel, _poisson_const, _log_fisher, False
    ),
}


def density_for(family: str, link: str) -> GlmDensity:
    """The density of ``(family, link)``; ``bernoulli`` is binomial with one trial per row."""
    fam = "binomial" if family == "bernoulli" else family
    try:
        return FAMILIES[(fam, link)]
    except KeyError:
        known = ", ".join(f"{f}/{lk}" for f, lk in FAMILIES)
        raise ValueError(
            f"no density for family {family!r} with link {link!r} (known: {known})"
        ) from None


def _arrays(y, trials, eta):
    y = np.asarray(y, dtype=float)
    n = np.ones_like(y) if trials is None else np.asarray(trials, dtype=float)
    return y, n, np.asarray(eta, dtype=float)


def log_const(y, trials, family: str, link: str) -> np.ndarray:
    """The normalising constants alone: log C(n, y) (binomial) or -log y! (Poisson), per row."""
    d = density_for(family, link)
    y, n, _ = _arrays(y, trials, 0.0)
    return d.const(y, n)


def logp(y, trials, eta, family: str, link: str) -> np.ndarray:
    """The exact log density of each row at ``eta`` (constants included)."""
    d = density_for(family, link)
    y, n, eta = _arrays(y, trials, eta)
    return d.kernel(y, n, eta, 0)[0] + d.const(y, n)


def derivs(
    y, trials, eta, family: str, link: str, order: int = 2, const: bool = True
) -> list[np.ndarray]:
    """``[log p, d/deta, d2/deta2, d3/deta3][:order + 1]`` per row.

    ``const=False`` drops log C(n, y) / -log y!.
    """
    d = density_for(family, link)
    y, n, eta = _arrays(y, trials, eta)
    out = d.kernel(y, n, eta, order)
    if const:
        out[0] = out[0] + d.const(y, n)
    return out


def fisher_weight(trials, eta, family: str, link: str) -> np.ndarray:
    """The expected information n mu'(eta)^2 / V(mu) per row (lme4's PIRLS weight)."""
    d = density_for(family, link)
    eta = np.asarray(eta, dtype=float)
    n = np.ones_like(eta) if trials is None else np.asarray(trials, dtype=float)
    return d.fisher(n, eta)
