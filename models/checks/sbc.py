"""Simulation-based calibration (Talts et al. 2018) of the registry's own builders.

Each family's form is compiled once (its ``pm.Data`` containers swapped for every simulated data
set of the same design); the log-likelihood is an extra test quantity (Modrak et al. 2023); ranks
are tested with the ECDF test of Sailynoja, Buerkner & Vehtari (2022).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from varcomp.models import mvstats as mv
from varcomp.models.checks.base import CheckResult
from varcomp.models.checks.oracles import mv_prior_draw
from varcomp.models.density import marginal_logp_terms
from varcomp.models.priors import MvPriors, NormalPrior, Priors, ScalePrior
from varcomp.models.simulate import Simulated, cluster_sizes, simulate_univariate
from varcomp.models.simulate_mv import simulate_multivariate

__all__ = ["SBC_MV_PRIORS", "SBC_PRIORS", "SBCResult", "plot_sbc", "rank_table",
           "rank_uniformity", "sbc", "sbc_mv"]


SBC_PRIORS = Priors(mu=NormalPrior(0.0, 1.0), tau=ScalePrior("halfnormal", 1.0),
                    sigma=ScalePrior("halfnormal", 1.0), center=0.0, scale=1.0)


SBC_QUANTITIES = ("mu", "tau", "sigma", "icc", "loglik")


@dataclass
class SBCResult(CheckResult):
    """SBC outcome: ``ranks`` (one row per simulation) in 0..``n_ranks``, p-values per quantity.

    ``table`` has one row per quantity: the ECDF test's p-value (the verdict), the chi-square
    p-value (reported) and pass/fail at ``alpha``; ``sims`` has per-simulation diagnostics.
    """

    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_ranks: int = 0
    pvalues: dict = field(default_factory=dict)
    sims: pd.DataFrame = field(default_factory=pd.DataFrame)
    band: dict = field(default_factory=dict)


def _thresholds(n_ranks: int, n: int) -> np.ndarray:
    """ECDF evaluation points c (ranks < c), at most ``n`` of them, strictly inside 1..M."""
    k = min(n_ranks + 1, n)
    c = np.unique(np.round(np.linspace(0, n_ranks + 1, k + 1)[1:-1]).astype(int))
    return c[(c > 0) & (c <= n_ranks)]


def _ecdf_stat(counts: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """Smallest two-sided pointwise binomial tail probability of ECDF counts (last axis)."""
    lo = stats.binom.cdf(counts, n, p)
    hi = stats.binom.sf(counts - 1, n, p)
    return np.minimum(1.0, 2.0 * np.minimum(lo, hi)).min(axis=-1)


def rank_uniformity(
    ranks: np.ndarray,
    n_ranks: int,
    *,
    alpha: float = 0.01,
    n_null: int = 4000,
    seed: int = 0,
) -> dict:
    """Uniformity of SBC ranks on {0..M}: ECDF test with a simultaneous band, and chi-square.

    ECDF test (Sailynoja, Buerkner & Vehtari 2022): at thresholds c, N F(c) = #{rank < c} is
    Binomial(N, c / (M + 1)) under uniformity; the statistic is the smallest two-sided
    pointwise tail probability over c, its null distribution is simulated from exact discrete
    uniform ranks (``n_null`` replicates), and ``gamma`` (its alpha quantile) gives the
    simultaneous 1 - alpha band. Chi-square: ranks in <= 10 bins with their exact
    probabilities. Returns p_ecdf, p_chi2, gamma, thresholds and the band.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    n = ranks.size
    c = _thresholds(n_ranks, n)
    p = c / (n_ranks + 1.0)
    counts = np.searchsorted(np.sort(ranks), c, side="left")
    t_obs = float(_ecdf_stat(counts, n, p))
    rng = np.random.default_rng(seed)
    t_null = np.empty(n_null)
    for i in range(0, n_null, 500):
        b = min(500, n_null - i)
        r = rng.integers(0, n_ranks + 1, size=(b, n))
        hist = np.bincount((r + (n_ranks + 1) * np.arange(b)[:, None]).ravel(),
                           minlength=b * (n_ranks + 1)).reshape(b, n_ranks + 1)
        cum = np.cumsum(hist, axis=1)
        t_null[i:i + b] = _ecdf_stat(cum[:, c - 1], n, p)
    p_ecdf = float((1 + np.sum(t_null <= t_obs)) / (n_null + 1))
    gamma = float(np.quantile(t_null, alpha))
    band_lo = stats.binom.ppf(gamma / 2, n, p) / n - p
    band_hi = stats.binom.isf(gamma / 2, n, p) / n - p
    n_bins = int(min(10, n_ranks + 1, max(2, n // 5)))
    edges = np.linspace(0, n_ranks + 1, n_bins + 1)
    bins = np.minimum(np.searchsorted(edges, ranks, side="right") - 1, n_bins - 1)
    per_bin = np.diff(np.ceil(edges))  # integers per bin
    obs = np.bincount(bins, minlength=n_bins)
    expected = n * per_bin / (n_ranks + 1)
    p_chi2 = float(stats.chisquare(obs, expected).pvalue)
    return {"p_ecdf": p_ecdf, "p_chi2": p_chi2, "gamma": gamma, "thresholds": c,
            "ecdf_diff": counts / n - p, "band_lo": band_lo, "band_hi": band_hi, "p": p}


def rank_table(ranks: pd.DataFrame, n_ranks: int, alpha: float, seed: int = 0):
    """:func:`rank_uniformity` of each column of ``ranks`` at level ``alpha``.

    Returns ``(table, pvalues, band)``: one row per quantity (``p_ecdf``, ``p_chi2``,
    ``passed`` iff p_ecdf >= alpha), the ECDF p-values and each quantity's full result.
    """
    rows, pvals, band = [], {}, {}
    for q in ranks.columns:
        u = rank_uniformity(ranks[q].to_numpy(), n_ranks, alpha=alpha, seed=seed)
        pvals[q] = u["p_ecdf"]
        band[q] = u
        rows.append({"quantity": q, "p_ecdf": u["p_ecdf"], "p_chi2": u["p_chi2"],
                     "passed": u["p_ecdf"] >= alpha})
    return pd.DataFrame(rows), pvals, band


def _loglik_draws(n, xbar, ss, mu, tau, sigma) -> np.ndarray:
    """Log p(X | mu, tau, sigma) for vectors of draws (the closed form, data-dependent)."""
    return marginal_logp_terms(n, xbar, ss, np.asarray(mu)[..., None], np.asarray(tau)[..., None],
                               np.asarray(sigma)[..., None]).sum(-1)


def _form(family: str, name: str):
    """The family's form ``name``, or its deliberately broken form (by its own name)."""
    from varcomp.models.checks.broken import BROKEN
    from varcomp.models.forms import family_named

    if name == BROKEN[family].name:
        return BROKEN[family]
    return family_named(family).form(name)


def sbc_fit(compiled, rng, names, *, draws, tune, chains, cores, target_accept):
    """One SBC fit of a data-swapped compiled model.

    The posterior, total divergences and the smallest bulk ESS over ``names`` (every element);
    the sampler's seed is ``rng``'s next draw.
    """
    import arviz as az

    from varcomp.models.sampling import sample_compiled

    idata = sample_compiled(compiled, draws=draws, tune=tune, chains=chains,
                            cores=cores or min(chains, 2), seed=int(rng.integers(2**31)),
                            target_accept=target_accept)
    post = idata.posterior
    ess = az.ess(post[list(names)], method="bulk")
    return post, {"divergences": int(idata.sample_stats["diverging"].values.sum()),
                  "min_ess_bulk": float(min(np.nanmin(ess[v].values) for v in names))}


def sbc(
    parameterisation: str,
    n_sims: int,
    *,
    L: int = 8,
    n: int | Sequence[int] = 5,
    priors: Priors = SBC_PRIORS,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
    alpha: float = 0.01,
    cores: int | None = None,
    backend: str = "numba",
) -> SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018) of one form.

    For each simulation: (mu, tau, sigma) ~ ``priors`` (fixed, not data-scaled), data from
    :func:`models.simulate.simulate_univariate` with ``L`` clusters of sizes ``n``, a nutpie fit
    of the one-way family's form ``parameterisation`` (its own builder, compiled once, data
    swapped: :class:`models.sampling.DataSwapper`; ``"broken_tau_not_squared"`` is the
    deliberately broken form), every ``thin``-th draw kept
    (M = chains * draws / thin draws), and the rank of the true value among them for mu, tau,
    sigma, icc and the log-likelihood log p(X | mu, tau, sigma) of the simulated data (Modrak
    et al. 2023: a data-dependent quantity that catches what parameter ranks miss). If the
    fit is exact, each rank is uniform on {0..M}; :func:`rank_uniformity` tests it at
    ``alpha`` per quantity (family-wise about 5% for the five quantities).

    Returns
    -------
    SBCResult
        ``passed`` iff every quantity's ECDF p-value >= ``alpha``.
    """
    from threadpoolctl import threadpool_limits

    from varcomp.models.sampling import DataSwapper, quiet

    if draws % thin:
        raise ValueError(f"draws ({draws}) must be a multiple of thin ({thin})")
    if n_sims < 1:
        raise ValueError("n_sims must be a positive integer")
    sizes = cluster_sizes(L, n)
    rng = np.random.default_rng(seed)
    template = simulate_univariate(L, sizes, mu=0.0, tau=1.0, sigma=1.0, rng=rng).data()
    swap = DataSwapper(_form("oneway", parameterisation), template, priors, backend)
    n_ranks = chains * draws // thin
    ranks, sims = [], []
    # one BLAS thread: OpenBLAS threads spinning on shared cores slow small LAPACK calls ~100x
    with quiet(), threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_sims):
            theta = priors.draw(rng)
            data = simulate_univariate(L, sizes, rng=rng, **theta).data()
            nn, xbar, ss = data.stats.column(0)
            post, fit_stats = sbc_fit(swap(data), rng, ("mu", "tau", "sigma"), draws=draws,
                                       tune=tune, chains=chains, cores=cores,
                                       target_accept=target_accept)
            kept = {v: post[v].values[:, ::thin].ravel() for v in ("mu", "tau", "sigma", "icc")}
            truth = dict(theta, icc=theta["tau"]**2 / (theta["tau"]**2 + theta["sigma"]**2))
            kept["loglik"] = _loglik_draws(nn, xbar, ss, kept["mu"], kept["tau"], kept["sigma"])
            truth["loglik"] = float(_loglik_draws(nn, xbar, ss, theta["mu"], theta["tau"],
                                                  theta["sigma"]))
            ranks.append({q: int(np.sum(kept[q] < truth[q])) for q in SBC_QUANTITIES})
            sims.append({**{f"true_{k}": v for k, v in truth.items()}, **fit_stats})
    ranks_df = pd.DataFrame(ranks, columns=list(SBC_QUANTITIES))
    sims_df = pd.DataFrame(sims)
    table, pvals, band = rank_table(ranks_df, n_ranks, alpha, seed)
    passed = bool(table.passed.all())
    failing = list(table.quantity[~table.passed])
    div = int(sims_df.divergences.sum())
    text = (f"SBC {parameterisation}: {n_sims} simulations, L={L}, ranks 0..{n_ranks} "
            f"({chains}x{draws} draws thinned by {thin}); ECDF p-values "
            + ", ".join(f"{q} {pvals[q]:.3f}" for q in SBC_QUANTITIES)
            + (f"; FAILS uniformity for {', '.join(failing)} at alpha {alpha:g}" if failing
               else f"; uniform at alpha {alpha:g} per quantity")
            + f"; {div} divergences in total, median ESS_bulk "
              f"{float(sims_df.min_ess_bulk.median()):.0f}")
    if float(sims_df.min_ess_bulk.median()) < n_ranks:
        text += f" (below the {n_ranks} kept draws: increase thin)"
    return SBCResult(f"sbc_{parameterisation}", passed, table, text,
                     {"n_sims": n_sims, "L": L, "sizes": sizes.tolist(), "alpha": alpha,
                      "draws": draws, "tune": tune, "chains": chains, "thin": thin,
                      "target_accept": target_accept, "divergences": div},
                     ranks=ranks_df, n_ranks=n_ranks, pvalues=pvals, sims=sims_df, band=band)


def plot_sbc(result: SBCResult, path: str | Path | None = None):
    """Plot each quantity's rank ECDF minus the uniform CDF with the simultaneous band.

    Uses :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state). Saves a PNG
    to ``path`` if given; returns the figure.
    """
    from matplotlib.figure import Figure

    qs = list(result.band)
    # the per-quantity level (the multivariate SBC splits its family-wise alpha)
    alpha = result.details.get("alpha_per_quantity", result.details.get("alpha", 0.01))
    fig = Figure(figsize=(3.0 * len(qs), 2.8), layout="constrained")
    axes = fig.subplots(1, len(qs), sharey=True, squeeze=False)[0]
    for ax, q in zip(axes, qs, strict=True):
        b = result.band[q]
        ax.fill_between(b["p"], b["band_lo"], b["band_hi"], step="mid", color="0.85",
                        label=f"{100 * (1 - alpha):.3g}% band")
        ax.step(b["p"], b["ecdf_diff"], where="mid", color="C3" if b["p_ecdf"] < alpha else "C0")
        ax.axhline(0.0, color="0.4", lw=0.6)
        ax.set_title(f"{q} (p={b['p_ecdf']:.3f})", fontsize=9)
        ax.set_xlabel("fractional rank")
    axes[0].set_ylabel("ECDF - uniform")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(result.text.split(";")[0], fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


SBC_MV_PRIORS = MvPriors(mu_loc=(0.0, 0.0), mu_scale=(1.0, 1.0), tau_scale=(1.0, 1.0),
                         sigma_scale=(1.0, 1.0), eta_between=2.0, eta_within=2.0,
                         center=(0.0, 0.0), scale=(1.0, 1.0))
"""Fixed (not data-scaled) bivariate priors for SBC: the defaults' families on unit scales."""


def _sbc_quantities(theta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{label: (...) array}: mu[k], V[k,k], Sigma[k,k], icc[k], corr_between/within[i,j]."""
    mu, V, S = (np.asarray(theta[k]) for k in ("mu", "V", "Sigma"))
    p = mu.shape[-1]
    out = {}
    for k in range(p):
        out[f"mu[{k}]"] = mu[..., k]
    for k in range(p):
        out[f"V[{k},{k}]"] = V[..., k, k]
    for k in range(p):
        out[f"Sigma[{k},{k}]"] = S[..., k, k]
    for k in range(p):
        out[f"icc[{k}]"] = V[..., k, k] / (V[..., k, k] + S[..., k, k])
    for name, M in (("corr_between", V), ("corr_within", S)):
        for i in range(p):
            for j in range(i + 1, p):
                out[f"{name}[{i},{j}]"] = M[..., i, j] / np.sqrt(M[..., i, i] * M[..., j, j])
    return out


def _fixed_mask(frame: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the template's missing cells set missing (the same design)."""
    out = frame.copy()
    cols = [c for c in frame.columns if c != "group"]
    values = out[cols].to_numpy(dtype=np.float64, copy=True)
    values[~np.isfinite(template[cols].to_numpy(dtype=np.float64))] = np.nan
    out[cols] = values
    return out


def sbc_mv(
    n_sims: int,
    *,
    form: str = "sufficient",
    L: int = 8,
    n: int | Sequence[int] = 5,
    missing: float = 0.0,
    priors: MvPriors = SBC_MV_PRIORS,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
    alpha: float = 0.05,
    cores: int | None = None,
    backend: str = "numba",
) -> SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018) of the multivariate ``sufficient`` form.

    Each simulation draws (mu, V, Sigma) from ``priors`` (:func:`mv_prior_draw`, fixed, not
    data-scaled), simulates data of one design (``L`` clusters of sizes ``n``; with
    ``missing`` > 0 a fixed set of cells, drawn once by
    :func:`models.simulate_mv.drop_components`, is missing in every data set), fits it with
    nutpie (the multivariate family's form ``form``, compiled once, data swapped by
    :class:`models.sampling.DataSwapper`; ``"broken_V_not_scaled_by_n"`` is the deliberately
    broken form), keeps every ``thin``-th draw (M = chains * draws / thin) and ranks the truth
    among them for mu[k], the diagonal variances V[k,k] and Sigma[k,k], icc[k], corr_between,
    corr_within and the log-likelihood log p(X | mu, V, Sigma)
    (:func:`models.mvstats.loglik_draws`; Modrak et al. 2023). Each rank is
    uniform on {0..M} if the fit is exact; :func:`models.checks.rank_uniformity` tests each
    quantity at ``alpha / Q`` (Bonferroni over the Q = 11 quantities for p = 2), so the
    family-wise false-alarm rate of ``passed`` is at most ``alpha`` (5% by default).

    Returns
    -------
    SBCResult
        ``passed`` iff every quantity's ECDF p-value >= alpha / Q.
    """
    from threadpoolctl import threadpool_limits

    from varcomp.models.sampling import DataSwapper, quiet
    from varcomp.models.simulate_mv import drop_components

    if draws % thin:
        raise ValueError(f"draws ({draws}) must be a multiple of thin ({thin})")
    if n_sims < 1:
        raise ValueError("n_sims must be a positive integer")
    p = priors.p
    sizes = cluster_sizes(L, n)
    rng = np.random.default_rng(seed)
    template = simulate_multivariate(L, sizes, np.zeros(p), np.eye(p), np.eye(p), rng)
    frame0 = drop_components(template.frame, missing, rng) if missing > 0 else template.frame
    tdata = Simulated(frame0, template.effects, template.params).data()
    swap = DataSwapper(_form("multivariate", form), tdata, priors, backend)
    n_ranks = chains * draws // thin
    quantities = None
    ranks, sims = [], []
    with quiet(), threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_sims):
            theta = mv_prior_draw(priors, rng)
            sim = simulate_multivariate(L, sizes, theta["mu"], theta["V"], theta["Sigma"], rng)
            data = Simulated(_fixed_mask(sim.frame, frame0), sim.effects, sim.params).data()
            st = mv.pattern_stats(data)
            post, fit_stats = sbc_fit(swap(data), rng, ("mu", "V", "Sigma"), draws=draws,
                                       tune=tune, chains=chains, cores=cores,
                                       target_accept=target_accept)
            kept = {v: post[v].values[:, ::thin].reshape(-1, *post[v].shape[2:])
                    for v in ("mu", "V", "Sigma")}
            draws_q = _sbc_quantities(kept)
            truth_q = _sbc_quantities(theta)
            draws_q["loglik"] = mv.loglik_draws(st, kept["mu"], kept["V"], kept["Sigma"])
            truth_q["loglik"] = float(mv.loglik_draws(st, theta["mu"], theta["V"],
                                                      theta["Sigma"]))
            quantities = list(draws_q)
            ranks.append({q: int(np.sum(draws_q[q] < truth_q[q])) for q in quantities})
            sims.append({**{f"true_{k}": float(v) for k, v in truth_q.items()}, **fit_stats})
    ranks_df = pd.DataFrame(ranks, columns=quantities)
    sims_df = pd.DataFrame(sims)
    alpha_q = alpha / len(quantities)
    table, pvals, band = rank_table(ranks_df, n_ranks, alpha_q, seed)
    passed = bool(table.passed.all())
    failing = list(table.quantity[~table.passed])
    div = int(sims_df.divergences.sum())
    med_ess = float(sims_df.min_ess_bulk.median())
    text = (f"SBC multivariate {form}: {n_sims} simulations, L={L}, p={p}"
            + (f", {missing:.0%} cells missing (fixed)" if missing > 0 else "")
            + f", ranks 0..{n_ranks} ({chains}x{draws} draws thinned by {thin}); ECDF p-values "
            + ", ".join(f"{q} {pvals[q]:.3f}" for q in quantities)
            + (f"; FAILS uniformity for {', '.join(failing)}" if failing else "; uniform")
            + f" at alpha {alpha:g} family-wise ({alpha_q:.2g} per quantity)"
            + f"; {div} divergences in total, median min ESS_bulk {med_ess:.0f}")
    if med_ess < n_ranks:
        text += f" (below the {n_ranks} kept draws: increase thin)"
    return SBCResult(f"sbc_mv_{form}", passed, table, text,
                     {"n_sims": n_sims, "L": L, "p": p, "sizes": sizes.tolist(),
                      "missing": missing, "alpha": alpha, "alpha_per_quantity": alpha_q,
                      "draws": draws, "tune": tune, "chains": chains, "thin": thin,
                      "target_accept": target_accept, "divergences": div},
                     ranks=ranks_df, n_ranks=n_ranks, pvalues=pvals, sims=sims_df, band=band)
