r"""PyMC builders shared by the mixed-model families (covariates, nested and crossed factors).

.. math::
    y = X\beta + \sum_f Z_f u_f + e,\qquad u_f \sim N(0, \tau_f^2 I),\qquad e \sim N(0, \sigma^2 I)

Every builder creates the same free parameters (:meth:`models.lmm.LmmPriors.create`: ``alpha``,
``slope``, ``tau``, ``sigma``; Deterministic ``beta``) and takes the response through ``pm.Data``
(``y_obs``; the marginal blocks ``y_b<i>_obs``; the sufficient statistics ``cell_s``, ``xy``,
``yy``), so checks and SBC compile one model and swap data sets of the same design. The group
effects are ``group_effect`` (dim ``group``) for one factor and ``u_<factor>`` (dim
``<factor>``, ``:`` written ``__``) for several. The family modules
(:mod:`~models.forms.regression`, :mod:`~models.forms.nested`, :mod:`~models.forms.crossed`) pick
the forms that apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from varcomp.models.cells import nested_of
from varcomp.models.data import ClusteredData, DataError
from varcomp.models.density import LOG_2PI
from varcomp.models.forms import family_of
from varcomp.models.lmm import LmmPriors
from varcomp.models.terms import sd_coords

__all__ = ["build_centred", "build_latent", "build_noncentred", "effect_names", "latent_values",
           "start"]


def safe(name: str) -> str:
    """A factor's name as a variable/dim name (``batch:cask`` -> ``batch__cask``)."""
    return name.replace(":", "__")


def effect_names(data: ClusteredData) -> list[tuple[str, str]]:
    """(variable, dim) of each factor's group effects (the family's :attr:`~Family.scalar_tau`)."""
    family = family_of(data)
    if family.effect_vars is not None:
        return list(family.effect_vars)
    if family.scalar_tau:
        return [("group_effect", "group")]
    return [(f"u_{safe(f.name)}", safe(f.name)) for f in data.design.factors]


def start(data: ClusteredData, priors: LmmPriors | None):
    """A PyMC model with the mixed model's coords, and the priors (default if None)."""
    import pymc as pm

    priors = priors or LmmPriors.default(data)
    d = data.design
    coords = {"group": [str(g) for g in data.groups], "term": list(d.terms),
              "slope_term": [t for t in d.terms if t != "Intercept"]}
    if not family_of(data).scalar_tau:
        coords["factor"] = sd_coords(d.random)  # the output names of (factor, coefficient)
        for f, (_, dim) in zip(d.factors, effect_names(data), strict=True):
            coords[dim] = [str(x) for x in f.levels]
    return pm.Model(coords=coords), priors


def build_latent(data: ClusteredData, *, priors: LmmPriors | None = None,
                 centred: bool | Sequence[bool] = True):
    """The latent model with each factor's effects centred or not.

    ``centred``: one flag, or one per factor in the design's order; a centred factor has
    ``u_f ~ N(0, tau_f)``, a non-centred one ``u_f = tau_f * u_f_offset``, offsets ~ N(0, 1).

    Every choice is the same posterior of (beta, tau, sigma, u); only the geometry NUTS meets
    differs.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.transforms import Affine

    model, priors = start(data, priors)
    design = data.design
    n_f = len(design.factors)
    flags = [centred] * n_f if isinstance(centred, bool) else list(centred)
    if len(flags) != n_f:
        raise ValueError(f"{len(flags)} centring flags for {n_f} factors")
    with model:
        y = pm.Data("y_obs", data.y[:, 0])
        beta, tau, sigma = priors.create()
        eta = pt.dot(pt.as_tensor(design.X), beta)
        for d, (f, (name, dim)) in enumerate(zip(design.factors, effect_names(data),
                                                 strict=True)):
            t = priors.tau_at(tau, d)
            if flags[d]:
                u = pm.Normal(name, 0.0, t, dims=dim, default_transform=Affine(0.0, priors.scale))
            else:
                z = pm.Normal(f"{name}_offset", 0.0, 1.0, dims=dim)
                u = pm.Deterministic(name, t * z, dims=dim)
            eta = eta + u[f.codes]
        pm.Normal("y", eta, sigma, observed=y)
    return model


def build_centred(data: ClusteredData, *, priors: LmmPriors | None = None):
    """Latent centred form: ``u_f ~ N(0, tau_f)``, ``y ~ N(X beta + sum_f u_f[f], sigma)``.

    Same posterior for beta, tau, sigma as the sufficient form, which integrates the effects
    out; struggles when a tau is near 0 (funnel).
    """
    return build_latent(data, priors=priors, centred=True)


def build_noncentred(data: ClusteredData, *, priors: LmmPriors | None = None):
    """Non-centred form: ``u_f = tau_f * u_f_offset``, offsets ~ N(0, 1): the same model."""
    return build_latent(data, priors=priors, centred=False)


def latent_values(data: ClusteredData) -> dict[str, np.ndarray]:
    """The latent forms' data container."""
    return {"y_obs": data.y[:, 0].copy()}


# ---------------------------------------------------------------------------- marginal (blocks)
def unit_blocks(data: ClusteredData, max_dim: int = 400):
    """Top-level units grouped by identical layout (cell sizes at every level).

    For the literal MvNormal: ``[(rows (units, K) int, Z (K, q) 0/1 per lower factor level,
    level of each column of Z), ...]``.

    Within a unit the rows are ordered by the finer factors' codes, so units whose nested cells
    have the same sizes in the same order share one covariance pattern.
    """
    design = data.design
    factors = design.factors
    order = np.lexsort([f.codes for f in factors[::-1]])
    top = factors[0].codes[order]
    starts = np.flatnonzero(np.r_[True, top[1:] != top[:-1]])
    ends = np.r_[starts[1:], top.size]
    blocks: dict[tuple, list[np.ndarray]] = {}
    patterns: dict[tuple, tuple] = {}
    for a, b in zip(starts, ends, strict=True):
        rows = order[a:b]
        if rows.size > max_dim:
            raise DataError(f"the marginal form stacks a unit of {rows.size} rows, more than its "
                            f"limit {max_dim}: use the 'sufficient' form")
        sig = []
        for f in factors[1:]:
            _, first, counts = np.unique(f.codes[rows], return_index=True, return_counts=True)
            sig.append(tuple(counts[np.argsort(first)]))
        key = (rows.size, *sig)
        blocks.setdefault(key, []).append(rows)
        if key not in patterns:
            patterns[key] = tuple(
                np.unique(f.codes[rows], return_inverse=True)[1].ravel() for f in factors[1:])
    out = []
    for key, rows in blocks.items():
        out.append((np.stack(rows), patterns[key]))
    return out


def build_marginal_blocks(data: ClusteredData, *, priors: LmmPriors | None = None):
    r"""Marginal form: the literal MvNormal of each top-level unit's stacked rows.

    .. math::
        y_i \sim \mathrm{MvNormal}\big(X_i\beta,\ \sigma^2 I + \textstyle\sum_f \tau_f^2
        Z_{f,i} Z_{f,i}^\top\big)

    Units with the same layout share one ``pm.MvNormal`` (observed ``y_b<i>``, shape (units, K)).
    PyMC factorises each block's covariance: a small-data reference, O(K^3) per block. Same
    posterior as the sufficient form.
    """
    import pymc as pm
    import pytensor.tensor as pt

    model, priors = start(data, priors)
    design = data.design
    blocks = unit_blocks(data)
    with model:
        beta, tau, sigma = priors.create()
        for i, (rows, pattern) in enumerate(blocks):
            K = rows.shape[1]
            cov = sigma**2 * pt.eye(K) + priors.tau_at(tau, 0) ** 2 * pt.ones((K, K))
            for d, codes in enumerate(pattern, start=1):
                same = (codes[:, None] == codes[None, :]).astype(np.float64)
                cov = cov + priors.tau_at(tau, d) ** 2 * same
            mean = pt.dot(pt.as_tensor(design.X[rows]), beta)
            pm.MvNormal(f"y_b{i}", mu=mean, cov=cov,
                        observed=pm.Data(f"y_b{i}_obs", data.y[rows, 0]))
    return model


def marginal_block_values(data: ClusteredData) -> dict[str, np.ndarray]:
    """The unit-block form's data containers."""
    return {f"y_b{i}_obs": data.y[rows, 0] for i, (rows, _) in enumerate(unit_blocks(data))}


def build_marginal_all(data: ClusteredData, *, priors: LmmPriors | None = None):
    r"""Marginal form over all rows: one MvNormal(X beta, sigma^2 I + sum_f tau_f^2 Z_f Z_f^T).

    For crossed designs, whose covariance does not split by unit: O(N^3) per gradient, a
    small-data reference.
    """
    import pymc as pm
    import pytensor.tensor as pt

    model, priors = start(data, priors)
    design = data.design
    N = data.n_obs
    with model:
        beta, tau, sigma = priors.create()
        cov = sigma**2 * pt.eye(N)
        for d, f in enumerate(design.factors):
            same = (f.codes[:, None] == f.codes[None, :]).astype(np.float64)
            cov = cov + priors.tau_at(tau, d) ** 2 * same
        pm.MvNormal("y", mu=pt.dot(pt.as_tensor(design.X), beta), cov=cov,
                    observed=pm.Data("y_obs", data.y[:, 0]))
    return model


# ---------------------------------------------------------------------------- sufficient (nested)
def nested_loglik_pt(st, beta, tau2, s2, cell_s, xy, yy, y_mean):
    r"""The nested closed form (:mod:`models.compiled.lmm_nested`'s recursion) in pytensor.

    Bottom-up, a unit with children summaries (a_i, b_i) has A = sum a_i, B = sum b_i,
    g = 1 + tau_d^2 A and passes (A / g, B / g) up; log L = -N/2 log(2 pi sigma^2)
    - RSS / (2 sigma^2) + sum_units [-log(g) / 2 + tau_d^2 B^2 / (2 g)]. Centred statistics:
    r = delta + y_c - X_c beta with delta = ybar - xbar' beta.
    """
    import pytensor.tensor as pt

    delta = y_mean - pt.dot(st.x_mean, beta)
    xx = pt.as_tensor(st.xx)
    rss = yy - 2.0 * pt.dot(beta, xy) + pt.dot(beta, pt.dot(xx, beta)) + st.n_obs * delta**2
    logl = -0.5 * st.n_obs * (LOG_2PI + pt.log(s2)) - 0.5 * rss / s2
    A = st.cell_n / s2
    B = (cell_s - pt.dot(pt.as_tensor(st.cell_t), beta) + st.cell_n * delta) / s2
    for d in range(st.depth - 1, -1, -1):  # bottom level (cells) first
        g = 1.0 + tau2[d] * A
        logl = logl + pt.sum(-0.5 * pt.log(g) + 0.5 * tau2[d] * B * B / g)
        if d == 0:
            break
        parent = st.parents[d]
        m = st.level_sizes[d - 1]
        A = pt.inc_subtensor(pt.zeros(m)[parent], A / g)  # each parent sums its children
        B = pt.inc_subtensor(pt.zeros(m)[parent], B / g)
    return logl


def build_sufficient_nested(data: ClusteredData, *, priors: LmmPriors | None = None):
    r"""Closed form from per-cell statistics (nested factors of any depth, one included).

    ``pm.Potential("loglik", ...)`` adds :func:`nested_loglik_pt`, normalising constants
    included: O(cells x k) per gradient whatever the number of rows.
    """
    import pymc as pm
    import pytensor.tensor as pt

    model, priors = start(data, priors)
    st = nested_of(data)
    n_f = len(data.design.factors)
    with model:
        cell_s = pm.Data("cell_s", st.cell_s)
        xy = pm.Data("xy", st.xy)
        yy = pm.Data("yy", np.asarray(st.yy))
        y_mean = pm.Data("y_mean", np.asarray(st.y_mean))
        beta, tau, sigma = priors.create()
        tau_vec = pt.stack([priors.tau_at(tau, d) for d in range(n_f)])
        pm.Potential("loglik", nested_loglik_pt(st, beta, tau_vec**2, sigma**2, cell_s, xy, yy,
                                                y_mean))
    return model


def sufficient_nested_values(data: ClusteredData) -> dict[str, np.ndarray]:
    """The nested sufficient form's data containers."""
    st = nested_of(data)
    return {"cell_s": st.cell_s, "xy": st.xy, "yy": np.asarray(st.yy),
            "y_mean": np.asarray(st.y_mean)}
