r"""PyMC builders of the one-way model: four parameterisations of one posterior.

.. math::
    X_{lj} = \mu + M_l + e_{lj},\quad M_l \sim N(0, \tau^2),\quad e_{lj} \sim N(0, \sigma^2)

Every builder returns an unfitted ``pm.Model`` with coords ``group`` (the real labels), the
same free parameters ``mu``, ``tau``, ``sigma`` created by :meth:`models.priors.Priors.create`,
and the Deterministic ``icc = tau^2 / (tau^2 + sigma^2)``. The data enter through ``pm.Data``
containers (``y_obs``; ``y_b<K>_obs`` blocks; ``n``, ``xbar``, ``ss``), so the checks and SBC
compile the same builders once and swap data sets of the same design (:data:`FAMILY`'s
``data_values``). :mod:`models.checks` shows that their log densities (with the latent effects
integrated out) agree to 1e-9 and that their posteriors agree within Monte Carlo error.
"""

from __future__ import annotations

import numpy as np

from varcomp.models.data import ClusteredData, DataError
from varcomp.models.density import LOG_2PI, marginal_logp
from varcomp.models.effects import add_group_effects
from varcomp.models.forms.base import Family, Form
from varcomp.models.pointwise import oneway_loglik, oneway_prior
from varcomp.models.predictive import oneway_new_cluster
from varcomp.models.prior_grammar import parse_partition_overrides, parse_prior_overrides
from varcomp.models.priors import PartitionPriors, Priors

__all__ = [
    "FAMILY",
    "build_centred",
    "build_marginal",
    "build_noncentred",
    "build_sufficient",
    "size_blocks",
]


def _start(data: ClusteredData, priors: Priors | None):
    import pymc as pm

    priors = priors or Priors.default(data)
    model = pm.Model(coords={"group": [str(g) for g in data.groups]})
    return model, priors


def _icc(tau, sigma):
    import pymc as pm

    # models.shares.icc (the definition) in the graph's algebra; tests/test_shares.py: equal
    return pm.Deterministic("icc", tau**2 / (tau**2 + sigma**2))


def build_centred(data: ClusteredData, *, priors: Priors | None = None):
    r"""Latent (centred) form: ``group_effect ~ N(0, tau)``, ``y ~ N(mu + group_effect, sigma)``.

    Same posterior for ``mu``, ``tau``, ``sigma``, ``icc`` as :func:`build_sufficient`, which
    integrates the group effects out. Struggles when tau is near 0 (funnel).
    """
    import pymc as pm

    from varcomp.models.transforms import Affine

    model, priors = _start(data, priors)
    with model:
        y = pm.Data("y_obs", data.y[:, 0])
        mu, tau, sigma = priors.create()
        effect = pm.Normal("group_effect", 0.0, tau, dims="group",
                           default_transform=Affine(0.0, priors.scale))
        pm.Normal("y", mu + effect[data.codes], sigma, observed=y)
        _icc(tau, sigma)
    return model


def build_noncentred(data: ClusteredData, *, priors: Priors | None = None):
    r"""Non-centred form: ``group_effect = tau * group_effect_offset``, offset ~ N(0, 1).

    The same model as :func:`build_centred` in other coordinates; struggles when the data pin
    the group effects down (large n_l or ICC near 1).
    """
    import pymc as pm

    model, priors = _start(data, priors)
    with model:
        y = pm.Data("y_obs", data.y[:, 0])
        mu, tau, sigma = priors.create()
        offset = pm.Normal("group_effect_offset", 0.0, 1.0, dims="group")
        effect = pm.Deterministic("group_effect", tau * offset, dims="group")
        pm.Normal("y", mu + effect[data.codes], sigma, observed=y)
        _icc(tau, sigma)
    return model


def _latent_values(data: ClusteredData) -> dict[str, np.ndarray]:
    return {"y_obs": data.y[:, 0].copy()}


def padded_rows(codes: np.ndarray, sizes: np.ndarray, *, max_blocks: int = 8):
    """Clusters in at most ``max_blocks`` size ranges, each zero-padded to the range's largest size.

    Returns ``[(n, rows, real), ...]``: ``n`` (clusters,) the true sizes, ``rows`` (clusters, K)
    the data row of each slot (0 on padding) and ``real`` (clusters, K) which slots are rows.
    The ranges are contiguous in size and chosen by dynamic programming to minimise
    sum_blocks clusters * K^2, the work of the padded triangular solves (on a 31k-row exam-like
    set with 80 sizes up to 188: 1.5x the unpadded sum n_l^2 with 8 blocks). Rows keep their
    order in the data within each cluster.
    """
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # cost[b, j]: best padded work of the distinct sizes u[:j] in b ranges (u[j-1] closes one)
    u, count = np.unique(sizes, return_counts=True)
    m = u.size
    blocks = max(1, min(int(max_blocks), m))
    before = np.concatenate([[0], np.cumsum(count)])
    cost = np.full((blocks + 1, m + 1), np.inf)
    cost[0, 0] = 0.0
    arg = np.zeros((blocks + 1, m + 1), dtype=np.int64)
    for b in range(1, blocks + 1):
        for j in range(1, m + 1):
            trial = cost[b - 1, :j] + (before[j] - before[:j]) * float(u[j - 1]) ** 2
            arg[b, j] = int(np.argmin(trial))
            cost[b, j] = trial[arg[b, j]]
    edges, j = [], m
    for b in range(int(np.argmin(cost[1:, m])) + 1, 0, -1):
        edges.append(int(u[j - 1]))
        j = arg[b, j]
    out, low = [], 0
    for K in sorted(edges):
        g = np.flatnonzero((sizes > low) & (sizes <= K))
        low = K
        col = np.arange(K)
        real = col[None, :] < sizes[g][:, None]
        idx = np.where(real, starts[g][:, None] + col[None, :], 0)
        out.append((sizes[g].astype(np.int64), order[idx], real))
    return out


def size_blocks(data: ClusteredData, *, max_blocks: int = 8
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`padded_rows` with the responses, zeros on the padding.

    ``[(n, values (clusters, K)), ...]``.
    """
    y = data.y[:, 0]
    return [(n, np.where(real, y[rows], 0.0))
            for n, rows, real in padded_rows(data.codes, data.sizes, max_blocks=max_blocks)]


def padded_mvnormal(blocks, sigma, tau, means) -> None:
    """The literal MvNormal nodes of :func:`build_marginal` (one per padded block).

    ``blocks``: ``[(n, values), ...]`` as :func:`size_blocks`; ``means``: one (clusters, K)
    mean tensor per block (zero on the padding). See :func:`build_marginal` for the closed-form
    Cholesky factor and the padding's constant.
    """
    import pymc as pm
    import pytensor.tensor as pt

    a, b = sigma * sigma, tau * tau
    n_padded = 0
    for (n, values), mean in zip(blocks, means, strict=True):
        K = values.shape[1]
        j = np.arange(1, K + 1, dtype=np.float64)
        s_prev, s_j = a + b * (j - 1.0), a + b * j
        diag = pt.sqrt(a * s_j / s_prev)  # (K,) L_jj
        off = b * pt.sqrt(a / (s_prev * s_j))  # (K,) L_ij, i > j: constant down column j
        col = np.arange(K)
        real = col[None, :] < n[:, None]  # (clusters, K): not padding
        below = (col[None, :, None] > col[None, None, :]) & real[:, :, None]
        chol = (off[None, None, :] * below.astype(np.float64))[:, col, col].set(
            pt.switch(real, diag[None, :], 1.0))
        pm.MvNormal(f"y_b{K}", mu=mean, chol=chol, observed=pm.Data(f"y_b{K}_obs", values))
        n_padded += int((~real).sum())
    # each padded zero contributed log N(0 | 0, 1) = -log(2 pi)/2: add it back exactly
    pm.Potential("padding", pt.constant(0.5 * LOG_2PI * n_padded))


def check_padded_memory(blocks, sizes) -> None:
    """Refuse padded blocks whose covariance factors would not fit in memory."""
    from varcomp.models.data import memory_budget

    need = sum(values.shape[0] * values.shape[1] ** 2 * 17 for _, values in blocks)
    if need > memory_budget():
        raise DataError(f"the literal MvNormal of clusters up to {int(sizes.max()):,} rows "
                        f"needs about {need / 2**30:.0f} GiB for its covariance factors: use "
                        f"--model sufficient (the same posterior, O(clusters))")


def build_marginal(data: ClusteredData, *, priors: Priors | None = None):
    r"""Marginal form: the literal MvNormal of each cluster, group effects integrated out.

    .. math::
        X_l \sim \mathrm{MvNormal}(\mu \mathbf 1, \sigma^2 I + \tau^2 \mathbf 1 \mathbf 1^\top)

    Clusters are grouped into at most 8 size ranges (:func:`size_blocks`); each
    range is one ``pm.MvNormal`` (observed ``y_b{K}``, shape (clusters, K)) with one covariance
    per cluster: the cluster's own sigma^2 I + tau^2 11^T in the leading n_l x n_l block and the
    identity on the K - n_l padded coordinates, whose observed values are 0. Each padded zero
    adds log N(0 | 0, 1) = -log(2 pi)/2 and nothing else (the blocks are independent), so the
    Potential ``padding`` adds back (K - n_l) log(2 pi)/2: the model's log density is
    sum_l log MVN(x_l; mu 1, sigma^2 I + tau^2 11^T) exactly, PyMC's MvNormal density as is.

    The Cholesky factor is given in closed form (see
    :func:`models.density.compound_symmetry_chol`: L_jj = sqrt(a s_j / s_{j-1}),
    L_ij = b sqrt(a / (s_{j-1} s_j)) for i > j, s_j = a + j b, a = sigma^2, b = tau^2; the factor
    of a leading block is the leading block of the factor). It is written with ``set_subtensor``
    so that pytensor's rewrites remove both ``cholesky(L L^T)`` and the diagonal extraction of
    the log determinant: no O(K^3) factorisation or its gradient is computed, only
    triangular solves, O(clusters K^2) per gradient. Same posterior for ``mu``, ``tau``,
    ``sigma``, ``icc`` as :func:`build_sufficient`.
    """
    blocks = size_blocks(data)
    check_padded_memory(blocks, data.sizes)
    model, priors = _start(data, priors)
    with model:
        mu, tau, sigma = priors.create()
        real = [(np.arange(v.shape[1])[None, :] < n[:, None]).astype(np.float64)
                for n, v in blocks]
        padded_mvnormal(blocks, sigma, tau, [mu * r for r in real])
        _icc(tau, sigma)
    return model


def _marginal_values(data: ClusteredData) -> dict[str, np.ndarray]:
    return {f"y_b{values.shape[1]}_obs": values for _, values in size_blocks(data)}


def build_sufficient(data: ClusteredData, *, priors: Priors | None = None):
    r"""Closed-form marginal from sufficient statistics (n_l, xbar_l, S_l): O(L) per gradient.

    ``pm.Potential("loglik", ...)`` adds :func:`models.density.marginal_logp`, normalising
    constants included, so the model's log density equals the MvNormal form's exactly. The
    statistics are ``pm.Data`` of any length: one compiled model serves any design.
    """
    import pymc as pm
    import pytensor.tensor as pt

    model, priors = _start(data, priors)
    values = _sufficient_values(data)
    with model:
        n, xbar, ss = (pm.Data(k, values[k]) for k in ("n", "xbar", "ss"))
        mu, tau, sigma = priors.create()
        pm.Potential("loglik", marginal_logp(n, xbar, ss, mu, tau, sigma, xp=pt))
        _icc(tau, sigma)
    return model


def _sufficient_values(data: ClusteredData) -> dict[str, np.ndarray]:
    n, xbar, ss = data.stats.column(0)
    return {"n": n, "xbar": xbar, "ss": ss}


def _compiled_sufficient(data: ClusteredData, priors: Priors | None):
    """The compiled sufficient posterior, or None for priors it does not cover.

    The compiled model is :mod:`models.compiled.oneway`'s.
    """
    from varcomp.models.compiled import oneway

    priors = priors or Priors.default(data)
    if not isinstance(priors, Priors) or not oneway.supported(priors):
        return None  # e.g. the partition prior: the PyMC model, compiled by nutpie's numba
    return oneway.compile_sufficient(data.stats, priors)


MARGINAL_MAX_CLUSTER = 200
"""``--model all`` leaves out the literal MvNormal when a cluster has more rows than this: its
padded blocks cost O(n^2) per cluster and gradient (the notes' 1000-row clusters: minutes)."""


def _skip_marginal(data: ClusteredData) -> str | None:
    biggest = int(data.sizes.max())
    if biggest <= MARGINAL_MAX_CLUSTER:
        return None
    return (f"the literal MvNormal costs O(n^2) per cluster and gradient and a cluster has "
            f"{biggest} rows (limit {MARGINAL_MAX_CLUSTER} for --model all): ask for "
            f"--model marginal to run it anyway")


def _estimates(data: ClusteredData) -> dict:
    from varcomp.models.estimate import fit_ml, fit_reml

    return {"ml": fit_ml(data), "reml": fit_reml(data)}


def _reference(data: ClusteredData, priors: Priors | None):
    from varcomp.models.reference import reference_posterior

    return reference_posterior(data, priors or Priors.default(data))


FAMILY = Family(
    name="oneway",
    title="one-way random-effects model",
    forms={
        "centred": Form("centred", "group_effect ~ N(0, tau), y ~ N(mu + group_effect, sigma)",
                        build_centred, _latent_values, latent=True),
        "noncentred": Form("noncentred", "group_effect = tau * group_effect_offset, offset ~ "
                           "N(0, 1)", build_noncentred, _latent_values, latent=True),
        "marginal": Form("marginal", "literal MvNormal(mu 1, sigma^2 I + tau^2 11') per cluster",
                         build_marginal, _marginal_values, skip=_skip_marginal),
        "sufficient": Form("sufficient", "closed form from (n_l, xbar_l, S_l): O(L) per "
                           "gradient", build_sufficient, _sufficient_values,
                           compiled=_compiled_sufficient),
    },
    default_form="sufficient",
    default_priors=Priors.default,
    parse_priors=lambda data, specs: parse_prior_overrides(Priors.default(data), specs),
    summary_vars=("mu", "tau", "sigma", "icc"),
    compare_vars=("mu", "tau", "sigma", "icc"),
    add_effects=lambda idata, data, seed: add_group_effects(idata, data, seed=seed),
    estimates=_estimates,
    reference=_reference,
    cluster_loglik=oneway_loglik,
    log_prior=oneway_prior,
    new_cluster=oneway_new_cluster,
    partition_priors=lambda data, specs: parse_partition_overrides(
        PartitionPriors.default(data), specs),
    oracle="varcomp.models.checks.kit_oneway:KIT",
    anova=True,
)
