"""Simulation-based calibration (Talts et al. 2018): one driver for every model.

:func:`sbc` runs the loop; the model under test (an :class:`SBCModel`, see
:mod:`models.checks.sbc_models`) supplies what differs between families: its design and compiled
posterior (built once, data swapped per simulation), its prior draws, its simulator and its test
quantities (the parameters, derived summaries and the log-likelihood of the simulated data, a
data-dependent quantity that catches what parameter ranks miss: Modrak et al. 2023). Ranks are
tested with the ECDF test of Sailynoja, Buerkner & Vehtari (2022).

One alpha convention: ``alpha`` is family-wise. Each of the Q quantities is tested at
``alpha / Q`` (Bonferroni), so an exact model fails ``passed`` with probability at most
``alpha`` (5% by default).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from varcomp.models.checks.base import CheckResult

__all__ = ["SBCModel", "SBCResult", "plot_sbc", "rank_table", "rank_uniformity", "sbc",
           "sbc_fit"]


class SBCModel(Protocol):
    """What :func:`sbc` needs from the model under test.

    ``name`` labels the result; ``var_names`` are the posterior variables whose draws
    :meth:`quantities` reads (and whose bulk ESS is reported); ``details`` describes the design.
    """

    name: str
    var_names: tuple[str, ...]
    details: dict

    def prepare(self, rng: np.random.Generator) -> Callable[[Any], Any]:
        """Build the design once; return ``posterior(data)``: the compiled model for ``data``."""

    def draw(self, rng: np.random.Generator) -> dict:
        """One draw of the parameters from the prior (the truth of a simulation)."""

    def simulate(self, theta: dict, rng: np.random.Generator) -> Any:
        """A data set of the design, simulated at ``theta``."""

    def quantities(self, values: dict[str, np.ndarray], data) -> dict[str, np.ndarray]:
        """Test quantities of stacked parameter values (leading axis: draws) given ``data``."""


@dataclass
class SBCResult(CheckResult):
    """SBC outcome: ``ranks`` (one row per simulation) in 0..``n_ranks``, p-values per quantity.

    ``table`` has one row per quantity: the ECDF test's p-value (the verdict), the chi-square
    p-value (reported) and pass/fail at ``alpha / Q``; ``sims`` has per-simulation diagnostics.
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


def sbc_fit(compiled, rng, names, *, draws, tune, chains, cores, target_accept):
    """One SBC fit of a compiled model.

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
    model: SBCModel | str,
    *,
    n_sims: int,
    draws: int = 400,
    tune: int = 400,
    chains: int = 2,
    thin: int = 4,
    alpha: float = 0.05,
    seed: int = 0,
    target_accept: float = 0.9,
    cores: int | None = None,
) -> SBCResult:
    r"""Simulation-based calibration (Talts et al. 2018) of ``model``.

    ``model`` is an :class:`SBCModel` (:mod:`models.checks.sbc_models`: ``OnewaySBC``,
    ``MultivariateSBC``, ``MixedSBC``) or a family name (``"oneway"``, ``"multivariate"``: its
    ``sufficient`` form at the default design). Its design is built and its posterior compiled
    once (``model.prepare``); each simulation draws the truth from the prior, simulates data,
    fits them with nutpie, keeps every ``thin``-th draw (M = chains * draws / thin) and ranks
    the truth among them for each of the model's Q quantities. If the fit is exact each rank is
    uniform on {0..M}; :func:`rank_uniformity` tests each quantity at ``alpha / Q``
    (Bonferroni: family-wise false alarms at most ``alpha``).

    Returns
    -------
    SBCResult
        ``passed`` iff every quantity's ECDF p-value >= alpha / Q.
    """
    from threadpoolctl import threadpool_limits

    from varcomp.models.sampling import quiet

    if isinstance(model, str):
        from varcomp.models.checks.sbc_models import default_model

        model = default_model(model)
    if draws % thin:
        raise ValueError(f"draws ({draws}) must be a multiple of thin ({thin})")
    if n_sims < 1:
        raise ValueError("n_sims must be a positive integer")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    n_ranks = chains * draws // thin
    ranks, sims = [], []
    # one BLAS thread: OpenBLAS threads spinning on shared cores slow small LAPACK calls ~100x
    with quiet(), threadpool_limits(limits=1, user_api="blas"):
        posterior = model.prepare(rng)
        for _ in range(n_sims):
            theta = model.draw(rng)
            data = model.simulate(theta, rng)
            post, fit_stats = sbc_fit(posterior(data), rng, model.var_names, draws=draws,
                                       tune=tune, chains=chains, cores=cores,
                                       target_accept=target_accept)
            kept = {v: post[v].values[:, ::thin].reshape(n_ranks, *post[v].shape[2:])
                    for v in model.var_names}
            got = model.quantities(kept, data)
            truth = {q: float(np.asarray(v).reshape(-1)[0]) for q, v in model.quantities(
                {k: np.asarray(v, dtype=np.float64)[None] for k, v in theta.items()},
                data).items()}
            ranks.append({q: int(np.sum(got[q] < truth[q])) for q in truth})
            sims.append({**{f"true_{q}": v for q, v in truth.items()}, **fit_stats})
    ranks_df = pd.DataFrame(ranks)
    sims_df = pd.DataFrame(sims)
    quantities = list(ranks_df.columns)
    alpha_q = alpha / len(quantities)
    table, pvals, band = rank_table(ranks_df, n_ranks, alpha_q, seed)
    failing = list(table.quantity[~table.passed])
    div = int(sims_df.divergences.sum())
    med_ess = float(sims_df.min_ess_bulk.median())
    text = (f"SBC {model.name}: {n_sims} simulations, {model.details.get('design', '')}"
            f"ranks 0..{n_ranks} ({chains}x{draws} draws thinned by {thin}); ECDF p-values "
            + ", ".join(f"{q} {pvals[q]:.3f}" for q in quantities)
            + (f"; FAILS uniformity for {', '.join(failing)}" if failing else "; uniform")
            + f" at alpha {alpha:g} family-wise ({alpha_q:.2g} per quantity)"
            + f"; {div} divergences in total, median min ESS_bulk {med_ess:.0f}")
    if med_ess < n_ranks:
        text += f" (below the {n_ranks} kept draws: increase thin)"
    return SBCResult("sbc_" + re.sub(r"\W+", "_", model.name).strip("_"), not failing, table, text,
                     {"n_sims": n_sims, "alpha": alpha, "alpha_per_quantity": alpha_q,
                      "draws": draws, "tune": tune, "chains": chains, "thin": thin,
                      "target_accept": target_accept, "divergences": div, **model.details},
                     ranks=ranks_df, n_ranks=n_ranks, pvalues=pvals, sims=sims_df, band=band)


def plot_sbc(result: SBCResult, path: str | Path | None = None):
    """Plot each quantity's rank ECDF minus the uniform CDF with the simultaneous band.

    Uses :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state). Saves a PNG
    to ``path`` if given; returns the figure.
    """
    from matplotlib.figure import Figure

    qs = list(result.band)
    alpha = result.details["alpha_per_quantity"]  # the family-wise alpha split over quantities
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


