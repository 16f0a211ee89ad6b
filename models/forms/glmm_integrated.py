r"""The integrated GLMM forms of one grouping factor: ``marginal`` and ``sufficient``.

Both integrate the random intercept out of each cluster's density by the quadrature of
:mod:`models.quadrature` (default: a trapezoid rule at the cluster's mode, equal to brute-force
integration to 1e-8 for tau up to 5), so the posterior is over (beta, tau) alone (no funnel):

- ``marginal``: ``pm.Potential("loglik", RowsLogpOp(eta_i, tau, y, trials, codes))`` with
  eta_i = x_i'beta + offset_i per row; covariates may vary within clusters.
- ``sufficient``: ``pm.Potential("loglik", StatsLogpOp(eta_l, tau, trials, y, log_exposure,
  const))`` from each cluster's statistics (:func:`models.quadrature.cluster_stats`): applies
  when no covariate or offset varies within a cluster (a Poisson offset may: it enters as the
  cluster's log exposure); clusters with equal statistics and eta are one quadrature.

The Ops evaluate on the host (:mod:`models.quadrature_op`), which nutpie's numba backend
cannot compile; these forms' ``compiled`` route is the numba cfunc model of
:mod:`models.compiled.glmm` for the logit and log links (the same log density), else nutpie over
PyTensor's Python-calling function (``compile_pymc(model, backend="c")``), measured in
DEVELOPERS.md. Group effects are
drawn afterwards per draw from each cluster's conditional (:func:`add_effects`,
:func:`models.quadrature.conditional_draws`: inverse CDF on the trapezoid grid).
"""

from __future__ import annotations

import numpy as np

from varcomp.models.glmm import GlmmPriors, likelihood_of

__all__ = ["add_effects", "build_marginal", "build_sufficient", "cluster_loglik",
           "compiled_route", "marginal_values", "sufficient_absent", "sufficient_values"]

FACTORS_REASON = ("integrates one grouping factor's intercept out; with nested or crossed "
                  "factors use centred or noncentred")


def _family_link(data) -> tuple[str, str]:
    lik = likelihood_of(data)
    return lik.name, data.link


def _codes(data) -> np.ndarray:
    return np.asarray(data.design.factors[0].codes, dtype=np.intp)


def first_rows(data) -> np.ndarray:
    """The index of each cluster's first row (clusters 0..L-1)."""
    codes = _codes(data)
    L = int(codes.max()) + 1
    first = np.full(L, codes.size)
    np.minimum.at(first, codes, np.arange(codes.size))
    return first


def _varies(values: np.ndarray, codes: np.ndarray, first: np.ndarray) -> bool:
    return bool(np.any(values != values[first][codes]))


def sufficient_absent(data) -> str | None:
    """Why the ``sufficient`` form has no model for ``data`` (a varying covariate), or None."""
    codes, first = _codes(data), first_rows(data)
    X = data.design.X
    varying = [t for j, t in enumerate(data.design.terms)
               if _varies(X[:, j], codes, first)]
    if varying:
        return (f"covariate {', '.join(varying)} varies within clusters; use marginal "
                f"(each row's eta integrated per cluster)")
    if data.trials is not None and data.offset is not None and _varies(
            np.asarray(data.offset), codes, first):
        return "the offset varies within clusters; use marginal"
    return None


def sufficient_values(data) -> dict[str, np.ndarray]:
    """The ``sufficient`` form's containers: each cluster's statistics (``ClusterStats``)."""
    from varcomp.models.quadrature import cluster_stats

    family, link = _family_link(data)
    codes = _codes(data)
    binomial = data.trials is not None
    st = cluster_stats(data.y[:, 0], data.trials, codes, family, link,
                       offset=None if binomial else data.offset)
    log_exposure = st.log_exposure
    if binomial and data.offset is not None:  # constant within clusters: part of eta
        log_exposure = np.asarray(data.offset, dtype=np.float64)[first_rows(data)]
    key = np.column_stack([st.trials, st.y, log_exposure, data.design.X[first_rows(data)]])
    group = np.unique(key, axis=0, return_inverse=True)[1].ravel().astype(np.int64)
    return {"trials_c": st.trials, "y_c": st.y, "log_exposure": np.asarray(log_exposure),
            "const_c": st.const, "group_c": group}


def marginal_values(data) -> dict[str, np.ndarray]:
    """The ``marginal`` form's containers: the likelihood's rows (``y_obs``, trials, offset)."""
    return likelihood_of(data).containers(data)


def build_sufficient(data, *, priors: GlmmPriors | None = None):
    """``sufficient``: the clusters' statistics, each cluster's intercept integrated out."""
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.forms import mixed
    from varcomp.models.quadrature_op import StatsLogpOp

    priors = priors or GlmmPriors.default(data)
    model, _ = mixed.start(data, priors)
    family, link = _family_link(data)
    values = sufficient_values(data)
    Xc = data.design.X[first_rows(data)]
    with model:
        beta, tau = priors.create()
        stats = [pm.Data(k, values[k]) for k in ("trials_c", "y_c", "log_exposure", "const_c",
                                                  "group_c")]
        eta = pt.dot(pt.as_tensor(Xc), beta)
        pm.Potential("loglik", StatsLogpOp(family, link)(eta, tau, *stats))
    return model


def build_marginal(data, *, priors: GlmmPriors | None = None):
    """``marginal``: every row, each cluster's intercept integrated out."""
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.forms import mixed
    from varcomp.models.quadrature_op import RowsLogpOp

    priors = priors or GlmmPriors.default(data)
    model, _ = mixed.start(data, priors)
    family, link = _family_link(data)
    values = marginal_values(data)
    codes = _codes(data)
    with model:
        beta, tau = priors.create()
        y = pm.Data("y_obs", values["y_obs"])
        off = pm.Data("offset", values["offset"])
        trials = (pm.Data("trials", values["trials"]) if "trials" in values
                  else pt.as_tensor(np.ones(data.n_obs)))
        eta = pt.dot(pt.as_tensor(data.design.X), beta) + off
        op = RowsLogpOp(family, link, int(codes.max()) + 1)
        pm.Potential("loglik", op(eta, tau, y, trials, pt.as_tensor(codes)))
    return model


def compiled_route(build):
    """A form's ``compiled``: the numba cfunc model where it applies, else PyTensor's function.

    :mod:`models.compiled.glmm` covers the logit and log links with every scale prior (the same
    log density as ``build``'s PyMC model, tested); the probit (numpy quadrature) is sampled by
    nutpie over PyTensor's Python-calling function (``compile_pymc(model, backend="c")``).
    """
    def compiled(data, priors):
        from varcomp.models.compiled import glmm as cg
        from varcomp.models.compiled.nutpie import compile_pymc

        priors = priors or GlmmPriors.default(data)
        family, link = _family_link(data)
        if cg.supported(family, link, priors):
            if build is build_marginal:
                block = cg.marginal_block(priors, family, link, marginal_values(data),
                                          data.design.X, _codes(data))
            else:
                block = cg.sufficient_block(priors, family, link, sufficient_values(data),
                                            data.design.X[first_rows(data)])
            return cg.compile_block(priors, block)
        return compile_pymc(build(data, priors=priors), backend="c")

    return compiled


def _draws(post, name: str) -> np.ndarray:
    v = post[name].values
    return v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])


def _eta_rows(data, post) -> np.ndarray:
    """(S, N) fixed linear predictor x_i'beta + offset_i per draw."""
    eta = _draws(post, "beta") @ data.design.X.T
    return eta + (np.asarray(data.offset) if data.offset is not None else 0.0)


def cluster_loglik(data, post, likelihood=None) -> np.ndarray:
    """(S, L) each cluster's integrated log density per draw (exact by quadrature).

    The logit and log links run the numba kernel per draw
    (:func:`models.compiled.glmm_quadrature.rows_cluster_logp`, the rows' constants added per
    cluster), the probit the numpy rule (:func:`models.quadrature.cluster_logp_draws`); the two
    are equal to 1e-10 (``tests/test_compiled_glmm.py``).
    """
    from varcomp.models.compiled.glmm_quadrature import LINK_CODE, rows_cluster_logp
    from varcomp.models.quadrature import cluster_logp_draws

    family, link = _family_link(data)
    codes = _codes(data)
    L = int(codes.max()) + 1
    if (family, link) not in LINK_CODE:
        return cluster_logp_draws(data.y[:, 0], data.trials, _eta_rows(data, post), codes,
                                  _draws(post, "tau"), family, link, n_clusters=L)
    from varcomp.models.glm_density import density_for

    y = np.asarray(data.y[:, 0], dtype=np.float64)
    n = np.ones_like(y) if data.trials is None else np.asarray(data.trials, dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=L))]).astype(np.int64)
    out = rows_cluster_logp(LINK_CODE[(family, link)], n, y,
                            np.ascontiguousarray(_eta_rows(data, post), dtype=np.float64),
                            np.argsort(codes, kind="stable").astype(np.int64), starts,
                            np.ascontiguousarray(_draws(post, "tau"), dtype=np.float64))
    return out + np.bincount(codes, weights=density_for(family, link).const(y, n), minlength=L)


def add_effects(idata, data, seed) -> None:
    """Add ``group_effect`` (chain, draw, group) from each cluster's conditional.

    Per draw, one draw of each cluster's intercept given (beta, tau) and its rows
    (:func:`models.quadrature.conditional_draws`; for the logit and log links its numba twin
    :func:`models.compiled.glmm_quadrature.rows_conditional_draws` with the same random
    numbers, equal to it to 1e-8 in ``tests/test_compiled_glmm.py``).
    """
    import xarray as xr

    from varcomp.models.compiled.glmm_quadrature import LINK_CODE, rows_conditional_draws
    from varcomp.models.quadrature import conditional_draws

    post = idata.posterior
    if "group_effect" in post:
        return
    family, link = _family_link(data)
    codes = _codes(data)
    L = int(codes.max()) + 1
    shape = post["tau"].shape
    eta = _eta_rows(data, post)
    tau = _draws(post, "tau")
    rng = np.random.default_rng(seed)
    S, block = tau.size, 64
    y = data.y[:, 0]
    n = np.ones_like(y) if data.trials is None else data.trials
    out = np.empty((S, L))
    code = LINK_CODE.get((family, link))
    if code is not None:  # numba, with conditional_draws' random numbers in its order
        w_cell, w_point = np.empty((S, L)), np.empty((S, L))
        for start in range(0, S, block):
            b = min(block, S - start)
            w_cell[start:start + b] = rng.uniform(size=b * L).reshape(b, L)
            w_point[start:start + b] = rng.uniform(size=b * L).reshape(b, L)
        starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=L))])
        out = rows_conditional_draws(
            code, np.asarray(n, dtype=np.float64), np.asarray(y, dtype=np.float64),
            np.ascontiguousarray(eta, dtype=np.float64),
            np.argsort(codes, kind="stable").astype(np.int64), starts.astype(np.int64),
            np.ascontiguousarray(tau, dtype=np.float64), w_cell, w_point)
    for start in range(0, S if code is None else 0, block):
        b = min(block, S - start)
        stacked = (codes[None, :] + L * np.arange(b)[:, None]).ravel()
        out[start:start + b] = conditional_draws(
            np.tile(y, b), np.tile(n, b), eta[start:start + b].ravel(), stacked,
            np.repeat(tau[start:start + b], L), family, link, rng, n_clusters=b * L
        ).reshape(b, L)
    post["group_effect"] = xr.DataArray(out.reshape(*shape, L), dims=("chain", "draw", "group"),
                                        coords={"group": [str(g) for g in data.groups]})
