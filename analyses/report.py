r"""The HTML report of a fit: one self-contained page (inline CSS, images as base64 PNG).

Sections: at a glance; the data (cluster sizes, singletons, dropped rows, one-way ANOVA);
ML/REML point estimates; with several fits, the parameterisation comparison (timings, ESS/s,
divergences, posterior agreement, which forms to trust); then per fit a diagnostics banner,
the parameter table, the ICC posterior (HDI, ML/REML, P(ICC < 0.01) near the boundary), the
design effect and reliability of cluster means, rank/trace plots, the energy plot, the
tau-sigma pair plot with divergences, a posterior predictive check of cluster means and
within-cluster sds, and a caterpillar plot of the group effects. Multivariate fits also show
V, Sigma and both correlation matrices.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (Agg canvas, no pyplot state),
so rendering neither needs a display nor leaves figures open.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from models.data import ClusteredData
from models.estimate import PointEstimate
from models.sampling import GATE, Fit

__all__ = ["BOUNDARY_ICC", "HDI_PROB", "icc_figure", "render_report", "write_report"]

HDI_PROB = 0.94
BOUNDARY_ICC = 0.01  # report P(icc < BOUNDARY_ICC) when posterior mass piles up at tau = 0
BOUNDARY_MASS = 0.05  # ... when that probability exceeds this (or ML/REML sit on the boundary)
PLOT_DRAWS = 1000  # posterior draws used by scatter and predictive plots (thinned evenly)
PPC_DRAWS, PPC_MIN_DRAWS, PPC_VALUES = 400, 50, 5_000_000  # predictive replicates: draws x L cap
ECDF_POINTS = 2000  # ranks through which an ECDF over clusters is drawn
CATERPILLAR_MAX = 2000  # groups drawn in the caterpillar plot (evenly spaced in rank above that)
DPI = 80
PARAMS = ("mu", "tau", "sigma", "icc")
ENERGY_COLORS = ("#4a6fa5", "#f0a830")
COLORS = {"ml": "#d95f02", "reml": "#7570b3", "post": "#1b9e77", "obs": "#c0392b"}
RC = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
      "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
      "axes.spines.right": False}

CSS = """
:root { --ok: #1e7b34; --ok-bg: #e6f4ea; --bad: #b3261e; --bad-bg: #fce8e6; --warn-bg: #fff4e5;
        --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #202124; margin: 0; background: #f8f9fa; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 64px; background: #fff;
       box-shadow: 0 0 0 1px var(--line); }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #202124; }
h3 { font-size: 17px; margin: 26px 0 8px; }
h4 { font-size: 15px; margin: 18px 0 6px; color: #3c4043; }
p, li { max-width: 78ch; }
.sub { color: var(--muted); margin: 0 0 16px; }
nav { background: #f1f3f4; padding: 8px 14px; border-radius: 6px; font-size: 14px; }
nav a { margin-right: 14px; color: #1a57b8; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; }
th { background: #f1f3f4; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
td.l, th.l { text-align: left; }
td.bad { color: var(--bad); font-weight: 600; }
table.kvt td:first-child { color: var(--muted); padding-right: 24px; }
td.good { color: var(--ok); }
.banner { border-radius: 6px; padding: 10px 14px; margin: 10px 0; border-left: 6px solid; }
.banner.ok { background: var(--ok-bg); border-color: var(--ok); }
.banner.bad { background: var(--bad-bg); border-color: var(--bad); }
.banner.warn { background: var(--warn-bg); border-color: #e37400; }
.banner strong { font-size: 15.5px; }
.banner ul { margin: 4px 0 0; padding-left: 20px; }
.kv { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 13.5px; margin-top: 6px; }
.kv span b { font-weight: 600; }
.glance { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 10px;
          margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 13px; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: 13px; max-width: 90ch; }
details { margin: 14px 0; border: 1px solid var(--line); border-radius: 6px; padding: 0 14px; }
details[open] { padding-bottom: 10px; }
summary { cursor: pointer; padding: 10px 0; font-size: 19px; font-weight: 600; }
summary .tag { font-size: 13px; font-weight: 600; border-radius: 10px; padding: 2px 9px;
               margin-left: 8px; vertical-align: middle; }
.tag.ok { background: var(--ok-bg); color: var(--ok); }
.tag.bad { background: var(--bad-bg); color: var(--bad); }
pre { background: #f1f3f4; padding: 8px 10px; border-radius: 4px; white-space: pre-wrap;
      font-size: 12.5px; }
.note { color: var(--muted); font-size: 13px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
"""


# ---------------------------------------------------------------------------- small helpers
def _e(x: object) -> str:
    """HTML-escaped text."""
    return html.escape(str(x), quote=True)


def _fmt(x: object, digits: int = 4) -> str:
    """Format a number to ``digits`` significant digits, avoiding scientific notation."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _e(x)
    if not math.isfinite(v):
        return "∞" if v == math.inf else "–" if math.isnan(v) else "−∞"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    if mag >= 6 or mag < -4:
        return f"{v:.{digits - 1}e}"
    return f"{v:,.{max(digits - 1 - mag, 0)}f}"


def _ess(v: object) -> str:
    """Format an effective sample size as a whole number."""
    try:
        return f"{round(float(v)):,}" if math.isfinite(float(v)) else "–"
    except (TypeError, ValueError):
        return "–"


def _ci(lo: float, hi: float, digits: int = 3) -> str:
    """Format an interval with both ends at the precision of the larger one (no 1e-06)."""
    try:
        big = max(abs(float(lo)), abs(float(hi)))
    except (TypeError, ValueError):
        return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
    if not math.isfinite(big) or big == 0 or big >= 1e6 or big < 1e-4:
        return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
    dec = max(digits - 1 - math.floor(math.log10(big)), 0)
    return f"[{float(lo):,.{dec}f}, {float(hi):,.{dec}f}]"


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[object]], *, cls: str = "",
           left: int = 1) -> str:
    """Build an HTML table; cells are escaped unless given as ``("html", text, css)`` tuples."""
    def cell(tag: str, v: object, i: int) -> str:
        css = "l" if i < left else ""
        if isinstance(v, tuple) and v and v[0] == "html":
            content = v[1]
            css = (css + " " + v[2]).strip() if len(v) > 2 else css
        else:
            content = _e(v)
        attr = f' class="{css}"' if css else ""
        return f"<{tag}{attr}>{content}</{tag}>"

    body = "".join("<tr>" + "".join(cell("td", v, i) for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    attr = f' class="{cls}"' if cls else ""
    head = ""
    if header:
        head = "<thead><tr>" + "".join(cell("th", h, i) for i, h in enumerate(header))
        head += "</tr></thead>"
    return f"<table{attr}>{head}<tbody>{body}</tbody></table>"


def _num(v: object, *, bad: bool = False, digits: int = 4) -> tuple:
    """Make a numeric cell, flagged red when ``bad``."""
    return ("html", _e(_fmt(v, digits)), "bad" if bad else "")


def _grid(w: float, h: float, nrows: int = 1, ncols: int = 1, *, left: float = 0.75,
          right: float = 0.15, bottom: float = 0.55, top: float = 0.3, wspace: float = 0.75,
          hspace: float = 0.65) -> tuple[Figure, np.ndarray]:
    """Make a figure of ``nrows x ncols`` axes with fixed margins in inches.

    Fixed margins instead of a layout engine: constrained layout measures every text box and
    doubled the render time of the report.
    """
    fig = Figure(figsize=(w, h))
    aw = (w - left - right - (ncols - 1) * wspace) / ncols
    ah = (h - top - bottom - (nrows - 1) * hspace) / nrows
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace / max(aw, 0.1), hspace=hspace / max(ah, 0.1))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig: Figure) -> str:
    """Encode the figure as a base64 PNG (Agg canvas)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str, caption: str = "") -> str:
    """Embed the figure in a ``<figure>`` with alt text and an optional HTML caption."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{_png(fig)}">'
            f"{cap}</figure>")


def _hdi(x: np.ndarray, prob: float = HDI_PROB) -> tuple[float, float]:
    """Highest-density interval of 1-D draws (shortest window holding ``prob`` of them)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    lo, hi = _hdi_columns(x[:, None], prob)
    return float(lo[0]), float(hi[0])


def _hdi_columns(draws: np.ndarray, prob: float = HDI_PROB) -> tuple[np.ndarray, np.ndarray]:
    """Highest-density interval of each column of ``draws`` (S, G): the shortest window of
    sorted draws holding ``prob`` of them (finite draws assumed)."""
    x = np.sort(np.asarray(draws, dtype=np.float64), axis=0)
    S = x.shape[0]
    k = max(int(math.floor(prob * S)), 1)
    if k >= S:
        return x[0], x[-1]
    i = np.argmin(x[k:] - x[: S - k], axis=0)
    cols = np.arange(x.shape[1])
    return x[i, cols], x[i + k, cols]


def _flat(da) -> np.ndarray:
    """Draws of a scalar DataArray with dims (chain, draw), flattened."""
    return np.asarray(da.values, dtype=np.float64).reshape(-1)


def _thin_index(n_total: int, n_max: int = PLOT_DRAWS) -> np.ndarray:
    """Evenly spaced indices of at most ``n_max`` out of ``n_total`` flattened draws."""
    if n_total <= n_max:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_max).round().astype(np.int64))


def _outcomes(post) -> list[object]:
    """Outcome labels of a multivariate posterior, or ``[None]`` for a univariate one."""
    if "icc" in post and "outcome" in post["icc"].dims:
        return list(post["icc"]["outcome"].values)
    return [None]


def _sel(post, var: str, outcome: object):
    """``post[var]`` for one outcome (or as is when univariate)."""
    da = post[var]
    if outcome is not None and "outcome" in da.dims:
        da = da.sel(outcome=outcome)
    return da


def _response_index(data: ClusteredData, outcome: object, position: int) -> int:
    if outcome is not None and str(outcome) in data.responses:
        return data.responses.index(str(outcome))
    return min(position, data.p - 1)


def _suffix(outcome: object) -> str:
    """``[outcome]`` after a variable name (nothing when univariate)."""
    return "" if outcome is None else f"[{outcome}]"


def _lab(outcome: object) -> str:
    """`` [outcome]`` after an axis label (nothing when univariate)."""
    return "" if outcome is None else f" [{outcome}]"


# ---------------------------------------------------------------------------- data section
def _data_section(data: ClusteredData) -> tuple[str, list[str]]:
    """Render the data summary; also return its warnings."""
    sizes = data.sizes
    L, N = int(sizes.size), int(sizes.sum())
    singletons = int((sizes == 1).sum())
    balanced = bool(sizes.min() == sizes.max())
    warns = list(data.warnings)
    if L < 3 and not any(f"only {L} cluster" in w.lower() for w in warns):
        warns.append(f"Only {L} cluster{'s' if L != 1 else ''}: the between-cluster sd tau "
                     f"rests on {L - 1} degree of freedom, so its posterior mostly reflects the "
                     f"prior. Treat tau and the ICC as poorly determined.")
    if singletons:
        warns.append(f"{singletons} cluster(s) have a single observation: they inform tau and mu "
                     f"but not the within-cluster sd sigma.")
    rows = [
        ("source", data.source), ("group column", data.group_name),
        ("response" + ("s" if data.p > 1 else ""), ", ".join(data.responses)),
        ("observations N (rows kept)", f"{N:,}"), ("clusters L", f"{L:,}"),
        ("dropped rows", f"{data.dropped_rows:,}"),
        ("cluster size: min / median / mean / max",
         f"{sizes.min()} / {_fmt(float(np.median(sizes)), 3)} / {_fmt(N / L, 3)} / {sizes.max()}"),
        ("singleton clusters", f"{singletons:,}"),
        ("design", "balanced" if balanced else "unbalanced"),
    ]
    out = ['<h2 id="data">Data</h2>', _table(None, rows, cls="kvt")]
    if balanced:
        out.append(f"<p>Balanced design: every one of the {L} clusters has {sizes[0]} "
                   f"observation{'s' if sizes[0] != 1 else ''}.</p>")
    else:
        values, counts = np.unique(sizes, return_counts=True)
        if values.size <= 12:
            out.append("<h4>Cluster-size distribution</h4>")
            out.append(_table(["size n_l", *map(str, values)],
                              [["clusters", *map(str, counts)]]))
        fig, axes = _grid(6.5, 2.3)
        ax = axes[0, 0]
        if values.size <= 40:
            ax.bar(values, counts, width=0.8, color="#4a6fa5")
        else:
            ax.hist(sizes, bins=40, color="#4a6fa5")
        ax.set_xlabel("cluster size n_l")
        ax.set_ylabel("clusters")
        out.append(_img(fig, "cluster-size distribution",
                        "Number of clusters of each size."))
    if warns:
        items = "".join(f"<li>{_e(w)}</li>" for w in warns)
        out.append(f'<div class="banner warn"><strong>Data warnings</strong><ul>{items}</ul></div>')
    for k, r in enumerate(data.responses):
        out.append(_anova(data, k, r))
    return "\n".join(out), warns


def _anova(data: ClusteredData, k: int, response: str) -> str:
    """One-way ANOVA table with the method-of-moments variance components."""
    from scipy import stats

    try:
        a = data.anova(k)
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return f"<p>One-way ANOVA for {_e(response)}: not available for these data.</p>"
    dfb, dfw = int(round(a["df_between"])), int(round(a["df_within"]))
    p = float(stats.f.sf(a["F"], dfb, dfw)) if dfb > 0 and dfw > 0 and math.isfinite(a["F"]) \
        else math.nan
    rows = [
        [f"between ({data.group_name})", _fmt(dfb), _fmt(a["ss_between"]),
         _fmt(a["ms_between"]), _fmt(a["F"]), _fmt(p, 3)],
        ["within (residual)", _fmt(dfw), _fmt(a["ss_within"]), _fmt(a["ms_within"]), "", ""],
        ["total", _fmt(dfb + dfw), _fmt(a["ss_between"] + a["ss_within"]), "", "", ""],
    ]
    trunc = (" The moment estimate of tau² was negative (MSB < MSW) and is truncated at 0."
             if a["truncated"] else "")
    return (f"<h4>One-way ANOVA: {_e(response)}</h4>"
            + _table(["source", "df", "sum of squares", "mean square", "F", "p-value"], rows)
            + f"<p class='note'>Method of moments: tau² = (MSB − MSW) / n0 = "
              f"{_fmt(a['tau2'])} with n0 = {_fmt(a['n0'])}, sigma² = MSW = {_fmt(a['sigma2'])}, "
              f"ICC = {_fmt(a['icc'], 3)}.{trunc}</p>")


def _estimates_section(estimates: Mapping[str, PointEstimate]) -> str:
    rows = []
    for key, e in estimates.items():
        rows.append([key.upper(), _fmt(e.mu), _fmt(e.tau), _fmt(e.sigma), _fmt(e.icc, 3),
                     ("html", "<b>yes (tau = 0)</b>" if e.boundary else "no"),
                     _fmt(e.criterion, 6)])
    crit = "−2 log-likelihood (ML: lme4's deviance; REML: lme4's REML criterion)"
    return ('<h2 id="estimates">ML and REML estimates</h2>'
            + _table(["method", "mu", "tau", "sigma", "ICC", "on boundary", "criterion"], rows)
            + f"<p class='note'>criterion = {crit}. These are the point estimates marked on "
              f"the ICC posteriors below.</p>")


# ---------------------------------------------------------------------------- per-fit numbers
def _param_rows(fit: Fit, summary: dict | None) -> list[tuple[str, dict]]:
    """``(name, {mean, sd, hdi_low, hdi_high, ess_bulk, ess_tail, r_hat, mcse_mean})`` rows.

    Taken from ``summary["fits"][name]["params"]`` when present (so the page and summary.json
    agree exactly), otherwise computed with :func:`arviz.summary`.
    """
    import arviz as az

    post = fit.idata.posterior
    names = [v for v in PARAMS if v in post]
    given = {}
    if summary:
        given = (summary.get("fits", {}).get(fit.name, {}) or {}).get("params", {}) or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = az.summary(fit.idata, var_names=names, hdi_prob=HDI_PROB, kind="all",
                       round_to="none")
    lo, hi = (c for c in s.columns if c.startswith("hdi_"))
    rows = []
    for label, r in s.iterrows():
        key = str(label).replace(", ", ",")
        if key in given:
            rows.append((key, dict(given[key])))
            continue
        rows.append((key, {"mean": r["mean"], "sd": r["sd"], "hdi_low": r[lo],
                           "hdi_high": r[hi], "ess_bulk": r["ess_bulk"],
                           "ess_tail": r["ess_tail"], "r_hat": r["r_hat"],
                           "mcse_mean": r["mcse_mean"]}))
    return rows


def _param_table(rows: list[tuple[str, dict]]) -> str:
    out = []
    for name, r in rows:
        rhat, eb, et = r.get("r_hat"), r.get("ess_bulk"), r.get("ess_tail")
        out.append([name, _fmt(r.get("mean")), _fmt(r.get("sd"), 3),
                    _ci(r.get("hdi_low"), r.get("hdi_high"), 4),
                    ("html", _ess(eb), "bad" if eb is not None and eb < GATE["ess_bulk"] else ""),
                    ("html", _ess(et), "bad" if et is not None and et < GATE["ess_tail"] else ""),
                    _num(rhat, bad=rhat is not None and rhat > GATE["r_hat"], digits=4),
                    _fmt(r.get("mcse_mean"), 2)])
    return _table(["parameter", "mean", "sd", f"{HDI_PROB:.0%} HDI", "ESS bulk", "ESS tail",
                   "r_hat", "MCSE mean"], out)


def _banner(fit: Fit) -> str:
    """Green/red diagnostics banner with the gate's numbers, timings and settings."""
    d = fit.diagnostics or {}
    ok = bool(d.get("ok", False))
    title = ("Diagnostics pass: the sampler can be trusted for this fit" if ok else
             "Diagnostics fail: do not trust this fit's posterior")
    problems = "".join(f"<li>{_e(p)}</li>" for p in d.get("problems", []))
    depth = d.get("max_treedepth")
    items = [
        ("max r_hat", _fmt(d.get("r_hat"), 4), f"≤ {GATE['r_hat']}"),
        ("min ESS bulk", _ess(d.get("ess_bulk")), f"≥ {GATE['ess_bulk']:.0f}"),
        ("min ESS tail", _ess(d.get("ess_tail")), f"≥ {GATE['ess_tail']:.0f}"),
        ("divergences", _fmt(d.get("divergences", 0)), "0"),
        ("min E-BFMI", _fmt(d.get("ebfmi"), 3), f"≥ {GATE['ebfmi']}"),
        ("max tree depth hits", _fmt(d.get("treedepth_hits", 0)),
         f"deepest tree {depth}" if depth is not None else ""),
    ]
    kv = "".join(f"<span>{_e(k)} <b>{v}</b> <span class='note'>({_e(t)})</span></span>"
                 if t else f"<span>{_e(k)} <b>{v}</b></span>" for k, v, t in items)
    sec = fit.seconds or {}
    timing = " · ".join(f"{k} {sec[k]:.2f} s" for k in ("build", "compile", "sample", "total")
                        if k in sec)
    st = fit.settings or {}
    setting = ", ".join(f"{k} {st[k]}" for k in ("sampler", "chains", "tune", "draws", "seed",
                                                  "target_accept") if k in st)
    extra = f"<ul>{problems}</ul>" if problems else ""
    return (f'<div class="banner {"ok" if ok else "bad"}"><strong>{_e(title)}</strong>{extra}'
            f'<div class="kv">{kv}</div>'
            f'<div class="kv"><span>time: {_e(timing) or "–"}</span>'
            f'<span>settings: {_e(setting) or "–"}</span></div></div>')


# ---------------------------------------------------------------------------- ICC and derived
def _boundary_flags(icc: np.ndarray, estimates: Mapping[str, PointEstimate] | None) -> dict:
    p_low = float(np.mean(icc < BOUNDARY_ICC)) if icc.size else math.nan
    on = [k.upper() for k, e in (estimates or {}).items() if e.boundary]
    return {"p_low": p_low, "on_boundary": on,
            "show": bool(on) or (math.isfinite(p_low) and p_low > BOUNDARY_MASS)}


def _boundary_text(flags: dict, icc: np.ndarray, tau: np.ndarray | None) -> str:
    """Say what ML/REML give at the boundary tau = 0 and what the posterior says."""
    p = flags["p_low"]
    lo, hi = _hdi(icc)
    prob = f"{p:.3f}" if p >= 0.001 else "&lt; 0.001"
    post = (f"The posterior gives P(ICC &lt; {BOUNDARY_ICC}) = <b>{prob}</b>; its "
            f"{HDI_PROB:.0%} HDI for the ICC is {_ci(lo, hi, 3)}")
    if tau is not None and tau.size:
        tlo, thi = _hdi(tau)
        post += f" and for tau {_ci(tlo, thi, 3)}"
    post += "."
    if flags["on_boundary"]:
        who = " and ".join(flags["on_boundary"])
        verb = "are" if len(flags["on_boundary"]) > 1 else "is"
        head = (f"The {who} estimate{'s' if len(flags['on_boundary']) > 1 else ''} {verb} on the "
                f"boundary tau = 0: the best-fitting between-cluster variance is exactly zero, "
                f"because the cluster means vary no more than within-cluster noise alone would "
                f"make them. That is a point at the edge of the parameter space, not evidence "
                f"that the clusters are identical. ")
        tail = (f" The data are compatible with no between-cluster variation, but an ICC as "
                f"large as {_fmt(hi, 2)} is not ruled out; report the interval, not the zero.")
    else:
        head = ("The ML/REML estimates are inside the parameter space, but much of the "
                "posterior lies close to the boundary tau = 0. ")
        tail = " The data cannot rule out that the clusters do not differ at all."
    return f'<div class="banner warn">{head}{post}{tail}</div>'


def icc_figure(fit: Fit, estimates: Mapping[str, PointEstimate] | None = None, *,
               width: float | None = None) -> Figure:
    """Draw the report's ICC posterior figure for one fit (a matplotlib Figure, e.g. to save).

    Histogram of the ICC draws (one panel per outcome), 94% HDI shaded, posterior mean solid,
    ML/REML estimates (univariate) dashed.
    """
    post = fit.idata.posterior
    outcomes = _outcomes(post)
    with rc_context(RC):
        return _icc_fig(post, outcomes, estimates if outcomes == [None] else None, width)


def _icc_figure(post, outcomes: list, estimates: Mapping[str, PointEstimate] | None,
                title: str) -> str:
    """Embed the ICC figure with its caption."""
    fig = _icc_fig(post, outcomes, estimates)
    cap = (f"Posterior of the intra-class correlation: histogram of the draws, {HDI_PROB:.0%} "
           f"highest-density interval shaded, posterior mean solid"
           + (", ML and REML estimates dashed." if estimates and outcomes == [None] else "."))
    return _img(fig, f"ICC posterior, {title}", cap)


def _icc_fig(post, outcomes: list, estimates: Mapping[str, PointEstimate] | None,
             width: float | None = None) -> Figure:
    """Histogram of the ICC posterior per outcome, HDI shaded, ML/REML marked."""
    k = len(outcomes)
    fig, axes = _grid(width or min(4.6 * k, 10), 3.1, 1, k, top=0.4)
    axes = axes[0]
    for ax, o in zip(axes, outcomes, strict=True):
        x = _flat(_sel(post, "icc", o))
        lo, hi = _hdi(x)
        top = float(min(1.0, max(np.quantile(x, 0.999) * 1.05, hi * 1.1, 0.02)))
        ax.hist(x, bins=np.linspace(0.0, top, 60), density=True, color="#9ecae1",
                edgecolor="white", linewidth=0.3)
        ax.axvspan(lo, hi, color=COLORS["post"], alpha=0.12,
                   label=f"{HDI_PROB:.0%} HDI [{lo:.3f}, {hi:.3f}]")
        ax.axvline(float(x.mean()), color=COLORS["post"], lw=1.5,
                   label=f"posterior mean {x.mean():.3f}")
        if o is None:
            for j, (key, e) in enumerate((estimates or {}).items()):
                color = COLORS.get(key, "k")
                ax.axvline(e.icc, color=color, ls="--", lw=1.4)
                # a marker above the axes keeps an estimate at the boundary ICC = 0 visible
                ax.plot([e.icc], [1.03 + 0.06 * j], marker="v", ms=6, color=color,
                        clip_on=False, transform=ax.get_xaxis_transform(), ls="--", lw=1.4,
                        label=f"{key.upper()} {e.icc:.3f}" + (" (boundary)" if e.boundary
                                                              else ""))
        ax.set_xlim(0.0, top)
        ax.set_xlabel("ICC = tau² / (tau² + sigma²)" + _lab(o))
        ax.set_ylabel("posterior density")
        ax.legend(loc="upper right", frameon=True, framealpha=0.85, edgecolor="none")
    return fig


def _derived_table(post, data: ClusteredData, outcomes: list) -> str:
    """Design effect and reliability of cluster means with posterior means and 94% HDIs."""
    rows, notes = [], []
    for i, o in enumerate(outcomes):
        k = _response_index(data, o, i)
        n = data.stats.n[:, k]
        n = n[n > 0].astype(np.float64)
        nbar = float(n.mean())
        nw = float((n**2).sum() / n.sum())
        icc = _flat(_sel(post, "icc", o))
        deff = 1.0 + (nbar - 1.0) * icc  # Kish's design effect 1 + (n_bar - 1) ICC
        rel = nbar * icc / (1.0 + (nbar - 1.0) * icc)  # reliability of a mean of n_bar draws
        lab = "" if o is None else f" [{o}]"
        for name, v in ((f"design effect 1 + (n̄ − 1) ICC{lab}", deff),
                        (f"reliability of cluster means n̄ ICC / (1 + (n̄ − 1) ICC){lab}", rel)):
            rows.append([name, _fmt(nbar, 4), _fmt(v.mean(), 4), _ci(*_hdi(v), 4)])
        if n.min() == n.max():
            notes.append(f"n̄ = {_fmt(nbar, 4)}{lab}: every cluster has this size.")
        else:
            dw = 1.0 + (nw - 1.0) * icc
            notes.append(
                f"n̄{lab} = N / L = {_fmt(nbar, 4)}, the arithmetic mean cluster size (sizes "
                f"{int(n.min())}–{int(n.max())}). The reliability of one cluster's mean uses its "
                f"own n_l in place of n̄. With the size-weighted mean Σn_l² / N = {_fmt(nw, 4)}, "
                f"which suits a mean over all observations, the design effect is "
                f"{_fmt(dw.mean(), 4)} {_ci(*_hdi(dw), 4)}.")
    return (_table(["quantity", "n̄", "posterior mean", f"{HDI_PROB:.0%} HDI"], rows)
            + "".join(f"<p class='note'>{_e(t)}</p>" for t in notes)
            + "<p class='note'>The design effect is the factor by which clustering inflates "
              "the variance of a mean compared with a simple random sample of the same size; the "
              "reliability is the share of a cluster mean's variance that is real "
              "between-cluster difference.</p>")


def _matrices(post) -> str:
    """Posterior means (94% HDIs) of V, Sigma, corr_between and corr_within."""
    out = []
    titles = {"V": "V: between-cluster covariance", "Sigma": "Sigma: within-cluster covariance",
              "corr_between": "between-cluster correlation",
              "corr_within": "within-cluster correlation"}
    for var, title in titles.items():
        if var not in post:
            continue
        da = post[var]
        dims = [d for d in da.dims if d not in ("chain", "draw")]
        if len(dims) != 2:
            continue
        a, b = dims
        la, lb = list(da[a].values), list(da[b].values)
        vals = da.transpose("chain", "draw", a, b).values.reshape(-1, len(la), len(lb))
        rows = []
        for i, r in enumerate(la):
            cells = []
            for j in range(len(lb)):
                x = vals[:, i, j]
                lo, hi = _hdi(x)
                cells.append(("html", f"{_e(_fmt(x.mean(), 3))}<br><span class='note'>"
                                      f"{_e(_ci(lo, hi, 3))}</span>"))
            rows.append([str(r), *cells])
        out.append(f"<h4>{_e(title)}</h4>" + _table(["", *map(str, lb)], rows))
    if not out:
        return ""
    return ("<h3>Covariance matrices and correlations</h3>"
            "<p class='note'>Posterior means with 94% HDIs below each.</p>" + "".join(out))


# ---------------------------------------------------------------------------- sampler plots
def _rank_figure(idata, post, title: str) -> str:
    """Rank plots of mu, tau, sigma and the ICC (az.plot_rank), one panel per scalar."""
    import arviz as az

    names = [v for v in PARAMS if v in post]
    per_draw = post.sizes["chain"] * post.sizes["draw"]
    panels = sum(int(post[v].size // per_draw) for v in names)
    if panels > 12 and "icc" in post:  # many outcomes: keep the ICC only
        names = ["icc"]
        panels = int(post["icc"].size // per_draw)
    if panels > 12 or not names:
        return ""
    ncols = min(4, panels)
    nrows = -(-panels // ncols)
    fig, axes = _grid(min(2.6 * ncols + 0.4, 10.5), 2.1 * nrows + 0.2, nrows, ncols, left=0.35,
                      right=0.3, wspace=0.35, hspace=0.7, top=0.35)
    for ax in axes.ravel()[panels:]:
        ax.set_visible(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_rank(idata, var_names=names, ax=axes.ravel()[:panels], kind="vlines")
    for ax in axes.ravel()[:panels]:
        ax.set_xlabel("rank (all chains)")
    return _img(fig, f"rank plots, {title}",
                "Rank plots (one colour per chain): the draws of all chains are ranked together "
                "and each chain's rank histogram is drawn as its deviation from uniform. "
                "Well-mixed chains stay close to the black line; a chain stuck in one region "
                "shows long stems above and below it.")


def _sampler_figure(idata, post, outcomes: list, title: str) -> str:
    """Energy plot and the tau-sigma pair plot (per outcome) with divergences in red."""
    import arviz as az

    stats = getattr(idata, "sample_stats", None)
    has_energy = stats is not None and "energy" in stats
    div = None
    if stats is not None and "diverging" in stats:
        div = np.asarray(stats["diverging"].values, dtype=bool).reshape(-1)
    has_pair = "tau" in post and "sigma" in post
    panels = int(has_energy) + (len(outcomes) if has_pair else 0)
    if panels == 0:
        return ""
    fig, axes = _grid(min(3.6 * panels, 11), 3.1, 1, panels)
    axes = list(axes[0])
    if has_energy:
        ax = axes.pop(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            az.plot_energy(idata, ax=ax, legend=False, bfmi=False, textsize=8,
                           fill_color=ENERGY_COLORS, fill_alpha=(0.8, 0.6))
        from matplotlib.patches import Patch

        handles = [Patch(color=c, alpha=a, label=t) for c, a, t in
                   zip(ENERGY_COLORS, (0.8, 0.6), ("marginal energy", "energy transition"),
                       strict=True)]
        ax.legend(handles=handles, loc="upper left", frameon=False, fontsize=7.5)
        bfmi = az.bfmi(idata)
        ax.set_title(f"energy (E-BFMI per chain {', '.join(f'{b:.2f}' for b in bfmi)})",
                     fontsize=8.5)
    n_div = int(div.sum()) if div is not None else 0
    if has_pair:
        for ax, o in zip(axes, outcomes, strict=True):
            tau, sigma = _flat(_sel(post, "tau", o)), _flat(_sel(post, "sigma", o))
            idx = _thin_index(tau.size, 2 * PLOT_DRAWS)
            ax.scatter(tau[idx], sigma[idx], s=4, color="0.45", alpha=0.5, linewidths=0,
                       label="draws")
            if div is not None and div.size == tau.size and div.any():
                ax.scatter(tau[div], sigma[div], s=14, color="red", linewidths=0,
                           label=f"divergent ({int(div.sum())})")
                ax.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none")
            ax.set_xlabel("tau" + _suffix(o))
            ax.set_ylabel("sigma" + _suffix(o))
            ax.set_title("tau–sigma" + (f" [{o}]" if o is not None else ""))
    cap = ("Left: energy plot — the marginal energy distribution and the distribution of energy "
           "transitions should overlap (E-BFMI near 1); a narrow transition distribution means "
           "the sampler explores the tails slowly. Right: joint posterior of tau and sigma, ")
    cap += (f"{n_div} divergent transitions in red; divergences gathered at small tau signal "
            f"the funnel of the latent group effects." if n_div else
            "no divergent transitions.")
    if not has_energy:
        cap = cap.split("Right: ", 1)[-1].capitalize()
    return _img(fig, f"energy and tau-sigma pair plot, {title}", cap)


# ---------------------------------------------------------------------------- PPC, caterpillar
def _ppc(post, data: ClusteredData, outcomes: list, title: str, seed: int = 0) -> str:
    r"""Posterior predictive check of cluster means and within-cluster sds.

    For each (thinned) posterior draw, replicate data of the observed cluster sizes:
    M_l ~ N(0, tau^2), xbar_l = mu + M_l + (sigma / sqrt(n_l)) z and, independently
    (Cochran's theorem), s_l^2 = sigma^2 chi^2_{n_l - 1} / (n_l - 1) — exactly the cluster
    means and sds of X_lj ~ N(mu + M_l, sigma^2), at O(L) cost per draw and for every form.
    """
    if not all(v in post for v in ("mu", "tau", "sigma")):
        return ""
    rng = np.random.default_rng(seed)
    n_show = 60
    fig, axes = _grid(8.6, 2.8 * len(outcomes), len(outcomes), 2)
    rows = []
    for i, o in enumerate(outcomes):
        k = _response_index(data, o, i)
        n, xbar, ss = data.stats.column(k)
        mu, tau, sigma = (_flat(_sel(post, v, o)) for v in ("mu", "tau", "sigma"))
        # at most PPC_VALUES replicated clusters in all (memory and time O(1e7) at 1e5 clusters)
        idx = _thin_index(mu.size, max(PPC_MIN_DRAWS, min(PPC_DRAWS, PPC_VALUES // n.size)))
        mu, tau, sigma = mu[idx, None], tau[idx, None], sigma[idx, None]
        S, L = mu.shape[0], n.size
        xbar_rep = (mu + tau * rng.standard_normal((S, L))
                    + sigma / np.sqrt(n) * rng.standard_normal((S, L)))
        multi = n >= 2
        s_obs = np.sqrt(ss[multi] / (n[multi] - 1))
        dof = n[multi] - 1
        s_rep = sigma * np.sqrt(rng.chisquare(dof, size=(S, dof.size)) / dof)
        lab = _lab(o)
        for ax, obs, rep, what in ((axes[i, 0], xbar, xbar_rep, f"cluster means{lab}"),
                                   (axes[i, 1], s_obs, s_rep, f"within-cluster sds{lab}")):
            if obs.size == 0:
                ax.set_visible(False)
                continue
            ecdf_y = np.arange(1, obs.size + 1) / obs.size
            # all replicate ECDFs as one NaN-separated step line (one artist: fast to draw),
            # drawn through at most ECDF_POINTS ranks (the curve is then exact to 1/ECDF_POINTS)
            ranks = _thin_index(obs.size, ECDF_POINTS)
            xs = np.sort(rep[:n_show], axis=1)[:, ranks]
            obs_sorted = np.sort(obs)[ranks]
            ecdf_y = ecdf_y[ranks]
            xx = np.repeat(xs, 2, axis=1)[:, 1:]
            yy = np.repeat(ecdf_y, 2)[:-1][None, :].repeat(xs.shape[0], axis=0)
            nan = np.full((xs.shape[0], 1), np.nan)
            ax.plot(np.hstack([xx, nan]).ravel(), np.hstack([yy, nan]).ravel(),
                    color="#9ecae1", lw=0.6, alpha=0.7,
                    label=f"replicates ({xs.shape[0]} shown)")
            ax.step(obs_sorted, ecdf_y, where="post", color=COLORS["obs"], lw=2,
                    label="observed")
            ax.set_xlabel(what)
            ax.set_ylabel("ECDF over clusters")
            ax.legend(loc="lower right", frameon=False)
        # posterior predictive p-values P(T_rep >= T_obs) of spread statistics
        for stat, obs, rep in (("sd of cluster means", xbar, xbar_rep),
                               ("sd of within-cluster sds", s_obs, s_rep),
                               ("max within-cluster sd", s_obs, s_rep)):
            if obs.size < 2:
                continue
            f = np.max if stat.startswith("max") else (lambda a, axis=None: a.std(axis=axis))
            t_obs, t_rep = float(f(obs)), f(rep, axis=1)
            rows.append([stat + lab, _fmt(t_obs), _fmt(float(np.median(t_rep))),
                         _fmt(float(np.mean(t_rep >= t_obs)), 2)])
    cap = ("Posterior predictive check. Red: empirical distribution (ECDF) of the observed "
           "cluster means and within-cluster standard deviations; blue: the same for data "
           "replicated from posterior draws of (mu, tau, sigma) with the observed cluster sizes. "
           "The red curve should look like one of the blue ones.")
    table = (_table(["statistic T", "observed", "replicated (median)", "P(T_rep ≥ T_obs)"], rows)
             + "<p class='note'>Posterior predictive p-values near 0 or 1 (say below 0.02 or "
               "above 0.98) point to misfit: between-cluster spread the normal model does not "
               "reproduce, or within-cluster variances that differ across clusters.</p>"
             if rows else "")
    return _img(fig, f"posterior predictive check, {title}", cap) + table


def _caterpillar(idata, data: ClusteredData, outcomes: list, title: str) -> str:
    """Group effects sorted by posterior mean with 94% intervals; observed xbar_l - E[mu] marked.

    From the ``group_effect`` draws (HDIs) or, for very many groups, from the Rao-Blackwellised
    posterior mean and sd of :mod:`models.effects` (mean -/+ 1.88 sd).
    """
    from models.effects import SUMMARY_GROUP

    post = idata.posterior
    moments = None
    if "group_effect" in post:
        ge = post["group_effect"]
    elif SUMMARY_GROUP in idata.groups():
        moments = idata[SUMMARY_GROUP]
        ge = moments["mean"]
    else:
        return "<p class='note'>No group_effect draws in this posterior: no caterpillar plot.</p>"
    if "group" not in ge.dims:
        return ""
    G = ge.sizes["group"]
    height = min(max(2.2, 0.16 * G + 1.0), 9.0)
    longest = max((len(str(g)) for g in ge["group"].values), default=1) if G <= 60 else 0
    left = min(0.45 + 0.075 * longest, 2.6)
    k = len(outcomes)
    fig, axes = _grid(min(4.6 * k, 10) if k > 1 else 7.0, height + 0.25, 1, k, left=left,
                      wspace=left + 0.2, top=0.4)
    axes = axes[0]
    z = float(NormalDist().inv_cdf(0.5 + HDI_PROB / 2))
    for i, (ax, o) in enumerate(zip(axes, outcomes, strict=True)):
        if moments is None:
            da = _sel(post, "group_effect", o).transpose("chain", "draw", "group")
            draws = da.values.reshape(-1, G)
            mean = draws.mean(axis=0)
            lo, hi = _hdi_columns(draws)
            what = f"posterior mean, {HDI_PROB:.0%} HDI"
        else:
            mean = np.asarray(moments["mean"].values, dtype=np.float64)
            sd = np.asarray(moments["sd"].values, dtype=np.float64)
            lo, hi = mean - z * sd, mean + z * sd
            what = f"posterior mean ± {z:.2f} sd"
        labels = [str(g) for g in ge["group"].values]
        order = np.argsort(mean)
        y = np.arange(G)
        if G > CATERPILLAR_MAX:  # every k-th group in rank order, the extremes included
            keep = _thin_index(G, CATERPILLAR_MAX)
            order, y = order[keep], y[keep]
        ax.hlines(y, lo[order], hi[order], color="#4a6fa5", lw=1.2 if G <= 80 else 0.6)
        ax.plot(mean[order], y, "o", color="#1f3b63", ms=3.5 if G <= 80 else 1.5, label=what)
        k = _response_index(data, o, i)
        if "mu" in post and len(data.groups) == G:
            xbar = data.stats.mean[:, k] - float(_flat(_sel(post, "mu", o)).mean())
            ax.plot(xbar[order], y, "x", color=COLORS["obs"], ms=4 if G <= 80 else 2,
                    label="observed mean − E[mu]")
        ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
        if G <= 60:
            ax.set_yticks(y, [labels[j] for j in order])
        else:
            ax.set_yticks([])
            ax.set_ylabel(f"{G} groups, sorted")
        ax.set_xlabel("group effect" + _lab(o))
        ax.set_ylim(-0.7, G - 0.3)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    if moments is None:
        band = f"with {HDI_PROB:.0%} HDIs"
    else:
        band = (f"with intervals mean ± {z:.2f} sd ({HDI_PROB:.0%} under a normal approximation); "
                f"with {G:,} groups the report keeps each effect's exact posterior mean and sd "
                f"(Rao-Blackwellised over all draws) rather than its draws")
    if G > CATERPILLAR_MAX:
        band += f"; {CATERPILLAR_MAX:,} of the {G:,} groups drawn, evenly spaced in rank"
    cap = (f"Caterpillar plot of the group effects M_l ({data.group_name}), sorted by posterior "
           f"mean, {band}. Crosses are the raw cluster means minus the posterior "
           f"mean of mu: the distance from cross to dot is the shrinkage toward the grand mean.")
    return _img(fig, f"caterpillar plot of group effects, {title}", cap)


# ---------------------------------------------------------------------------- per-fit section
def _fit_section(fit: Fit, data: ClusteredData, estimates, summary, *, open_: bool) -> str:
    post = fit.idata.posterior
    outcomes = _outcomes(post)
    uni = outcomes == [None]
    ok = bool(fit.diagnostics.get("ok", False))
    tag = (f"<span class='tag {'ok' if ok else 'bad'}'>"
           f"{'diagnostics pass' if ok else 'diagnostics fail'}</span>")
    parts = [f"<details id='fit-{_e(fit.name)}'{' open' if open_ else ''}>"
             f"<summary>Fit: {_e(fit.name)}{tag}</summary>", _banner(fit)]
    parts.append("<h3>Parameters</h3>" + _param_table(_param_rows(fit, summary)))
    ests = estimates if uni else None
    if "icc" in post:
        parts.append("<h3>Intra-class correlation</h3>")
        parts.append(_icc_figure(post, outcomes, ests, fit.name))
        for o in outcomes:
            icc = _flat(_sel(post, "icc", o))
            flags = _boundary_flags(icc, ests)
            if flags["show"]:
                tau = _flat(_sel(post, "tau", o)) if "tau" in post else None
                parts.append(("" if uni else f"<h4>{_e(o)}</h4>") + _boundary_text(flags, icc, tau))
            else:
                parts.append(f"<p>P(ICC{_e(_suffix(o))} &lt; {BOUNDARY_ICC}) = "
                             f"{_fmt(flags['p_low'], 2)}: the posterior keeps away from the "
                             f"boundary tau = 0.</p>")
        parts.append("<h3>Design effect and reliability of cluster means</h3>")
        parts.append(_derived_table(post, data, outcomes))
    if not uni:
        parts.append(_matrices(post))
    parts.append("<h3>Sampler diagnostics</h3>")
    parts.append(_rank_figure(fit.idata, post, fit.name))
    parts.append(_sampler_figure(fit.idata, post, outcomes, fit.name))
    parts.append("<h3>Posterior predictive check</h3>")
    parts.append(_ppc(post, data, outcomes, fit.name))
    parts.append("<h3>Group effects</h3>")
    parts.append(_caterpillar(fit.idata, data, outcomes, fit.name))
    parts.append("</details>")
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------------------- comparison
def _ess_per_s(fit: Fit) -> float:
    sec = float((fit.seconds or {}).get("sample", math.nan))
    ess = float(fit.diagnostics.get("ess_bulk", math.nan))
    return ess / sec if sec > 0 else math.nan


def _agreement(comparison, name: str, fit: Fit) -> str:
    """Per-fit agreement from the comparison object, as far as its shape reveals it.

    Looks for ``comparison.verdicts[name]``, then for a row of ``comparison.table`` naming the
    fit (column form/model/fit/parameterisation/name) with a verdict column; falls back to the
    overall verdict (a fit failing diagnostics is never counted as agreeing).
    """
    if comparison is None:
        return "–"
    verdicts = getattr(comparison, "verdicts", None)
    if isinstance(verdicts, Mapping) and name in verdicts:
        return str(verdicts[name])
    table = getattr(comparison, "table", None)
    if table is not None and hasattr(table, "columns"):
        for col in ("form", "model", "fit", "parameterisation", "name"):
            if col not in table.columns:
                continue
            rows = table[table[col].astype(str) == name]
            for vcol in ("verdict", "status", "agreement", "agrees", "passed"):
                if vcol in table.columns and len(rows):
                    vals = [str(v) for v in dict.fromkeys(rows[vcol].tolist())]
                    return ", ".join(vals)
    if not fit.ok:
        return "unreliable here"
    return "agrees" if getattr(comparison, "passed", False) else "see comparison"


def _recommendation(fits: Mapping[str, Fit], comparison) -> tuple[str, str | None]:
    """Tell the user which forms to trust; also return the recommended form's name."""
    verdicts = getattr(comparison, "verdicts", None) or {}
    # a form is trusted when its diagnostics pass and it does not disagree with the others
    good = [n for n, f in fits.items()
            if f.ok and not str(verdicts.get(n, "agrees")).upper().startswith("DISAGREE")]
    bad = [n for n in fits if n not in good]
    bad_text = "; ".join(
        f"{n} ({', '.join(fits[n].diagnostics.get('problems', [])) or verdicts.get(n, 'fails')})"
        for n in bad)
    if not good:
        advice = []
        if any(f.diagnostics.get("divergences", 0) for f in fits.values()):
            advice.append("for divergences, raise target_accept (e.g. 0.95) or use a form "
                          "without latent group effects (marginal, sufficient)")
        if any(not f.diagnostics.get("divergences", 0) for f in fits.values()):
            advice.append("for low ESS or high r_hat alone, run more draws and tuning")
        return ("<b>No form passed the diagnostics gate</b>, so none of these posteriors is "
                f"trustworthy as it stands: {_e('; '.join(advice))}. Problems: {_e(bad_text)}.",
                None)
    best = max(good, key=lambda n: (np.nan_to_num(_ess_per_s(fits[n]), nan=-1.0)))
    text = (f"<b>Trust {_e(', '.join(good))}</b> for these data: "
            f"{'they pass' if len(good) > 1 else 'it passes'} the diagnostics gate")
    passed = getattr(comparison, "passed", None)
    if comparison is not None and len(good) > 1:
        text += (" and agree within Monte Carlo error" if passed else
                 ", but the comparison did not pass — read its table below before relying on "
                 "any of them")
    text += (f". The most efficient is <b>{_e(best)}</b> "
             f"({_fmt(_ess_per_s(fits[best]), 3)} effective draws per second of sampling).")
    if bad:
        text += f" Do not use {_e(bad_text)} here."
    return text, best


def _comparison_section(fits: Mapping[str, Fit], comparison, estimates) -> tuple[str, str | None]:
    rows = []
    for name, f in fits.items():
        s, d = f.seconds or {}, f.diagnostics or {}
        eps = _ess_per_s(f)
        rows.append([name, *(_fmt(s.get(k), 3) for k in ("build", "compile", "sample", "total")),
                     ("html", _ess(d.get("ess_bulk")),
                      "bad" if (d.get("ess_bulk") or 0) < GATE["ess_bulk"] else ""),
                     _fmt(eps, 3),
                     _num(d.get("divergences", 0), bad=d.get("divergences", 0) > 0),
                     _num(d.get("r_hat"), bad=d.get("r_hat", 1.0) > GATE["r_hat"]),
                     ("html", "yes" if f.ok else "<b>no</b>", "good" if f.ok else "bad"),
                     _agreement(comparison, name, f)])
    text, best = _recommendation(fits, comparison)
    out = ['<h2 id="comparison">Parameterisation comparison</h2>',
           f'<div class="banner {"ok" if best else "bad"}">{text}</div>',
           _table(["form", "build s", "compile s", "sample s", "total s", "min ESS bulk",
                   "ESS bulk / s", "divergences", "max r_hat", "diagnostics ok", "agreement"],
                  rows),
           "<p class='note'>ESS bulk / s is the smallest bulk effective sample size over mu, "
           "tau, sigma and the ICC divided by the sampling time (compilation excluded; it is "
           "paid once per model).</p>"]
    out.append(_overlay_figure(fits, estimates))
    if comparison is not None:
        passed = bool(getattr(comparison, "passed", False))
        name = getattr(comparison, "name", "posterior comparison")
        out.append(f"<h3>Posterior agreement: {_e(name)}</h3>")
        out.append(f'<div class="banner {"ok" if passed else "bad"}"><strong>'
                   f'{"Passed" if passed else "Not passed"}</strong></div>')
        text_ = getattr(comparison, "text", "")
        if text_:
            out.append(f"<pre>{_e(text_)}</pre>")
        table = getattr(comparison, "table", None)
        if table is not None and hasattr(table, "to_html") and len(table):
            out.append(f"<details><summary>All {len(table)} comparisons (z = difference / "
                       "combined MCSE)</summary>")
            out.append(table.to_html(index=False, border=0, na_rep="–",
                                     float_format=lambda v: _fmt(v, 3), escape=True))
            out.append("</details>")
    return "\n".join(out), best


def _overlay_figure(fits: Mapping[str, Fit], estimates) -> str:
    """ICC posteriors of all fits on one axis (per outcome)."""
    import arviz as az

    posts = {n: f.idata.posterior for n, f in fits.items() if "icc" in f.idata.posterior}
    if len(posts) < 2:
        return ""
    outcomes = _outcomes(next(iter(posts.values())))
    fig, axes = _grid(min(4.6 * len(outcomes), 10) + 2.2, 3.0, 1, len(outcomes), right=2.3)
    axes = axes[0]
    for ax, o in zip(axes, outcomes, strict=True):
        xs = {n: _flat(_sel(p, "icc", o)) for n, p in posts.items()}
        top = float(min(1.0, max(max(np.quantile(x, 0.995) for x in xs.values()) * 1.05, 0.02)))
        some_ok = any(fits[n].ok for n in xs)
        for n, x in xs.items():
            grid, pdf = az.kde(x, custom_lims=(0.0, 1.0))  # reflected at 0 and 1
            ls = ":" if some_ok and not fits[n].ok else "-"
            ax.plot(grid, pdf, lw=1.5, ls=ls,
                    label=n + ("" if fits[n].ok else " (fails diagnostics)"))
        if o is None:
            for key, e in (estimates or {}).items():
                ax.axvline(e.icc, color=COLORS.get(key, "k"), ls="--", lw=1.0,
                           label=f"{key.upper()} {e.icc:.3f}")
        ax.set_xlim(0, top)
        ax.set_xlabel("ICC" + _suffix(o))
        ax.set_ylabel("posterior density")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _img(fig, "ICC posteriors of all parameterisations",
                "The ICC posterior from each parameterisation (kernel density estimates with "
                "boundary correction): the same model, so the curves should coincide up to "
                "Monte Carlo error. Dotted: forms failing diagnostics (when others pass).")


# ---------------------------------------------------------------------------- page
def _glance(data: ClusteredData, fits: Mapping[str, Fit], best: str | None,
            estimates) -> str:
    """Headline numbers from the recommended (or only) fit."""
    if not fits:
        return ""
    name = best or next(iter(fits))
    post = fits[name].idata.posterior
    cards = []
    for o in _outcomes(post):
        for var, label in (("icc", "ICC"), ("tau", "tau (between sd)"),
                           ("sigma", "sigma (within sd)")):
            if var not in post:
                continue
            x = _flat(_sel(post, var, o))
            cards.append((f"{label}{_suffix(o)}", _fmt(x.mean(), 3), _ci(*_hdi(x), 3)))
    if estimates and "reml" in estimates:
        e = estimates["reml"]
        cards.append(("REML ICC", f"{e.icc:.3f}", "on the boundary tau = 0" if e.boundary else ""))
    html_cards = "".join(f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}"
                         f"</div><div class='k'>{_e(s)}</div></div>" for k, v, s in cards)
    ok = fits[name].ok
    return ("<h2 id='glance'>At a glance</h2>"
            f"<p>From the <b>{_e(name)}</b> fit (posterior mean, {HDI_PROB:.0%} HDI below); its "
            f"sampler diagnostics {'pass' if ok else '<b>fail</b> — see its section'}.</p>"
            f"<div class='glance'>{html_cards}</div>")


def render_report(
    *,
    data: ClusteredData,
    fits: Mapping[str, Fit],
    estimates: Mapping[str, PointEstimate] | None,
    comparison=None,
    summary: dict | None = None,
) -> str:
    """One self-contained HTML page (inline CSS, base64 PNG images) reporting the fits.

    Parameters
    ----------
    data : ClusteredData
        The data that were fitted.
    fits : dict of str to Fit
        One entry per parameterisation; posteriors hold ``mu``, ``tau``, ``sigma``, ``icc`` and
        ideally ``group_effect`` (dim ``group``); multivariate ones add dim ``outcome`` and
        ``V``, ``Sigma``, ``corr_between``, ``corr_within`` (dims ``outcome``, ``outcome_bis``).
    estimates : dict of str to PointEstimate, optional
        ML/REML estimates (univariate), marked on the ICC posterior.
    comparison : object, optional
        A check result with ``name``, ``passed``, ``table`` (DataFrame) and ``text``.
    summary : dict, optional
        The summary.json contents; its parameter numbers are shown when present, so the page
        and the file agree exactly.

    Returns
    -------
    str
        The HTML page. Nothing in it refers to an external resource.
    """
    t0 = time.perf_counter()
    fits = dict(fits or {})
    with rc_context(RC), np.errstate(all="ignore"):
        data_html, _ = _data_section(data)
        comp_html, best = ("", None)
        if len(fits) > 1:
            comp_html, best = _comparison_section(fits, comparison, estimates)
        elif fits:
            only = next(iter(fits))
            best = only if fits[only].ok else None
        est_html = _estimates_section(estimates) if estimates else ""
        open_name = best or (next(iter(fits)) if fits else None)
        fit_html = [_fit_section(f, data, estimates, summary, open_=(n == open_name or
                                                                    len(fits) == 1))
                    for n, f in fits.items()]
        glance = _glance(data, fits, best, estimates)
    nav = ["<a href='#glance'>At a glance</a>" if glance else "", "<a href='#data'>Data</a>",
           "<a href='#estimates'>ML/REML</a>" if est_html else "",
           "<a href='#comparison'>Comparison</a>" if comp_html else ""]
    nav += [f"<a href='#fit-{_e(n)}'>Fit: {_e(n)}</a>" for n in fits]
    responses = ", ".join(data.responses)
    title = f"varcomp report: {data.name} ({responses} by {data.group_name})"
    fits_html = ('<h2 id="fits">Fits</h2><p class="note">One section per parameterisation; the '
                 'recommended one is open. Click a heading to open or close it.</p>'
                 + "\n".join(fit_html)) if fits else "<p>No fits.</p>"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join([
        f"<h1>{_e(title)}</h1>",
        f"<p class='sub'>Bayesian one-way variance-components model · {len(fits)} fit(s): "
        f"{_e(', '.join(fits)) or '–'} · generated {stamp}</p>",
        "<nav>" + "".join(x for x in nav if x) + "</nav>",
        "".join(f"<p class='note'>Not fitted: {_e(n)}, because {_e(why)}.</p>"
                for n, why in ((summary or {}).get("skipped") or {}).items()),
        glance, data_html, est_html, comp_html, fits_html,
        f"<footer>Rendered in {time.perf_counter() - t0:.1f} s by varcomp. Intervals are "
        f"{HDI_PROB:.0%} highest-density intervals. Diagnostics gate: r_hat ≤ {GATE['r_hat']}, "
        f"ESS bulk and tail ≥ {GATE['ess_bulk']:.0f}, no divergences, E-BFMI ≥ "
        f"{GATE['ebfmi']}.</footer>",
    ])
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def write_report(
    path: str | Path,
    *,
    data: ClusteredData,
    fits: Mapping[str, Fit],
    estimates: Mapping[str, PointEstimate] | None,
    comparison=None,
    summary: dict | None = None,
) -> Path:
    """Render the report (see :func:`render_report`) and write it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(data=data, fits=fits, estimates=estimates, comparison=comparison,
                         summary=summary)
    path.write_text(page, encoding="utf-8")
    return path
