"""The page: the report's data and images through jinja2 templates, the style sheet inlined.

:mod:`~analyses.report.compute` gives the data, :mod:`~analyses.report.figures` the images and
``templates/`` the HTML.

Everything written into the HTML passes jinja2's autoescape: user text (column names, group
labels, file names) cannot become markup. The only values marked safe are the package's own
style sheet; images are data URIs of base64 PNG built here, which escaping leaves unchanged.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["render_card", "render_compare", "render_report", "write_report"]


# ---------------------------------------------------------------------------- number formats
def fmt(x: object, digits: int = 4) -> str:
    """A number to ``digits`` significant digits without scientific notation where readable."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "∞" if v == math.inf else "–" if math.isnan(v) else "−∞"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    if mag >= 6 or mag < -4:
        return f"{v:.{digits - 1}e}"
    return f"{v:,.{max(digits - 1 - mag, 0)}f}"


def ess(v: object) -> str:
    """An effective sample size as a whole number."""
    try:
        return f"{round(float(v)):,}" if math.isfinite(float(v)) else "–"
    except (TypeError, ValueError):
        return "–"


def ci(ends: tuple, digits: int = 3) -> str:
    """An interval with both ends at the precision of the larger one (no 1e-06)."""
    lo, hi = ends
    try:
        big = max(abs(float(lo)), abs(float(hi)))
    except (TypeError, ValueError):
        return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"
    if not math.isfinite(big) or big == 0 or big >= 1e6 or big < 1e-4:
        return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"
    dec = max(digits - 1 - math.floor(math.log10(big)), 0)
    return f"[{float(lo):,.{dec}f}, {float(hi):,.{dec}f}]"


def sentence(text: str) -> str:
    """``text`` with its first letter upper-case (the rest as it is: names keep their case)."""
    return text[:1].upper() + text[1:]


def cell(x: object) -> str:
    """A table cell of a check's table: numbers to 3 digits, text as it is."""
    if isinstance(x, str):
        return x
    return fmt(x, 3)


# ---------------------------------------------------------------------------- templates
@cache
def environment():
    """The jinja2 environment over the package's templates (autoescape on, strict names)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("varcomp.analyses.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, ess=ess, ci=ci, cell=cell, sentence=sentence)
    return env


@cache
def style_sheet():
    """The package's ``static/style.css``, marked safe (our own file) for the ``<style>`` tag."""
    from markupsafe import Markup

    return Markup(resources.files("varcomp.analyses.report").joinpath("static", "style.css")
                  .read_text(encoding="utf-8"))


def render_report(result, reliability: dict | None = None) -> str:
    """One self-contained HTML page (inline CSS, base64 PNG images) reporting a fit.

    Parameters
    ----------
    result : analyses.fit.FitResult
        The data, the family, the fits, ML/REML estimates, the comparison of forms, the
        summary.json contents (whose parameter table the page shows) and the skipped forms.
    reliability : dict, optional
        ``varcomp reliability``'s tables (:meth:`analyses.reliability.Reliability.as_dict`,
        reliability.json's contents): the page then opens with a reliability section (the ICCs,
        the G and D studies, the D-study curve, the fewest raters for the goal).

    Returns
    -------
    str
        The HTML page. Nothing in it refers to an external resource.
    """
    from varcomp.analyses.report import figures, page

    t0 = time.perf_counter()
    view = page.report(result, reliability)
    images = figures.draw(view)
    data = result.data
    design = view["data"]["design"]
    title = (f"varcomp report: {data.name} ({design['formula']})" if design else
             f"varcomp report: {data.name} ({', '.join(data.responses)} by {data.group_name})")
    return environment().get_template("report.html.j2").render(
        v=view, img=images, title=title, css=style_sheet(),
        stamp=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - t0) + "\n"


def render_card(result, name: str | None, *, title: str, sub: str) -> str:
    """A fit at a glance as an HTML fragment (a notebook's rich display of a result).

    The report's at-a-glance cards of fit ``name`` (:func:`page.glance`, the same template)
    and every fit's diagnostics verdict.
    """
    from varcomp.analyses.report import compute, page

    verdicts = [{"name": n, "ok": f.ok, "problems": list(f.diagnostics.get("problems", []))}
                for n, f in result.fits.items()]
    return environment().get_template("card.html.j2").render(
        title=title, sub=sub, gl=page.glance(result, name), verdicts=verdicts,
        hdi_pct=f"{compute.HDI_PROB:.0%}")


def write_report(path: str | Path, result) -> Path:
    """Render the report (see :func:`render_report`) and write it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
    return path


def render_compare(table: dict) -> str:
    """compare.html from :meth:`analyses.compare.CompareResult.as_dict` (self-contained)."""
    title = f"varcomp compare: {len(table['models'])} models of '{table['group']}' clusters"
    return environment().get_template("compare.html.j2").render(
        c=table, title=title, css=style_sheet(), figure="",
        stamp=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")) + "\n"
