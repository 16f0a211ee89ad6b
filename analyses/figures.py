r"""The notes' three simulations as figures: ``varcomp figures``.

(a) the histogram of X with red dots at the cluster effects M_l (L = 5, n = 1000, tau = 2,
sigma = 0.1); (b) the bivariate scatter with red dots at the M_l (L = 10, n = 100,
V = [[4, 3], [3, 4]], Sigma = D R D with D = diag(0.5, 0.6) and correlation -0.8);
(c) the pairs plot of 1000 replicates of (L = 2, n = 3, tau = 2, sigma = 1) with the sample
correlation matrix beside its theory

.. math::
    \operatorname{Corr}(X_{lj}, X_{lk}) = \tau^2 / (\sigma^2 + \tau^2) = 0.8 \ (j \ne k), \qquad
    \operatorname{Corr}(X_{l_1 j}, X_{l_2 k}) = 0 \ (l_1 \ne l_2),

and the Monte Carlo standard error of a sample correlation from R replicates,
(1 - rho^2) / sqrt(R). The simulations are :func:`models.simulate.simulate_univariate` and
:func:`models.simulate_mv.simulate_multivariate`. Each figure starts a fresh ``numpy``
Generator from ``seed``, as the notes call ``set.seed(23984)`` before each plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from varcomp.models.simulate import simulate_univariate
from varcomp.models.simulate_mv import sigma_from_sd_corr, simulate_multivariate

__all__ = [
    "BIVARIATE",
    "HISTOGRAM",
    "PAIRS",
    "make_figures",
    "pairs_correlation",
]

HISTOGRAM = {"L": 5, "n": 1000, "tau": 2.0, "sigma": 0.1}
BIVARIATE = {
    "L": 10,
    "n": 100,
    # ERRATA item 1: the text's [[2, 3], [3, 4]] is not positive definite; the R code's is.
    "V": [[4.0, 3.0], [3.0, 4.0]],
    "sd": [0.5, 0.6],
    "corr": -0.8,
}
PAIRS = {"L": 2, "n": 3, "tau": 2.0, "sigma": 1.0, "replicates": 1000}
DPI = 110


def _histogram(path: Path, seed: int) -> Path:
    """Draw (a): the histogram of X, bins of 0.1 on [-4, 4], red dots at the M_l."""
    sim = simulate_univariate(HISTOGRAM["L"], HISTOGRAM["n"], tau=HISTOGRAM["tau"],
                              sigma=HISTOGRAM["sigma"], rng=np.random.default_rng(seed))
    x = sim.frame["y"].to_numpy()
    outside = int(((x < -4) | (x > 4)).sum())
    off = sim.effects[np.abs(sim.effects) > 4]
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.hist(x, bins=np.linspace(-4.0, 4.0, 81), color="0.85", edgecolor="0.3", linewidth=0.5)
    shown = sim.effects[np.abs(sim.effects) <= 4]
    ax.plot(shown, np.zeros_like(shown), "o", color="red", ms=5, clip_on=False,
            zorder=3, label="cluster effects $m_l$")
    ax.set_xlim(-4, 4)
    ax.set_xlabel("$X_{lj}$")
    ax.set_ylabel("count")
    note = ""
    if outside:
        note = f"\n{outside} values outside [-4, 4] not shown"
        if off.size:
            note += f" (cluster effect m = {', '.join(f'{m:.2f}' for m in off)})"
    ax.set_title(f"L = {HISTOGRAM['L']} clusters of n = {HISTOGRAM['n']}, tau = "
                 f"{HISTOGRAM['tau']:g}, sigma = {HISTOGRAM['sigma']:g}{note}", fontsize=9.5)
    ax.legend(loc="upper right", frameon=False)
    fig.savefig(path, dpi=DPI)
    return path


def _bivariate(path: Path, seed: int) -> Path:
    """Draw (b): the bivariate scatter of X_lj with red dots at M_l, axes [-6, 6]."""
    R = [[1.0, BIVARIATE["corr"]], [BIVARIATE["corr"], 1.0]]
    Sigma = sigma_from_sd_corr(BIVARIATE["sd"], R)  # D R D = [[0.25, -0.24], [-0.24, 0.36]]
    sim = simulate_multivariate(BIVARIATE["L"], BIVARIATE["n"], [0.0, 0.0], BIVARIATE["V"], Sigma,
                                np.random.default_rng(seed))
    M = sim.effects
    X = sim.frame[[c for c in sim.frame.columns if c != "group"]].to_numpy()
    fig = Figure(figsize=(5.2, 5.2), layout="constrained")
    ax = fig.subplots()
    ax.scatter(X[:, 0], X[:, 1], s=4, color="black", alpha=0.6, linewidths=0)
    ax.scatter(M[:, 0], M[:, 1], s=18, color="red", zorder=3, label="cluster effects $m_l$")
    ax.set_xlim(-6, 6)
    ax.set_ylim(-6, 6)
    ax.set_aspect("equal")
    ax.set_xlabel("$X_{lj1}$")
    ax.set_ylabel("$X_{lj2}$")
    ax.set_title("L = 10, n = 100, V = [[4, 3], [3, 4]],\n"
                 "Sigma = D R D = [[0.25, -0.24], [-0.24, 0.36]]", fontsize=10)
    ax.legend(loc="upper left", frameon=False)
    fig.savefig(path, dpi=DPI)
    return path


def pairs_correlation(seed: int = 23984) -> tuple[np.ndarray, dict]:
    """Replicates of (L = 2, n = 3, tau = 2, sigma = 1) and their correlation against theory.

    Returns ``(X, result)``: X of shape (R, 6), columns X11, X12, X13, X21, X22, X23; result
    holds the sample correlation matrix, its theory, the Monte Carlo standard error
    (1 - rho^2) / sqrt(R) of each entry and the z-scores (sample - theory) / se.
    """
    L, n, R = PAIRS["L"], PAIRS["n"], PAIRS["replicates"]
    tau, sigma = PAIRS["tau"], PAIRS["sigma"]
    rng = np.random.default_rng(seed)
    X = np.stack([simulate_univariate(L, n, tau=tau, sigma=sigma, rng=rng).frame["y"].to_numpy()
                  for _ in range(R)])
    corr = np.corrcoef(X, rowvar=False)
    codes = np.repeat(np.arange(L), n)
    within = tau**2 / (tau**2 + sigma**2)  # tau^2 / (sigma^2 + tau^2) = 0.8
    theory = np.where(codes[:, None] == codes[None, :], within, 0.0)
    np.fill_diagonal(theory, 1.0)
    se = (1.0 - theory**2) / np.sqrt(R)
    off = ~np.eye(corr.shape[0], dtype=bool)
    z = np.zeros_like(corr)
    z[off] = (corr[off] - theory[off]) / se[off]
    labels = [f"X{c + 1}{j + 1}" for c in range(L) for j in range(n)]
    result = {
        "settings": dict(PAIRS, seed=seed),
        "labels": labels,
        "correlation": np.round(corr, 6).tolist(),
        "theory": theory.tolist(),
        "mc_se": se.tolist(),
        "z": np.round(z, 3).tolist(),
        "max_abs_z": float(np.abs(z[off]).max()),
        "note": "mc_se = (1 - rho^2) / sqrt(R); |z| <= 4 for all 15 pairs fails with "
                "probability about 1e-3 when the theory holds (Bonferroni over 15 normal "
                "z-scores); the 9 between-cluster entries share the draws of (M_1, M_2), so "
                "their errors move together",
    }
    return X, result


def _pairs(path: Path, X: np.ndarray, result: dict) -> Path:
    """Draw (c): pairs plot, scatter below the diagonal, sample vs theory correlation above."""
    labels = [f"$X_{{{s[1:]}}}$" for s in result["labels"]]
    corr, theory, se = (np.asarray(result[k]) for k in ("correlation", "theory", "mc_se"))
    k = X.shape[1]
    fig = Figure(figsize=(8.4, 8.4), layout="constrained")
    axes = fig.subplots(k, k)
    lim = np.quantile(np.abs(X), 0.999) * 1.05
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == j:
                ax.text(0.5, 0.5, labels[i], ha="center", va="center", fontsize=16,
                        transform=ax.transAxes)
            elif i > j:
                ax.scatter(X[:, j], X[:, i], s=2, color="black", alpha=0.5, linewidths=0)
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
            else:
                z = (corr[i, j] - theory[i, j]) / se[i, j]
                ax.text(0.5, 0.5, f"r = {corr[i, j]:.3f}\ntheory {theory[i, j]:.1f}\n"
                        f"± {se[i, j]:.3f} (MC se)\nz = {z:+.1f}", ha="center", va="center",
                        fontsize=8.5, transform=ax.transAxes,
                        color="black" if abs(z) <= 4 else "red")
                ax.set_facecolor("#f3f6fb" if theory[i, j] > 0 else "white")
    fig.suptitle(f"{PAIRS['replicates']} replicates of L = {PAIRS['L']} clusters of n = "
                 f"{PAIRS['n']} (tau = {PAIRS['tau']:g}, sigma = {PAIRS['sigma']:g})\n"
                 f"within-cluster correlation tau²/(sigma²+tau²) = 0.8, between 0", fontsize=10)
    fig.savefig(path, dpi=DPI)
    return path


def _correlation_text(result: dict) -> str:
    """Format the correlation matrix as the notes print it (``round(cor(X), 4)``), and theory."""
    labels = result["labels"]
    corr, theory, se = (np.asarray(result[k]) for k in ("correlation", "theory", "mc_se"))

    def block(title: str, m: np.ndarray, fmt: str) -> list[str]:
        rows = [title, " " * 6 + "".join(f"{s:>9}" for s in labels)]
        rows += [f"{labels[i]:<6}" + "".join(f"{v:>9{fmt}}" for v in m[i]) for i in range(len(m))]
        return rows + [""]

    lines = block(f"sample correlation of R = {PAIRS['replicates']} replicates", corr, ".4f")
    lines += block("theory: tau^2 / (sigma^2 + tau^2) = 0.8 within a cluster, 0 between", theory,
                   ".4f")
    lines += block("Monte Carlo standard error (1 - rho^2) / sqrt(R)", se, ".4f")
    lines.append(f"largest |sample - theory| / se over the 15 pairs: {result['max_abs_z']:.2f}")
    return "\n".join(lines) + "\n"


def make_figures(out_dir: Path, seed: int = 23984) -> list[Path]:
    """Write the notes' three figures and the pairs plot's correlation numbers into ``out_dir``.

    Returns the paths written: ``histogram.png``, ``bivariate.png``, ``pairs.png``,
    ``pairs_correlation.json`` and ``pairs_correlation.txt``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_histogram(out / "histogram.png", seed), _bivariate(out / "bivariate.png", seed)]
    X, result = pairs_correlation(seed)
    paths.append(_pairs(out / "pairs.png", X, result))
    js = out / "pairs_correlation.json"
    js.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    txt = out / "pairs_correlation.txt"
    txt.write_text(_correlation_text(result), encoding="utf-8")
    return [*paths, js, txt]
