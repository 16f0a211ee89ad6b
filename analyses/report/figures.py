"""The report's figures: matplotlib Figures drawn from :mod:`analyses.report.compute`'s data.

Figures are :class:`matplotlib.figure.Figure` objects on the Agg canvas (no pyplot state, no
display, nothing left open) with fixed margins in inches (a layout engine measures every text
box: it doubled the render time). :func:`png_uri` embeds one as a base64 PNG data URI.
matplotlib is imported inside the functions, so importing the report stays cheap.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping

import numpy as np

from varcomp.analyses.report.compute import HDI_PROB, icc_marks, icc_panels

__all__ = ["d_study_figure", "draw", "icc_figure", "png_uri"]

DPI = 72
COLORS = {"ml": "#d95f02", "reml": "#7570b3", "post": "#1b9e77", "obs": "#c0392b"}
ENERGY_COLORS = ("#4a6fa5", "#f0a830")
BLUE, LIGHT = "#4a6fa5", "#9ecae1"
RC = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
      "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
      "axes.spines.right": False, "text.parse_math": False, "text.usetex": False}
# text.parse_math off: labels hold user text (group labels, response names); a '$' in them
# must stay a dollar sign, not start mathtext


def _grid(w: float, h: float, nrows: int = 1, ncols: int = 1, *, left: float = 0.75,
          right: float = 0.15, bottom: float = 0.55, top: float = 0.3, wspace: float = 0.75,
          hspace: float = 0.65):
    """A figure of ``nrows x ncols`` axes with fixed margins in inches, at most 5 ticks an axis.

    Ticks and legends are most of a small figure's drawing time (a two-panel ECDF figure:
    73 ms with matplotlib's default ticks and legends, 51 ms with at most 5 ticks and none).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(w, h))
    aw = (w - left - right - (ncols - 1) * wspace) / ncols
    ah = (h - top - bottom - (nrows - 1) * hspace) / nrows
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace / max(aw, 0.1), hspace=hspace / max(ah, 0.1))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(4))
    return fig, axes


def png_uri(fig) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (Agg canvas, fast zlib level)."""
    buf = io.BytesIO()
    # zlib level 1: 8% less savefig time than the default 6 for 11% larger files (a Dyestuff
    # fit's 5 figures: 131 against 142 ms, 72 against 65 kB)
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _suffix(outcome: object) -> str:
    return "" if outcome is None else f" [{outcome}]"


# ---------------------------------------------------------------------------- data, ICC
def sizes_figure(data: dict):
    """Number of clusters of each size."""
    fig, axes = _grid(6.5, 2.3)
    ax = axes[0, 0]
    values, counts = data["size_values"], data["size_counts"]
    if len(values) <= 40:
        ax.bar(values, counts, width=0.8, color=BLUE)
    else:
        c, e = np.histogram(data["sizes"], bins=40)
        ax.stairs(c, e, fill=True, color=BLUE)
    ax.set_xlabel("cluster size n_l")
    ax.set_ylabel("clusters")
    return fig


def icc_figure(fit, estimates: Mapping | None = None, *, outcomes=(None,),
               width: float | None = None):
    """The report's ICC posterior figure for one fit (a matplotlib Figure, e.g. to save).

    Histogram of the ICC draws (one panel per outcome: ``family.outcomes(data)``, ``[None]``
    for one response), 94% HDI shaded, posterior mean solid, ML/REML estimates dashed.
    """
    from matplotlib import rc_context

    with rc_context(RC):
        panels = icc_panels(fit.idata.posterior, list(outcomes))
        return _icc(panels, icc_marks(estimates or {}), width)


def _icc(panels: list[dict], marks: list[dict], width: float | None = None):
    k = len(panels)
    fig, axes = _grid(width or min(4.6 * k, 10), 3.1, 1, k, top=0.4)
    for ax, p in zip(axes[0], panels, strict=True):
        x, (lo, hi) = p["draws"], p["hdi"]
        top = float(min(1.0, max(np.quantile(x, 0.999) * 1.05, hi * 1.1, 0.02)))
        counts, edges = np.histogram(x, bins=np.linspace(0.0, top, 60), density=True)
        ax.stairs(counts, edges, fill=True, color=LIGHT)
        ax.axvspan(lo, hi, color=COLORS["post"], alpha=0.12,
                   label=f"{HDI_PROB:.0%} HDI [{lo:.3f}, {hi:.3f}]")
        ax.axvline(p["mean"], color=COLORS["post"], lw=1.5,
                   label=f"posterior mean {p['mean']:.3f}")
        if p["outcome"] is None:  # the estimates are of the one response
            for j, e in enumerate(marks):
                color = COLORS.get(e["key"], "k")
                ax.axvline(e["icc"], color=color, ls="--", lw=1.4)
                # a marker above the axes keeps an estimate at the boundary ICC = 0 visible
                ax.plot([e["icc"]], [1.03 + 0.06 * j], marker="v", ms=6, color=color,
                        clip_on=False, transform=ax.get_xaxis_transform(), ls="--", lw=1.4,
                        label=f"{e['key'].upper()} {e['icc']:.3f}"
                              + (" (boundary)" if e["boundary"] else ""))
        ax.set_xlim(0.0, top)
        ax.set_xlabel("ICC = tau² / (tau² + sigma²)" + _suffix(p["outcome"]))
        ax.set_ylabel("posterior density")
        ax.set_yticks([])
        ax.legend(loc="upper right", frameon=True, framealpha=0.85, edgecolor="none")
    return fig


def overlay_figure(panels: list[dict], marks: list[dict]):
    """ICC (or VPC) posteriors of all fits on one axis per share.

    Dotted: forms failing the gate; dashed: the ML/REML ICC.
    """
    k = len(panels)
    fig, axes = _grid(min(4.6 * k, 10) + 2.2, 3.0, 1, k, right=2.3)
    axes = axes[0]
    for ax, p in zip(axes, panels, strict=True):
        some_ok = any(c["ok"] for c in p["curves"])
        for c in p["curves"]:
            ax.plot(c["grid"], c["pdf"], lw=1.5, ls=":" if some_ok and not c["ok"] else "-",
                    label=c["name"] + ("" if c["ok"] else " (fails diagnostics)"))
        if p["icc"]:
            for e in marks:
                ax.axvline(e["icc"], color=COLORS.get(e["key"], "k"), ls="--", lw=1.0,
                           label=f"{e['key'].upper()} {e['icc']:.3f}")
        ax.set_xlim(0, p["top"])
        ax.set_xlabel(p["label"])
        ax.set_ylabel("posterior density")
        ax.set_yticks([])
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


# ---------------------------------------------------------------------------- sampler
def rank_figure(panels: list[dict]):
    """Rank histograms: each chain's counts as steps, the 99% band of uniform counts shaded.

    Up to 4 scalars side by side on one axis per row (same draws, so one count scale): an axis
    costs ~8 ms to make and draw, so one strip instead of 4 panels is ~30 ms less per fit.
    Drawn here rather than with ``az.plot_rank``: 4 panels of a 4 x 1000 Dyestuff fit cost
    62 ms (ranks, drawing and PNG) against 86 ms with ``az.plot_rank(kind="vlines")``.
    """
    per_row = 4
    rows = [panels[i:i + per_row] for i in range(0, len(panels), per_row)]
    fig, axes = _grid(min(2.6 * min(len(panels), per_row) + 0.4, 10.5), 1.9 * len(rows) + 0.2,
                      len(rows), 1, left=0.25, right=0.2, hspace=0.7, top=0.35)
    colors = [f"C{c}" for c in range(panels[0]["counts"].shape[0])]
    for ax, row in zip(axes[:, 0], rows, strict=True):
        bins = row[0]["counts"].shape[1]
        gap = 0.25 * bins
        starts = [k * (bins + gap) for k in range(len(row))]
        lo, hi = row[0]["band"]
        ax.broken_barh([(x0, bins) for x0 in starts], (lo, hi - lo), color="0.85", lw=0)
        ax.hlines([row[0]["expect"]] * len(row), starts, [x0 + bins for x0 in starts],
                  color="k", lw=0.8)
        for c, color in enumerate(colors):  # one NaN-separated step line per chain
            xs, ys = [], []
            for x0, p in zip(starts, row, strict=True):
                e = x0 + np.arange(bins + 1)
                xs += [np.repeat(e, 2)[1:-1], [np.nan]]
                ys += [np.repeat(p["counts"][c], 2), [np.nan]]
            ax.plot(np.concatenate(xs), np.concatenate(ys), color=color, lw=1.0)
        for x0, p in zip(starts, row, strict=True):
            ax.text(x0 + bins / 2, 1.02, p["label"], ha="center", va="bottom",
                    transform=ax.get_xaxis_transform())
        top = max(max(float(p["counts"].max()) for p in row), hi)
        ax.set_ylim(0, top * 1.1)
        ax.set_xlim(-0.5, starts[-1] + bins + 0.5)
        ax.set_yticks([])
        ax.set_xticks([])
        ax.spines["left"].set_visible(False)
        ax.set_xlabel("rank (all chains), in bins, per parameter")
    return fig


def sampler_figure(view: dict):
    """Energy plot and the tau-sigma pair plot (per outcome) with divergences in red."""
    energy, pairs = view["energy"], view["pairs"]
    panels = int(energy is not None) + len(pairs)
    fig, axes = _grid(min(3.6 * panels, 11), 3.1, 1, panels)
    axes = list(axes[0])
    if energy is not None:
        ax = axes.pop(0)
        for (grid, pdf), color, alpha in zip((energy["marginal"], energy["transition"]),
                                             ENERGY_COLORS, (0.8, 0.6), strict=True):
            ax.fill_between(grid, pdf, color=color, alpha=alpha, lw=0)
        ax.set_yticks([])
        ax.set_xlabel("energy (centred per chain)")
        ax.set_title("energy (E-BFMI per chain "
                     f"{', '.join(f'{b:.2f}' for b in energy['bfmi'])})", fontsize=8.5)
    for ax, p in zip(axes, pairs, strict=True):
        ax.scatter(p["tau"], p["sigma"], s=4, color="0.45", alpha=0.5, linewidths=0)
        if p["tau_div"].size:
            ax.scatter(p["tau_div"], p["sigma_div"], s=14, color="red", linewidths=0)
        ax.set_xlabel(p["x_label"])
        ax.set_ylabel(p["y_label"])
        ax.set_title(f"{p['x_label']} – {p['y_label']}")
    return fig


# ---------------------------------------------------------------------------- PPC, effects
def ppc_figure(outcomes: list[dict]):
    """ECDFs over clusters (levels): observed (red) and replicated (blue), two panels a row."""
    panels = [p for o in outcomes for p in o["panels"]]
    rows = (len(panels) + 1) // 2
    fig, axes = _grid(8.6, 2.8 * rows, rows, 2)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, panels, strict=False):
        if p["empty"]:
            ax.set_visible(False)
            continue
        xs, y = p["replicates"], p["y"]
        # all replicate ECDFs as one NaN-separated step line: one artist, fast to draw
        xx = np.repeat(xs, 2, axis=1)[:, 1:]
        yy = np.repeat(y, 2)[:-1][None, :].repeat(xs.shape[0], axis=0)
        nan = np.full((xs.shape[0], 1), np.nan)
        ax.plot(np.hstack([xx, nan]).ravel(), np.hstack([yy, nan]).ravel(), color=LIGHT,
                lw=0.6, alpha=0.7)
        ax.step(p["observed"], y, where="post", color=COLORS["obs"], lw=2)
        ax.set_yticks([0.0, 0.5, 1.0])
        ax.set_xlabel(p["what"])
        ax.set_ylabel("ECDF over levels" if outcomes[0].get("design") else "ECDF over clusters")
    return fig


def caterpillar_figure(view: dict):
    """Group effects sorted by posterior mean with intervals; raw mean minus E[mu] as crosses."""
    G, panels = view["groups"], view["panels"]
    height = min(max(2.2, 0.16 * G + 1.0), 9.0)
    longest = max((len(lab) for lab in panels[0]["labels"]), default=1) if G <= 60 else 0
    left = min(0.45 + 0.075 * longest, 2.6)
    k = len(panels)
    fig, axes = _grid(min(4.6 * k, 10) if k > 1 else 7.0, height + 0.1, 1, k, left=left,
                      wspace=left + 0.2, top=0.25)
    small = G <= 80
    for ax, p in zip(axes[0], panels, strict=True):
        y = p["y"]
        ax.hlines(y, p["lo"], p["hi"], color=BLUE, lw=1.2 if small else 0.6)
        ax.plot(p["mean"], y, "o", color="#1f3b63", ms=3.5 if small else 1.5)
        if p["observed"] is not None:
            ax.plot(p["observed"], y, "x", color=COLORS["obs"], ms=4 if small else 2)
        ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
        if G <= 60:
            ax.set_yticks(y, p["labels"])
        else:
            ax.set_yticks([])
            ax.set_ylabel(f"{G} groups, sorted")
        ax.set_xlabel(f"{view['factor']} effect" + _suffix(p["outcome"]))
        ax.set_ylim(-0.7, G - 0.3)
    return fig


# ---------------------------------------------------------------------------- mixed models
def coef_figure(fixed: dict):
    """Fixed effects: posterior mean (dot) and 94% HDI (line) per term, REML and ML beside.

    REML is a purple cross, ML an orange tick; the Intercept is left out when there are other
    terms (it lives on the response's level).
    """
    rows = fixed["plotted"] or fixed["rows"]
    k = len(rows)
    longest = max(len(r["term"]) for r in rows)
    left = min(0.5 + 0.075 * longest, 3.0)
    fig, axes = _grid(8.0, min(max(1.6, 0.3 * k + 0.9), 9.0), left=left, top=0.3, right=1.5)
    ax = axes[0, 0]
    y = np.arange(k)[::-1]
    ax.hlines(y, [r["hdi"][0] for r in rows], [r["hdi"][1] for r in rows], color=BLUE, lw=1.6)
    ax.plot([r["mean"] for r in rows], y, "o", color="#1f3b63", ms=4.5, label="posterior mean")
    for key, marker in (("reml", "x"), ("ml", "|")):
        if key in fixed["methods"]:
            xs = [r["est"].get(key) for r in rows]
            ax.plot([np.nan if v is None else v for v in xs], y, marker, color=COLORS[key],
                    ms=8, mew=1.8, ls="none", label=key.upper())
    ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
    ax.set_yticks(y, [r["term"] for r in rows])
    ax.set_ylim(-0.7, k - 0.3)
    ax.set_xlabel(f"coefficient ({HDI_PROB:.0%} HDI)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def vpc_figure(comp: dict):
    """Shares of the variance: stacked bars and intervals.

    Left: the posterior mean VPCs (and REML's) stacked; right: each component's posterior mean
    with its 94% HDI as whiskers, REML as a cross.
    """
    rows = comp["rows"]
    names = [r["component"] for r in rows]
    bars = [("posterior", [r["vpc"]["mean"] for r in rows])]
    if comp["reml"] and all(r["reml_vpc"] is not None for r in rows):
        bars.append(("REML", [r["reml_vpc"] for r in rows]))
    fig, axes = _grid(10.0, max(2.4, 0.45 * len(rows) + 1.4), 1, 2, left=1.1, wspace=1.9,
                      right=0.3)
    ax = axes[0, 0]
    colors = [f"C{j}" for j in range(len(rows))]
    for b, (_, shares) in enumerate(bars):
        start = 0.0
        for j, x in enumerate(shares):
            x = float(np.nan_to_num(x))
            ax.barh(b, x, left=start, color=colors[j], height=0.6)
            if x >= 0.07:  # the name too where it fits
                text = f"{names[j]} {100 * x:.0f}%" if x >= 0.25 else f"{100 * x:.0f}%"
                ax.text(start + x / 2, b, text, ha="center", va="center", color="white",
                        fontsize=8)
            start += x
    ax.set_yticks(range(len(bars)), [t for t, _ in bars])
    ax.set_ylim(len(bars) - 0.4, -0.6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the variance")
    ax = axes[0, 1]
    y = np.arange(len(rows))[::-1]
    ax.hlines(y, [r["vpc"]["hdi"][0] for r in rows], [r["vpc"]["hdi"][1] for r in rows],
              color=colors, lw=2.0)
    ax.plot([r["vpc"]["mean"] for r in rows], y, "o", color="#1f3b63", ms=4.5)
    if comp["reml"]:
        ax.plot([np.nan if r["reml_vpc"] is None else r["reml_vpc"] for r in rows], y, "x",
                color=COLORS["reml"], ms=8, mew=1.8, ls="none")
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(f"VPC, {HDI_PROB:.0%} HDI (x: REML)")
    return fig


def d_study_figure(rel: dict):
    """The D study: Phi and E rho^2 against n' raters, posterior mean and HDI band, the goal.

    ``rel``: :meth:`analyses.reliability.Reliability.as_dict` (its ``curve`` and ``reach``).
    """
    curve = rel["curve"]
    ns = [r["n_raters"] for r in curve]
    fig, axes = _grid(6.5, 3.0, right=1.9)
    ax = axes[0, 0]
    for key, label, color in (("phi", "Φ (absolute)", "C0"), ("erho2", "Eρ² (relative)", "C1")):
        ax.plot(ns, [r[f"{key}_mean"] for r in curve], marker="o", ms=3.5, color=color,
                label=label)
        ax.fill_between(ns, [r[f"{key}_hdi"][0] for r in curve],
                        [r[f"{key}_hdi"][1] for r in curve], color=color, alpha=0.2, lw=0)
    goal = rel["reach"]["goal"]
    ax.axhline(goal, color="grey", ls=":", label=f"goal {goal:g}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("raters n'")
    ax.set_ylabel(f"coefficient ({HDI_PROB:.0%} HDI band)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def icc_curve_figure(curve: dict):
    """The ICC with random slopes over the slope column: posterior mean and 94% band."""
    fig, axes = _grid(7.0, 3.0, top=0.3)
    ax = axes[0, 0]
    ax.fill_between(curve["x"], curve["lo"], curve["hi"], color=BLUE, alpha=0.25, lw=0,
                    label=f"{HDI_PROB:.0%} band")
    ax.plot(curve["x"], curve["mean"], color="#1f3b63", lw=1.8, label="posterior mean")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(curve["column"])
    ax.set_ylabel("ICC(x)")
    ax.legend(loc="best", frameon=False)
    return fig


# ---------------------------------------------------------------------------- all of them
def draw(view: dict) -> dict:
    """Every figure of the page as a data URI: ``{"sizes", "overlay", "d_study", "fits": ...}``.

    ``fits`` maps each fit's name to its figures; a fit's caterpillar plots are the list
    ``caterpillars``, one per factor.
    """
    from matplotlib import rc_context

    images: dict = {"sizes": None, "overlay": None, "d_study": None, "fits": {}}
    with rc_context(RC), np.errstate(all="ignore"):
        if view["reliability"]:
            images["d_study"] = png_uri(d_study_figure(view["reliability"]))
        data = view["data"]
        if not data["balanced"]:
            images["sizes"] = png_uri(sizes_figure(data))
        comparison = view["comparison"]
        if comparison is not None and comparison.get("overlay"):
            images["overlay"] = png_uri(overlay_figure(comparison["overlay"], view["marks"]))
        for f in view["fits"]:
            shown = {}
            if f["icc"]:
                shown["icc"] = _icc(f["icc"], view["marks"])
            mixed = f["mixed"]
            if mixed and mixed["fixed"]["plotted"]:
                shown["coef"] = coef_figure(mixed["fixed"])
            if mixed and mixed.get("curve"):
                shown["icc_curve"] = icc_curve_figure(mixed["curve"])
            if mixed and mixed["components"]:
                shown["vpc"] = vpc_figure(mixed["components"])
            if f["ranks"]:
                shown["ranks"] = rank_figure(f["ranks"])
            shown["sampler"] = sampler_figure(f["sampler"])
            if f["ppc"]:
                shown["ppc"] = ppc_figure(f["ppc"])
            uris = {k: png_uri(fig) for k, fig in shown.items()}
            uris["caterpillars"] = [png_uri(caterpillar_figure(c)) for c in f["caterpillars"]]
            images["fits"][f["name"]] = uris
    return images
