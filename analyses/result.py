"""What :func:`varcomp.fit` and :func:`varcomp.compare` return: tables, figures, files, display.

A :class:`Result` wraps the :class:`analyses.fit.FitResult` of a fit; every table it gives is
read from that fit's summary (``summary.json``'s contents: ArviZ's ``az.summary``, psens,
ML/REML), every figure is the report's (:mod:`analyses.report.figures`) and its rich display is
the report's at-a-glance cards (:func:`analyses.report.render.render_card`), so a notebook, the
report and summary.json show the same numbers. A :class:`Comparison` wraps
:class:`analyses.compare.CompareResult` likewise.
"""

from __future__ import annotations

from pathlib import Path

from varcomp.models.errors import DataError

__all__ = ["PLOT_KINDS", "SHARES", "Comparison", "Result"]

SHARES = ("icc", "icc_unadjusted", "icc_data", "icc_trigamma", "vpc", "vpc_mean_variance",
          "r2_marginal", "r2_conditional")
"""The shares of variance :meth:`Result.shares` reports (those the family has)."""
PLOT_KINDS = ("icc", "vpc", "coef", "ranks", "sampler", "ppc", "caterpillar", "sizes")
"""The report's figures :meth:`Result.plot` draws (those the fit has)."""


def _hdi_columns() -> tuple[str, str]:
    """ArviZ's names of the 94% HDI's ends: ``hdi_3%``, ``hdi_97%``."""
    from varcomp.analyses.fit import HDI_PROB

    return f"hdi_{100 * (1 - HDI_PROB) / 2:g}%", f"hdi_{100 * (1 + HDI_PROB) / 2:g}%"


def _base(label: str) -> str:
    """``vpc`` of ``vpc[batch]``."""
    return label.split("[", 1)[0]


class Result:
    """One fit (one or several forms) of :func:`varcomp.fit`.

    ``idata`` is the recommended form's InferenceData, ``fits`` every form's; ``summary()``,
    ``shares()``, ``estimates()`` and ``diagnostics()`` are pandas DataFrames; ``plot(kind)``
    draws one of the report's figures; ``report(path)`` writes what ``varcomp fit --out``
    writes. ``fit_result`` is the underlying :class:`analyses.fit.FitResult`.
    """

    def __init__(self, fit_result):
        self.fit_result = fit_result

    # ------------------------------------------------------------------ what was fitted
    @property
    def data(self):
        """The validated data (:class:`models.ClusteredData`)."""
        return self.fit_result.data

    @property
    def family(self) -> str:
        """The model family's name: oneway, multivariate, regression, nested or crossed."""
        return self.fit_result.family.name

    @property
    def form(self) -> str:
        """The recommended form: the only one fitted, or the report's pick among several.

        Among several, the most efficient form that passes the diagnostics gate and that the
        comparison of forms does not reject (:func:`analyses.report.compute.recommendation`);
        the first fitted when none does.
        """
        from varcomp.analyses.report.compute import recommendation

        fits = self.fit_result.fits
        best = recommendation(fits, self.fit_result.comparison)["best"] if len(fits) > 1 \
            else None
        return best or next(iter(fits))

    @property
    def idata(self):
        """The recommended form's ``arviz.InferenceData``."""
        return self.fit_result.fits[self.form].idata

    @property
    def fits(self) -> dict:
        """Every fitted form's ``arviz.InferenceData``, by form."""
        return self.fit_result.idata

    @property
    def summary_dict(self) -> dict:
        """The summary.json contract (docs/report.md), as a dict."""
        return self.fit_result.summary

    def _fit_summary(self, form: str | None) -> tuple[str, dict]:
        name = form or self.form
        fits = self.fit_result.summary["fits"]
        if name not in fits:
            raise DataError(f"no fit of form '{name}': fitted {', '.join(fits)}")
        return name, fits[name]

    # ------------------------------------------------------------------ tables
    def summary(self, form: str | None = None):
        """ArviZ's summary table (``az.summary``, 94% HDI) of a form, summary.json's names as index.

        The numbers of summary.json and the report: one row per scalar (``mu``, ``beta[x]``,
        ``tau[batch]``, ``vpc[residual]``, ...), columns ``mean``, ``sd``, ``hdi_3%``,
        ``hdi_97%``, ``mcse_mean``, ``ess_bulk``, ``ess_tail``, ``r_hat``.
        """
        import pandas as pd

        lo, hi = _hdi_columns()
        _, fs = self._fit_summary(form)
        keys = {"mean": "mean", "sd": "sd", lo: "hdi_low", hi: "hdi_high",
                "mcse_mean": "mcse_mean", "ess_bulk": "ess_bulk", "ess_tail": "ess_tail",
                "r_hat": "r_hat"}
        rows = {label: {col: row[key] for col, key in keys.items()}
                for label, row in fs["params"].items()}
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(keys), dtype=float)
        frame.index.name = "parameter"
        return frame

    def shares(self, form: str | None = None):
        """The shares of variance: ICC, VPC and R^2 rows of :meth:`summary`, with REML's value.

        Those of :data:`SHARES` the family has: for a GLMM also ``icc_data`` (and Poisson's
        ``icc_trigamma``), for random slopes ``vpc_mean_variance``.

        Columns ``mean``, ``sd``, ``hdi_3%``, ``hdi_97%`` and, where the family has ML/REML
        estimates of the share, ``reml``.
        """
        lo, hi = _hdi_columns()
        table = self.summary(form)
        frame = table.loc[[i for i in table.index if _base(i) in SHARES],
                          ["mean", "sd", lo, hi]].copy()
        reml = self.estimates()
        if "reml" in reml.columns:
            values = [reml["reml"].get(i) for i in frame.index]
            if any(v is not None for v in values):
                frame["reml"] = [float("nan") if v is None else float(v) for v in values]
        return frame

    def estimates(self):
        """ML and REML estimates (lme4's), one row per parameter, one column per method."""
        import pandas as pd

        from varcomp.analyses.report.compute import estimates_table

        table = estimates_table(self.fit_result.estimates)
        if table is None:
            return pd.DataFrame(index=pd.Index([], name="parameter"))
        frame = pd.DataFrame({m: [r["values"].get(m) for r in table["rows"]]
                              for m in table["methods"]},
                             index=pd.Index([r["label"] for r in table["rows"]],
                                            name="parameter"))
        return frame

    def diagnostics(self):
        """Per form: the gate's verdict, its problems, r_hat, ESS, divergences, E-BFMI, seconds."""
        import pandas as pd

        rows = {}
        for name, fs in self.fit_result.summary["fits"].items():
            d = fs["diagnostics"]
            rows[name] = {"ok": fs["diagnostics_ok"], "r_hat": d["r_hat"],
                          "ess_bulk": d["ess_bulk"], "ess_tail": d["ess_tail"],
                          "divergences": fs["divergences"], "ebfmi": d["ebfmi"],
                          "treedepth_hits": d["treedepth_hits"],
                          "seconds": fs["seconds"]["total"],
                          "problems": "; ".join(fs["problems"])}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "form"
        return frame

    # ------------------------------------------------------------------ figures, files
    def plot(self, kind: str = "icc", form: str | None = None):
        """One of the report's figures of a form; returns its matplotlib Axes.

        ``kind``: ``icc`` (posterior with HDI and ML/REML), ``vpc`` (variance shares),
        ``coef`` (fixed effects), ``ranks`` (rank plots), ``sampler`` (energy and tau-sigma
        pairs), ``ppc`` (predictive check), ``caterpillar`` (group effects of the first
        factor), ``sizes`` (cluster sizes). One Axes, or an array of them for a figure of
        several panels; the figure (``ax.figure``) is not managed by pyplot: show it with
        ``display(ax.figure)`` or save it with ``ax.figure.savefig(...)``.
        """
        import numpy as np
        from matplotlib import rc_context

        from varcomp.analyses.report import compute, figures, page

        if kind not in PLOT_KINDS:
            raise DataError(f"unknown plot kind {kind!r}: choose one of {', '.join(PLOT_KINDS)}")
        name, _ = self._fit_summary(form)
        r = self.fit_result
        outcomes = list(r.family.outcomes(r.data))
        with rc_context(figures.RC), np.errstate(all="ignore"):
            if kind == "sizes":
                fig = figures.sizes_figure(compute.data_summary(r.data, r.family))
            elif kind == "icc":
                if "icc" not in r.family.summary_vars:
                    raise DataError(f"the {r.family.name} family reports no ICC: plot 'vpc'")
                fig = figures.icc_figure(r.fits[name], r.estimates, outcomes=outcomes)
            else:
                view = page.fit_view(r, name, outcomes, open_=True)
                mixed = view["mixed"] or {}
                made = {"vpc": lambda: mixed.get("components") and figures.vpc_figure(
                            mixed["components"]),
                        "coef": lambda: mixed.get("fixed") and mixed["fixed"]["plotted"] and
                        figures.coef_figure(mixed["fixed"]),
                        "ranks": lambda: view["ranks"] and figures.rank_figure(view["ranks"]),
                        "sampler": lambda: figures.sampler_figure(view["sampler"]),
                        "ppc": lambda: view["ppc"] and figures.ppc_figure(view["ppc"]),
                        "caterpillar": lambda: view["caterpillars"] and
                        figures.caterpillar_figure(view["caterpillars"][0])}
                fig = made[kind]()
                if not fig:
                    raise DataError(f"the {name} fit of this {r.family.name} model has no "
                                    f"{kind!r} figure")
        axes = [ax for ax in fig.axes if ax.get_visible()]
        return axes[0] if len(axes) == 1 else np.array(axes, dtype=object)

    def report(self, path) -> Path:
        """Write summary.json, report.html and ``<form>.nc`` into folder ``path``; its path.

        The files ``varcomp fit --out path`` writes, atomically; a folder varcomp did not write
        is refused.
        """
        from varcomp.analyses.fit import write_outputs
        from varcomp.analyses.outputs import resolve_out

        source = Path(self.data.source)
        inputs = [source] if source.is_file() else []
        resolve_out(path, inputs=inputs)
        return write_outputs(self.fit_result, Path(path), inputs=inputs)

    def to_json(self) -> str:
        """summary.json's text."""
        from varcomp.analyses.outputs import json_text

        return json_text(self.fit_result.summary)

    # ------------------------------------------------------------------ display
    def _title(self) -> tuple[str, str]:
        from varcomp.analyses.report.compute import design_summary

        d = self.data
        design = design_summary(d)  # the report's reading of a formula's design
        what = design["formula"] if design else f"{', '.join(d.responses)} by {d.group_name}"
        return (f"varcomp {self.family} fit: {what}",
                f"{d.source}: {d.n_obs:,} rows, {d.n_groups:,} clusters of '{d.group_name}'"
                + (f", {d.dropped_rows:,} rows dropped" if d.dropped_rows else ""))

    def __repr__(self) -> str:
        lo, hi = _hdi_columns()
        title, sub = self._title()
        lines = [f"<{title}>", f"  {sub}"]
        head = self.fit_result.family.headline
        for name, fs in self.fit_result.summary["fits"].items():
            shares = [f"{label} {row['mean']:.3f} [{row['hdi_low']:.3f}, {row['hdi_high']:.3f}]"
                      for label, row in fs["params"].items() if _base(label) == head]
            verdict = "ok" if fs["diagnostics_ok"] else "NOT TRUSTED: " + "; ".join(
                fs["problems"])
            mark = "*" if name == self.form else " "
            more = " ..." if len(shares) > 4 else ""
            lines.append(f"{mark} {name}: {', '.join(shares[:4])}{more}   diagnostics {verdict}")
        lines.append("  (* recommended; posterior mean [94% HDI]; .summary(), .shares(), "
                     ".plot(), .report(path))")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from varcomp.analyses.report.render import render_card

        title, sub = self._title()
        return render_card(self.fit_result, self.form, title=title, sub=sub)


class Comparison:
    """Models ranked by leave-one-cluster-out elpd (:func:`varcomp.compare`).

    ``table()`` is compare.json's table as a DataFrame (best first); ``report(path)`` writes
    compare.json and compare.html as ``varcomp compare --out path`` does. ``compare_result``
    is the underlying :class:`analyses.compare.CompareResult`.
    """

    def __init__(self, compare_result):
        self.compare_result = compare_result

    def as_dict(self) -> dict:
        """compare.json's contents (docs/report.md)."""
        return self.compare_result.as_dict()

    def table(self):
        """One row per model (best first): formula, elpd, se, elpd_diff, dse, Pareto k max, ..."""
        import pandas as pd

        rows = [{k: v for k, v in m.items() if k != "pareto_k"}
                for m in self.as_dict()["models"]]
        frame = pd.DataFrame(rows).set_index("name")
        frame["exact_clusters"] = [", ".join(x) for x in frame["exact_clusters"]]
        return frame

    def report(self, path) -> Path:
        """Write compare.json and compare.html into folder ``path``; returns its path."""
        from varcomp.analyses.compare import write_compare
        from varcomp.analyses.outputs import resolve_out

        resolve_out(path)
        return write_compare(self.compare_result, Path(path))

    def to_json(self) -> str:
        """compare.json's text."""
        from varcomp.analyses.outputs import json_text

        return json_text(self.as_dict())

    def _title(self) -> str:
        d = self.as_dict()
        return (f"varcomp comparison of {len(d['models'])} models by leave-one-cluster-out "
                f"elpd ({d['n_clusters']} clusters of '{d['group']}'; higher is better)")

    def __repr__(self) -> str:
        cols = ["formula", "elpd", "se", "elpd_diff", "dse", "pareto_k_max"]
        return f"<{self._title()}>\n{self.table()[cols].to_string(float_format='{:.2f}'.format)}"

    def _repr_html_(self) -> str:
        import html

        cols = ["formula", "elpd", "se", "elpd_diff", "dse", "pareto_k_max", "exact_clusters",
                "diagnostics_ok"]
        table = self.table()[cols].to_html(float_format="{:.2f}".format, escape=True)
        note = html.escape(self.as_dict()["note"])
        return (f"<div class='varcomp-compare'><b>{html.escape(self._title())}</b>{table}"
                f"<div style='color:#57606a;font-size:12px'>{note}</div></div>")
