r"""PyMC builders of the multivariate (p-outcome) variance-components model, in four forms.

.. math::
    \mathbf X_{lj} = \boldsymbol\mu + \mathbf M_l + \mathbf e_{lj},\qquad
    \mathbf M_l \sim N_p(\mathbf 0, V),\qquad \mathbf e_{lj} \sim N_p(\mathbf 0, \Sigma)

A row may miss some outcomes (NaN in ``data.y``). Its observed components X_lj[O] then follow
N(mu[O] + M_l[O], Sigma[O, O]): the latent forms put only those in the likelihood, the marginal
forms integrate M_l out of the cluster's observed sub-vector exactly. Nothing is dropped.

Every builder returns an unfitted ``pm.Model`` with coords ``group``, ``outcome`` (the response
names) and ``outcome_bis`` (a second copy, for matrices), the parameters of
:meth:`models.priors.MvPriors.create` and its Deterministics ``V``, ``Sigma``, ``tau``,
``sigma``, ``mu``, ``icc``, ``corr_between``, ``corr_within``.

The closed form used by ``sufficient`` (and by :func:`marginal_loglik`, :func:`cluster_conditional`)
is the information form of the Gaussian integral over M_l. For a row pattern P (the set of
observed outcomes) let A_P = S_P^T Sigma_P^{-1} S_P (Sigma_P = Sigma[P, P] embedded back into
p x p), n_lP the cluster's rows with pattern P, d_lP their mean minus mu (on P), W_P the pooled
scatter of pattern-P rows about their (cluster, pattern) means, and with V = L_V L_V^T

.. math::
    H_l = \sum_P n_{lP} A_P,\quad g_l = \sum_P n_{lP} A_P d_{lP},\quad
    K_l = I + L_V^\top H_l L_V,\quad c_l = L_V^\top g_l,

    \log p(x) = \sum_P \Big[-\tfrac{N_P |P|}{2}\log 2\pi - \tfrac{N_P}{2}\log|\Sigma_P|
                 - \tfrac12 \mathrm{tr}(A_P W_P)\Big]
              + \sum_l \Big[-\tfrac12 \sum_P n_{lP} d_{lP}^\top A_P d_{lP}
                 - \tfrac12\log|K_l| + \tfrac12 c_l^\top K_l^{-1} c_l\Big]

(completing the square in m_l; K_l = L_V^T (V^{-1} + H_l) L_V, written so that V -> 0 is
finite). For a cluster whose rows are all complete this is the issue's closed form
-(n-1)/2 log|Sigma| - 1/2 log|Sigma + nV| - n/2 d^T (Sigma + nV)^{-1} d.
"""

from __future__ import annotations

import numpy as np

from varcomp.models.data import ClusteredData, DataError
from varcomp.models.density import LOG_2PI
from varcomp.models.forms.base import Family, Form
from varcomp.models.mvstats import (
    PatternStats,
    add_group_effects_mv,
    marginal_block_count,
    marginal_blocks,
    pattern_stats,
)
from varcomp.models.pointwise import mv_loglik, mv_prior
from varcomp.models.predictive import mv_new_cluster
from varcomp.models.priors import MvPriors

__all__ = ["FAMILY", "build_centred", "build_marginal", "build_noncentred", "build_sufficient",
           "sufficient_loglik"]


# ---------------------------------------------------------------------------------------------
# pytensor: the closed form from sufficient statistics (O(L) elementwise for p = 2)
def _chol_unrolled(A, xp=None):
    """Lower Cholesky factor of a small symmetric matrix given as nested lists of tensors.

    Each entry may be a vector (one matrix per cluster): the p^3/6 steps are elementwise, so a
    batch of small factorisations needs no batched linear-algebra Op (pytensor 2.38's numba
    backend runs batched Cholesky/solve gradients in object mode).
    """
    if xp is None:
        import pytensor.tensor as xp
    p = len(A)
    L = [[None] * p for _ in range(p)]
    for j in range(p):
        s = A[j][j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        L[j][j] = xp.sqrt(s)
        for i in range(j + 1, p):
            s = A[i][j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s / L[j][j]
    return L


def _forward_unrolled(L, b):
    """Solve L x = b (L lower triangular, nested lists; b a list of entries)."""
    x = []
    for i in range(len(b)):
        s = b[i]
        for k in range(i):
            s = s - L[i][k] * x[k]
        x.append(s / L[i][i])
    return x


def _tri_inverse(L):
    """Inverse of a lower-triangular matrix given as nested lists, as a (p, p) tensor."""
    import pytensor.tensor as pt

    p = len(L)
    cols = [_forward_unrolled(L, [1.0 if i == j else 0.0 for i in range(p)]) for j in range(p)]
    return pt.stack([pt.stack([pt.as_tensor(cols[j][i]) for j in range(p)]) for i in range(p)])


def _pattern_terms(stats: PatternStats, chol_Sigma):
    """A_P (P, p, p) tensors and the per-pattern constant log-density terms (a scalar)."""
    import pytensor.tensor as pt

    p = stats.p
    Sigma = chol_Sigma @ chol_Sigma.T
    N = stats.n.sum(axis=0)
    A_list, const, complete_Linv = [], 0.0, None
    for q, pat in enumerate(stats.patterns):
        idx = np.flatnonzero(pat)
        if pat.all():
            Lp = [[chol_Sigma[i, j] if j <= i else 0.0 for j in range(p)] for i in range(p)]
        else:
            Lp = _chol_unrolled([[Sigma[i, j] for j in idx] for i in idx])
        Linv = _tri_inverse(Lp)
        A_sub = Linv.T @ Linv  # Sigma_P^{-1}
        S = pt.as_tensor(np.eye(p)[idx])  # selector: observed components of pattern P
        A_list.append(S.T @ A_sub @ S)
        logdet = 2.0 * sum(pt.log(Lp[i][i]) for i in range(idx.size))
        W = stats.scatter[q][np.ix_(idx, idx)]
        const = (const - 0.5 * N[q] * idx.size * LOG_2PI - 0.5 * N[q] * logdet
                 - 0.5 * pt.sum(A_sub * W))
        if pat.all():
            complete_Linv = Linv
    return A_list, const, complete_Linv


def sufficient_loglik(stats: PatternStats, mu, chol_V, chol_Sigma, *, complete: str = "auto"):
    r"""Exact log density of the observed data from :class:`PatternStats` (a pytensor scalar).

    Clusters whose rows are all complete (the usual case) use the closed form of
    :func:`build_sufficient`. With ``complete="eigh"`` it costs one generalised
    eigendecomposition of V relative to Sigma per evaluation: with Sigma = L L^T and
    L^-1 V L^-T = Q diag(lambda) Q^T,

    .. math::
        \log|\Sigma + nV| = \log|\Sigma| + \textstyle\sum_k \log(1 + n\lambda_k),\qquad
        d^\top(\Sigma + nV)^{-1}d = \textstyle\sum_k z_k^2 / (1 + n\lambda_k),\ z = Q^\top L^{-1} d,

    O(p^3 + L p^2). With ``complete="2x2"`` (p = 2 only) the same terms are written
    elementwise: M = Sigma + nV, |M| = M11 M22 - M12^2, d^T M^-1 d = (M22 d1^2 - 2 M12 d1 d2
    + M11 d2^2) / |M|, O(L) with no linear-algebra Op, so it compiles fastest. Clusters with
    incomplete rows use the information form of the module docstring with K_l factorised by an
    elementwise Cholesky (O(L p^3) elementwise operations, exact); ``complete="cholesky"``
    sends every cluster that way.

    ``"auto"`` is ``"2x2"`` for p = 2, ``"cholesky"`` for p <= 4 and ``"eigh"`` beyond. Why not
    always ``"eigh"``: pytensor 2.38's numba backend runs the gradient of ``eigh`` (EighGrad)
    in object mode, a Python call per gradient. Measured on 160 clusters x 45 rows, p = 3:
    2.7 s of sampling with ``"eigh"`` against 0.6-1.2 s with ``"cholesky"``, whose graph grows
    as p^3 and so is kept for small p. The gradient of ``eigh`` is also singular where two
    generalised eigenvalues coincide (e.g. V proportional to Sigma): probability zero under
    the posterior, but :func:`build_sufficient` gives ``chol_V_std`` an initial value with
    distinct eigenvalues for that reason.
    """
    import pytensor.tensor as pt

    if complete not in ("auto", "eigh", "2x2", "cholesky"):
        raise DataError(f"complete must be 'auto', 'eigh', '2x2' or 'cholesky', got {complete!r}")
    p = stats.p
    if complete == "auto":
        complete = "2x2" if p == 2 else "cholesky" if p <= 4 else "eigh"
    if complete == "2x2" and p != 2:
        raise DataError(f"complete='2x2' needs p = 2 outcomes, the data have {p}")
    A_list, logp, Linv = _pattern_terms(stats, chol_Sigma)
    n = stats.n.astype(np.float64)
    closed = stats.complete_only if complete != "cholesky" else np.zeros(n.shape[0], bool)
    if closed.any():
        q = stats.complete_index
        nc = n[closed, q]
        d = pt.as_tensor(stats.mean[closed, q, :]) - mu[None, :]  # (Lc, p)
        if complete == "eigh":
            B = Linv @ chol_V
            lam, Q = pt.linalg.eigh(B @ B.T)
            z = d @ (Q.T @ Linv).T
            one_n_lam = 1.0 + nc[:, None] * lam[None, :]
            logp = logp - 0.5 * pt.sum(pt.log(one_n_lam) + nc[:, None] * z * z / one_n_lam)
        else:
            V = chol_V @ chol_V.T
            S = chol_Sigma @ chol_Sigma.T
            m11, m12, m22 = S[0, 0] + nc * V[0, 0], S[0, 1] + nc * V[0, 1], S[1, 1] + nc * V[1, 1]
            det = m11 * m22 - m12 * m12
            d1, d2 = d[:, 0], d[:, 1]
            log_det_S = 2.0 * (pt.log(chol_Sigma[0, 0]) + pt.log(chol_Sigma[1, 1]))
            # the pattern terms hold -n/2 log|Sigma|; the cluster adds 1/2 log|S| - 1/2 log|M|
            logp = logp - 0.5 * pt.sum(pt.log(det) - log_det_S
                                       + nc * (m22 * d1 * d1 - 2.0 * m12 * d1 * d2
                                               + m11 * d2 * d2) / det)
    rest = ~closed & (n.sum(axis=1) > 0)
    if rest.any():
        nr = n[rest]  # (Lm, P)
        P = len(A_list)
        A = pt.stack(A_list)  # (P, p, p), symmetric
        d = (pt.as_tensor(stats.mean[rest]) - mu[None, None, :]) * stats.patterns[None]
        Ad = pt.sum(d[:, :, None, :] * A[None], axis=-1)  # (Lm, P, p): A_P d_lP
        quad = pt.sum(nr[:, :, None] * d * Ad, axis=(1, 2))  # sum_P n d^T A_P d
        g = pt.sum(nr[:, :, None] * Ad, axis=1)  # (Lm, p)
        # G_P = L_V^T A_P L_V; K_l = I + sum_P n_lP G_P as one (Lm, P) x (P, p*p) product
        AL = pt.tensordot(A, chol_V, axes=[[2], [0]])  # (P, p, p): A_P L_V
        G = pt.tensordot(AL, chol_V, axes=[[1], [0]]).dimshuffle(0, 2, 1)  # (L_V^T A_P L_V)
        Kflat = np.eye(p).reshape(-1)[None, :] + pt.dot(nr, G.reshape((P, p * p)))
        K = [[Kflat[:, max(i, j) * p + min(i, j)] for j in range(p)] for i in range(p)]
        c = g @ chol_V  # c_l = L_V^T g_l
        R = _chol_unrolled(K)
        w = _forward_unrolled(R, [c[:, i] for i in range(p)])
        per_cluster = -0.5 * quad + sum(-pt.log(R[i][i]) + 0.5 * w[i] * w[i] for i in range(p))
        logp = logp + pt.sum(per_cluster)
    return logp


# ---------------------------------------------------------------------------------------------
# builders
def _start(data: ClusteredData, priors: MvPriors | None):
    import pymc as pm

    priors = priors or MvPriors.default(data)
    if priors.p != data.p:
        raise DataError(f"priors are for {priors.p} outcomes but the data have {data.p}")
    coords = {"group": [str(g) for g in data.groups], "outcome": list(data.responses),
              "outcome_bis": list(data.responses)}
    return pm.Model(coords=coords), priors


def _pattern_name(data: ClusteredData, pat: np.ndarray) -> str:
    if pat.all():
        return "y"
    return "y_" + "+".join(r for r, o in zip(data.responses, pat, strict=True) if o)


def _mvnormal_chol_logp(p: int):
    """Log density of MvNormal(mu, chol chol^T) over the last axis, by forward substitution.

    The same density as ``pm.MvNormal(mu, chol=chol)``, used through ``pm.CustomDist`` by the
    latent forms: pm.MvNormal is slow in pytensor 2.38's numba backend (it re-factorises
    chol chol^T; measured on 7,185 x 2 observed rows plus 160 x 2 effects, 41 ms per gradient
    for the centred model against 0.3 ms with this form).
    """
    import pytensor.tensor as pt

    def logp(value, mu, chol):
        r = value - mu
        z = []
        for i in range(p):
            s = r[..., i]
            for k in range(i):
                s = s - chol[..., i, k] * z[k]
            z.append(s / chol[..., i, i])
        out = -0.5 * p * LOG_2PI
        for i in range(p):
            out = out - 0.5 * z[i] * z[i] - pt.log(chol[..., i, i])
        return out

    return logp


def _mvnormal_chol_random(mu, chol, rng=None, size=None):
    """Draws of MvNormal(mu, chol chol^T) (numpy, for prior and posterior predictive)."""
    shape = np.broadcast_shapes(np.shape(mu), np.shape(chol)[:-1])
    if size is not None:
        shape = tuple(size) + shape[-1:]
    return mu + np.einsum("...ij,...j->...i", chol, rng.standard_normal(size=shape))


def _latent_likelihood(data: ClusteredData, cluster_mean, chol_Sigma) -> None:
    """Observed components of each row given its cluster's mean, one node per row pattern.

    The observed values are in the ``pm.Data`` containers ``<node>_obs``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    stats = pattern_stats(data)
    Sigma = chol_Sigma @ chol_Sigma.T
    for q, pat in enumerate(stats.patterns):
        rows = np.flatnonzero(stats.row_pattern == q)
        idx = np.flatnonzero(pat)
        loc = cluster_mean[data.codes[rows]][:, idx]
        obs = data.y[np.ix_(rows, idx)]
        name = _pattern_name(data, pat)
        if idx.size == 1:
            k = int(idx[0])
            pm.Normal(name, mu=loc[:, 0], sigma=pt.sqrt(Sigma[k, k]),
                      observed=pm.Data(f"{name}_obs", obs[:, 0]))
            continue
        if pat.all():
            chol = chol_Sigma
        else:
            sub = _chol_unrolled([[Sigma[i, j] for j in idx] for i in idx])
            chol = pt.stack([pt.stack([pt.as_tensor(sub[i][j]) if j <= i else pt.constant(0.0)
                                       for j in range(idx.size)]) for i in range(idx.size)])
        pm.CustomDist(name, loc, chol, logp=_mvnormal_chol_logp(int(idx.size)),
                      random=_mvnormal_chol_random, signature="(p),(p,p)->(p)",
                      observed=pm.Data(f"{name}_obs", obs))


def _latent_values(data: ClusteredData) -> dict[str, np.ndarray]:
    stats = pattern_stats(data)
    out = {}
    for q, pat in enumerate(stats.patterns):
        rows = np.flatnonzero(stats.row_pattern == q)
        idx = np.flatnonzero(pat)
        obs = data.y[np.ix_(rows, idx)]
        out[f"{_pattern_name(data, pat)}_obs"] = obs[:, 0] if idx.size == 1 else obs
    return out


def build_centred(data: ClusteredData, *, priors: MvPriors | None = None):
    r"""Latent centred form: ``group_mean`` = mu + M_l ~ N_p(mu, V), rows ~ N_p(group_mean, Sigma).

    The free latent variable is ``group_mean`` (dims group, outcome; the sampler sees it
    standardised per outcome), and ``group_effect`` = group_mean - mu is a Deterministic:
    M_l ~ N_p(0, V) as in the notes, in hierarchically centred coordinates (Gelfand, Sahu &
    Carlin 1995). Writing the rows as mu + M_l with M_l free instead makes mu and every M_l
    strongly anti-correlated when the clusters are large (mu + M_l is pinned down, mu is not):
    on 160 clusters of ~45 rows that version ran 1,160 s for 4 effective draws. A row's missing
    outcomes are left out of its likelihood term (one observed node per row pattern: ``y`` for
    complete rows, ``y_<observed names>`` for the others; each an exact MvNormal written with
    ``pm.CustomDist``, see :func:`_mvnormal_chol_logp`). Same posterior for the shared
    parameters as :func:`build_sufficient`, which integrates M out.
    """
    import pymc as pm
    import pytensor.tensor as pt

    from varcomp.models.transforms import OutcomeAffine

    model, priors = _start(data, priors)
    with model:
        mu, chol_V, chol_Sigma = priors.create()
        means = pm.CustomDist("group_mean", mu, chol_V, logp=_mvnormal_chol_logp(data.p),
                              random=_mvnormal_chol_random, signature="(p),(p,p)->(p)",
                              support_point=lambda rv, size, mu, chol: pt.zeros_like(rv) + mu,
                              dims=("group", "outcome"),
                              default_transform=OutcomeAffine(priors.center, priors.scale,
                                                              event_ndim=1))
        pm.Deterministic("group_effect", means - mu[None, :], dims=("group", "outcome"))
        _latent_likelihood(data, means, chol_Sigma)
    return model


def build_noncentred(data: ClusteredData, *, priors: MvPriors | None = None):
    r"""Non-centred form: ``group_effect = group_effect_offset @ chol_V^T``, offset ~ N(0, I).

    The same model as :func:`build_centred` in other coordinates.
    """
    import pymc as pm

    model, priors = _start(data, priors)
    with model:
        mu, chol_V, chol_Sigma = priors.create()
        offset = pm.Normal("group_effect_offset", 0.0, 1.0, dims=("group", "outcome"))
        effect = pm.Deterministic("group_effect", offset @ chol_V.T, dims=("group", "outcome"))
        _latent_likelihood(data, mu[None, :] + effect, chol_Sigma)
    return model


MARGINAL_MAX_DIM = 400
"""Largest stacked cluster vector :func:`build_marginal` accepts (observed components)."""


def build_marginal(data: ClusteredData, *, priors: MvPriors | None = None):
    r"""Marginal form: the literal MvNormal of each cluster's stacked observed vector.

    .. math::
        \mathrm{vec}(X_l)[O_l] \sim \mathrm{MvNormal}\big((\mathbf 1 \otimes \mu)[O_l],\
        (I_{n_l} \otimes \Sigma + \mathbf 1 \mathbf 1^\top \otimes V)[O_l, O_l]\big)

    where O_l are the cluster's observed components: the missing ones are integrated out by
    restricting the covariance. Clusters with the same number of rows of each missingness
    pattern share one ``pm.MvNormal`` (observed ``y_block{i}``, shape (clusters, components)).
    PyMC factorises each block's covariance, O(k^3) in its k stacked components: this is a
    small-data reference. Limits, measured (pytensor 2.38 numba, nutpie 0.16, shared 2-core
    machine): clusters of more than ``MARGINAL_MAX_DIM`` components are refused; compilation
    takes 16 s for one block (20 clusters x 10 complete rows) and 31-77 s for 7 blocks (100-300
    rows with 10% missing outcomes); and a ``pm.MvNormal`` node can cost milliseconds per
    gradient in numba even when tiny (31 ms measured for a 5 x 2 block given ``chol``: it
    re-factorises chol chol^T and its gradient goes through AllocDiag), so 1,000 iterations
    took 1.3 s with one block but ~90 s with seven. gcsemv (73 schools, 68 distinct blocks, up
    to 187 components) builds and evaluates its log density exactly (the tests do), but is not
    for sampling: use ``sufficient``.
    Same posterior as :func:`build_sufficient`.
    """
    import pymc as pm

    model, priors = _start(data, priors)
    blocks = list(marginal_blocks(data))
    biggest = max(b[1].size for b in blocks)
    if biggest > MARGINAL_MAX_DIM:
        raise DataError(f"the marginal form stacks a cluster of {biggest} observed components, "
                         f"more than its limit {MARGINAL_MAX_DIM}: use the 'sufficient' form")
    with model:
        mu, chol_V, chol_Sigma = priors.create()
        V = chol_V @ chol_V.T
        Sigma = chol_Sigma @ chol_Sigma.T
        for i, (rows, comps, values) in enumerate(blocks):
            same_row = (rows[:, None] == rows[None, :]).astype(np.float64)
            cov = (V[comps[:, None], comps[None, :]]
                   + same_row * Sigma[comps[:, None], comps[None, :]])
            pm.MvNormal(f"y_block{i}", mu=mu[comps], cov=cov,
                        observed=pm.Data(f"y_block{i}_obs", values))
    return model


def _marginal_values(data: ClusteredData) -> dict[str, np.ndarray]:
    return {f"y_block{i}_obs": values for i, (_, _, values) in enumerate(marginal_blocks(data))}


def build_sufficient(data: ClusteredData, *, priors: MvPriors | None = None,
                     complete: str = "auto"):
    r"""Closed-form marginal from cluster means and pooled scatter matrices, by row pattern.

    ``pm.Potential("loglik", ...)`` adds :func:`sufficient_loglik`, normalising constants
    included, so the model's log density equals the MvNormal form's exactly. For complete data

    .. math::
        \log p = \sum_l \Big[-\tfrac{n_l p}{2}\log 2\pi - \tfrac{n_l-1}{2}\log|\Sigma|
                 - \tfrac12\log|\Sigma + n_l V|
                 - \tfrac{n_l}{2}(\bar x_l - \mu)^\top(\Sigma + n_l V)^{-1}(\bar x_l - \mu)\Big]
                 - \tfrac12\mathrm{tr}(\Sigma^{-1} W).

    Rows with missing outcomes are handled exactly with per-pattern statistics (module
    docstring). ``complete`` selects the algebra for complete-only clusters (see
    :func:`sufficient_loglik`). The per-pattern cluster means and pooled scatters are ``pm.Data``
    (``pattern_mean``, ``pattern_scatter``): one compiled model serves every data set of the
    same design (clusters, sizes, rows missing the same outcomes). Same posterior as
    :func:`build_centred`.
    """
    import pymc as pm

    model, priors = _start(data, priors)
    st = pattern_stats(data)
    with model:
        stats = PatternStats(st.patterns, st.row_pattern, st.n, pm.Data("pattern_mean", st.mean),
                             pm.Data("pattern_scatter", st.scatter))
        mu, chol_V, chol_Sigma = priors.create()
        pm.Potential("loglik", sufficient_loglik(stats, mu, chol_V, chol_Sigma,
                                                 complete=complete))
    # distinct generalised eigenvalues at the (unjittered) initial point: eigh's gradient is
    # singular where they coincide, and V_std = Sigma_std = I there by default
    packed = np.zeros(data.p * (data.p + 1) // 2)
    rows, cols = np.tril_indices(data.p)
    packed[rows == cols] = 0.5 * (1.0 + np.arange(data.p) / data.p)
    model.set_initval(model["chol_V_std"], packed)
    return model



def _sufficient_values(data: ClusteredData) -> dict[str, np.ndarray]:
    st = pattern_stats(data)
    return {"pattern_mean": st.mean, "pattern_scatter": st.scatter}


def _compiled_sufficient(data: ClusteredData, priors: MvPriors | None):
    from varcomp.models.compiled import multivariate

    return multivariate.compile_sufficient_mv(data, priors)


MARGINAL_MAX_BLOCKS = 8
"""``--model all`` leaves out the literal MvNormal when it would need more blocks (distinct
cluster layouts, each its own MvNormal graph) than this: gcsemv has 68, and compiling and
sampling them takes far longer than the other three forms together. Asked for by name, it runs."""


def _skip_marginal(data: ClusteredData) -> str | None:
    blocks = marginal_block_count(data)
    if blocks <= MARGINAL_MAX_BLOCKS:
        return None
    return (f"the literal MvNormal would need {blocks} blocks (distinct cluster layouts; limit "
            f"{MARGINAL_MAX_BLOCKS} for --model all): ask for --model marginal to run it anyway")


def _parse_priors(data: ClusteredData, specs: list[str]) -> MvPriors:
    if specs:
        raise DataError("--prior applies to univariate fits only (the multivariate priors are "
                         "LKJ-Cholesky with data-scaled HalfNormal sds; see docs/guide/models.md)")
    return MvPriors.default(data)


MV_VARS = ("mu", "V", "Sigma", "icc", "corr_between", "corr_within")

FAMILY = Family(
    name="multivariate",
    title="multivariate one-way random-effects model",
    forms={
        "centred": Form("centred", "group_mean ~ N_p(mu, V), rows ~ N_p(group_mean, Sigma)",
                        build_centred, _latent_values, latent=True),
        "noncentred": Form("noncentred", "group_effect = group_effect_offset @ chol_V', offset ~ "
                           "N(0, I)", build_noncentred, _latent_values, latent=True),
        "marginal": Form("marginal", "literal MvNormal of each cluster's stacked observed vector",
                         build_marginal, _marginal_values, skip=_skip_marginal),
        "sufficient": Form("sufficient", "closed form from per-pattern cluster means and "
                           "scatters", build_sufficient, _sufficient_values,
                           compiled=_compiled_sufficient),
    },
    default_form="sufficient",
    default_priors=MvPriors.default,
    parse_priors=_parse_priors,
    summary_vars=("mu", "tau", "sigma", "icc", "corr_between", "corr_within"),
    compare_vars=MV_VARS,
    add_effects=lambda idata, data, seed: add_group_effects_mv(idata, data, seed=seed),
    outcomes=lambda data: list(data.responses),
    matrices=("V", "Sigma", "corr_between", "corr_within"),
    cluster_loglik=mv_loglik,
    log_prior=mv_prior,
    new_cluster=mv_new_cluster,
    oracle="varcomp.models.checks.kit_multivariate:KIT",
    anova=True,
)
