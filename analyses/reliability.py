"""``varcomp reliability``: rater ICCs, the G study and the D study from two fits.

The user's columns are copied into a frame with fixed names (``y``, ``target``, ``rater``,
``occasion``), so the formulas fitted are our own text, never built from column names:

- two-way (or three-facet) random model ``y ~ 1 + (1|target) + (1|rater)``, plus
  ``(1|target:rater)`` when some target has several ratings by one rater (otherwise the
  interaction is confounded with the residual, as in Shrout & Fleiss 1979); with an occasion
  facet every facet and two-way interaction (the three-way one is the residual);
- the one-way model ``y ~ 1 + (1|target)`` for ICC(1) (each target its own raters).

The coefficients are :mod:`models.reliability`'s, from the posterior draws and from the REML
estimates (the plug-in column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from varcomp.analyses.report.compute import hdi
from varcomp.models.errors import DataError
from varcomp.models.reliability import (
    MEANINGS,
    d_study,
    design_k,
    g_study,
    icc_forms,
    smallest_n,
)
from varcomp.models.sampling import HDI_PROB

__all__ = ["Reliability", "frame_of", "plugin", "reliability", "reml_components", "text",
           "write_reliability"]

DEFAULT_D_STUDY = (1, 2, 4, 8)


@dataclass
class Reliability:
    """What :func:`reliability` computed: fits, draws, tables (``as_dict`` for JSON)."""

    twoway: object  # varcomp.Result of the two-way (three-facet) model
    oneway: object  # varcomp.Result of the one-way model
    columns: dict  # facet -> the user's column name
    k: float
    draws: dict  # component -> variance draws
    reml: dict  # component -> REML variance
    reml_oneway: tuple  # the one-way model's REML (sigma_t^2, sigma_w^2)
    d_values: tuple
    goal: float
    goal_prob: float
    formula: str
    notes: list = field(default_factory=list)

    def coefficients(self) -> list[dict]:
        """One row per ICC: name, meaning, posterior mean, HDI, REML plug-in."""
        post = icc_forms(self.draws, self.k, _oneway(self.oneway))
        plug = icc_forms(self.reml, self.k, self.reml_oneway)
        return [_row(name, post[name], float(plug[name]), meaning=MEANINGS[name])
                for name in MEANINGS]

    def g_table(self) -> list[dict]:
        """The G study: each component's variance and share, posterior and REML."""
        shares, plug = g_study(self.draws), g_study(self.reml)
        rows = []
        for c, v in self.draws.items():
            rows.append({"component": _label(c, self.columns), **_summ("variance", v),
                         "variance_reml": float(self.reml[c]), **_summ("share", shares[c]),
                         "share_reml": float(plug[c])})
        return rows

    def d_table(self) -> list[dict]:
        """The D study: E rho^2 and Phi for each n' raters (one occasion each)."""
        rows = []
        for n in self.d_values:
            e, p = d_study(self.draws, {"rater": n})
            e0, p0 = d_study(self.reml, {"rater": n})
            rows.append({"n_raters": n, **_summ("erho2", e), "erho2_reml": float(e0),
                         **_summ("phi", p), "phi_reml": float(p0)})
        return rows

    def reach(self) -> dict:
        """The fewest raters for Phi and E rho^2 to reach the goal with the stated probability."""
        return {"goal": self.goal, "probability": self.goal_prob,
                "phi": smallest_n(self.draws, self.goal, self.goal_prob, kind="phi"),
                "erho2": smallest_n(self.draws, self.goal, self.goal_prob, kind="erho2")}

    def curve(self) -> list[dict]:
        """The D-study figure's points: Phi and E rho^2 for n' = 1 .. max(d_values) raters."""
        ns = np.unique(np.r_[np.arange(1, max(self.d_values) + 1), self.d_values])
        rows = []
        for n in ns:
            e, p = d_study(self.draws, {"rater": int(n)})
            rows.append({"n_raters": int(n), **_summ("erho2", e), **_summ("phi", p)})
        return rows

    def as_dict(self) -> dict:
        """reliability.json's contents (also the report's reliability section)."""
        return {"columns": self.columns, "k": self.k, "hdi_prob": HDI_PROB,
                "coefficients": self.coefficients(), "g_study": self.g_table(),
                "d_study": self.d_table(), "curve": self.curve(), "reach": self.reach(),
                "notes": self.notes, "formula": self.formula}


def _summ(name: str, x) -> dict:
    lo, hi = hdi(x)
    return {f"{name}_mean": float(np.mean(x)), f"{name}_hdi": [lo, hi]}


def _row(name: str, x, plug: float, *, meaning: str) -> dict:
    return {"name": name, "meaning": meaning, **_summ("posterior", x), "reml": plug}


def _label(component: str, columns: dict) -> str:
    if component == "residual":
        return "residual"
    return ":".join(columns[f] for f in component.split(":"))


def _oneway(result):
    post = result.idata.posterior
    return (post["tau"].values.ravel() ** 2, post["sigma"].values.ravel() ** 2)


def _components(result) -> dict:
    """Posterior variance draws by component of a crossed fit."""
    post = result.idata.posterior
    draws = {str(f): post["tau"].sel(factor=f).values.ravel() ** 2
             for f in post["tau"]["factor"].values}
    draws["residual"] = post["sigma"].values.ravel() ** 2
    return draws


def frame_of(data, columns: dict):
    """The ratings as a frame with columns y, target, rater[, occasion] (labels as text)."""
    import pandas as pd

    from varcomp.analyses.source import as_frame

    frame = as_frame(data)
    if frame is None:
        if not isinstance(data, (str, Path)):
            raise TypeError(f"data must be a DataFrame, a file path or a shipped dataset's name, "
                            f"got {type(data).__name__}")
        from varcomp.models.data import DATASETS
        from varcomp.models.io import read_frame

        path = Path(data)
        if not path.exists() and str(data).lower() in DATASETS:
            from varcomp.models.data import data_dir

            path = data_dir() / DATASETS[str(data).lower()].file
        frame = read_frame(path, text_columns=[c for f, c in columns.items() if f != "y"])
    given = [c for c in columns.values() if c is not None]
    if len(set(given)) < len(given):
        raise DataError(f"the target, rater, response and occasion columns must differ, got "
                        f"{', '.join(given)}")
    missing = [c for c in given if c not in frame.columns]
    if missing:
        raise DataError(f"no column {missing[0]!r} in the data: columns are "
                        f"{', '.join(map(str, frame.columns))}")
    y = pd.to_numeric(frame[columns["y"]], errors="coerce")
    bad = y.isna() & frame[columns["y"]].notna()
    if bad.any():
        raise DataError(f"the response {columns['y']!r} must be numbers; row "
                        f"{int(bad.argmax()) + 1} has {frame[columns['y']][bad].iloc[0]!r}")
    out = pd.DataFrame({"y": y.astype("float64")})
    for f, c in columns.items():
        if f != "y" and c is not None:
            col = frame[c]
            out[f] = col.where(col.isna(), col.astype(str))
    out = out.dropna().reset_index(drop=True)  # a missing rating is an absent row
    for f in ("target", "rater"):
        if out[f].nunique() < 2:
            raise DataError(f"the {f} column {columns[f]!r} needs at least 2 distinct values "
                            f"with ratings, got {out[f].nunique()}")
    if out.groupby("rater")["target"].nunique().max() < 2:
        raise DataError(f"every rater ({columns['rater']!r}) rates a single target: raters are "
                        f"nested in targets, so only ICC(1) applies (varcomp fit DATA --group "
                        f"{columns['target']} --response {columns['y']})")
    return out


def _formula(frame, occasion: bool) -> tuple[str, list[str]]:
    notes = []
    if occasion:
        terms = ["target", "rater", "occasion", "target:rater", "target:occasion",
                 "rater:occasion"]
        notes.append("the target x rater x occasion interaction is confounded with the residual "
                     "(one rating per cell)")
    else:
        terms = ["target", "rater"]
        if frame.groupby(["target", "rater"]).size().max() > 1:
            terms.append("target:rater")
        else:
            notes.append("one rating per target and rater: the target x rater interaction is "
                         "confounded with the residual (as in Shrout & Fleiss 1979), so ICC(C,1) "
                         "counts it as error")
    return "y ~ 1 + " + " + ".join(f"(1|{t})" for t in terms), notes


def reml_components(frame, formula: str) -> tuple[dict, tuple[float, float]]:
    """REML variances: the design's by component, and the one-way model's (sigma_t^2, sigma_w^2).

    No sampling: lme4's optima (:func:`models.lmm.estimates`, :func:`models.estimate.fit_reml`).
    """
    from varcomp.analyses.source import resolve
    from varcomp.models.estimate import fit_reml
    from varcomp.models.lmm import estimates

    est = estimates(resolve(frame, formula))["reml"].as_dict()
    comps = {f: t * t for f, t in est["tau"].items()}
    comps["residual"] = est["sigma"] ** 2
    one = fit_reml(resolve(frame[["y", "target"]], "y ~ 1 + (1|target)"))
    return comps, (one.tau**2, one.sigma**2)


def plugin(data, *, target: str, rater: str, response: str) -> dict[str, float]:
    """The REML plug-in ICCs of a target x rater table, without sampling (fast)."""
    frame = frame_of(data, {"y": response, "target": target, "rater": rater})
    formula, _ = _formula(frame, occasion=False)
    comps, one = reml_components(frame, formula)
    k = design_k(frame.groupby("target")["rater"].nunique().to_numpy())
    return {n: float(v) for n, v in icc_forms(comps, k, one).items()}


def _values(text_or_seq, name: str) -> tuple:
    if isinstance(text_or_seq, str):
        parts = [p.strip() for p in text_or_seq.split(",")]
    else:
        parts = list(text_or_seq)
    try:
        values = tuple(int(p) for p in parts if str(p) != "")
    except (TypeError, ValueError):
        raise DataError(f"{name} must be whole numbers of raters separated by ',', e.g. "
                        f"'1,2,4,8', got {text_or_seq!r}") from None
    if not values or min(values) < 1:
        raise DataError(f"{name} needs numbers of raters of at least 1, got {text_or_seq!r}")
    return values


def _unit(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def reliability(data, *, target: str, rater: str, response: str, occasion: str | None = None,
                d_values=DEFAULT_D_STUDY, goal: float = 0.8, goal_prob: float = 0.8,
                draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 0,
                progress: bool = False) -> Reliability:
    """Fit the two-way (three-facet) and one-way models; the ICCs, G and D studies."""
    from varcomp.analyses.fit import fit
    from varcomp.analyses.result import Result
    from varcomp.analyses.source import resolve

    d_values = _values(d_values, "d-study")
    goal, goal_prob = _unit(goal, "goal"), _unit(goal_prob, "goal probability")
    columns = {"target": target, "rater": rater, "occasion": occasion}
    for f, c in {**columns, "response": response}.items():
        if c is not None and not isinstance(c, str):
            raise TypeError(f"{f} must be a column name, got {type(c).__name__}")
    frame = frame_of(data, {"y": response, **columns})
    columns = {f: c for f, c in columns.items() if c is not None}
    formula, notes = _formula(frame, occasion is not None)
    kw = {"draws": draws, "tune": tune, "chains": chains, "seed": seed, "progress": progress}
    loaded = [resolve(frame, formula), resolve(frame[["y", "target"]], "y ~ 1 + (1|target)")]
    for d in loaded:
        d.require_identifiable()
    twoway, oneway = (Result(fit(d, **kw)) for d in loaded)
    post = _components(twoway)
    reml, reml_oneway = reml_components(frame, formula)
    per_target = frame.groupby("target")["rater"].nunique().to_numpy()
    return Reliability(twoway=twoway, oneway=oneway, columns=columns, k=design_k(per_target),
                       draws=post, reml=reml, reml_oneway=reml_oneway, d_values=d_values, goal=goal,
                       goal_prob=goal_prob, formula=formula, notes=notes)


def write_reliability(rel: Reliability, out: Path, *, inputs=()) -> Path:
    """The fit's outputs (report.html with its reliability section), reliability.json; atomic."""
    from varcomp.analyses.outputs import dump_json, write_atomically

    table = rel.as_dict()

    def writer(tmp: Path) -> None:
        from varcomp.analyses.report import render_report

        result = rel.twoway.fit_result
        for name, f in result.fits.items():
            f.idata.to_netcdf(str(tmp / f"{name}.nc"), compress=False)
        (tmp / "report.html").write_text(render_report(result, reliability=table),
                                         encoding="utf-8")
        dump_json(result.summary, tmp / "summary.json")
        dump_json(table, tmp / "reliability.json")

    return write_atomically(Path(out), writer, inputs=inputs)


def text(rel: Reliability) -> str:
    """The command's printed table."""
    t = rel.as_dict()
    lines = [f"{'coefficient':<10} {'mean':>6} {'94% HDI':>16} {'REML':>6}  (k = {t['k']:g})"]
    for r in t["coefficients"]:
        lo, hi = r["posterior_hdi"]
        lines.append(f"{r['name']:<10} {r['posterior_mean']:>6.3f} [{lo:6.3f}, {hi:6.3f}] "
                     f"{r['reml']:>6.3f}")
    lines.append(f"{'n raters':<10} {'Erho2':>6} {'Phi':>6}")
    for r in t["d_study"]:
        lines.append(f"{r['n_raters']:<10} {r['erho2_mean']:>6.3f} {r['phi_mean']:>6.3f}")
    reach = t["reach"]
    for kind in ("phi", "erho2"):
        n = reach[kind]
        lines.append(f"{kind} >= {reach['goal']:g} with probability {reach['probability']:g}: "
                     + (f"{n} raters" if n is not None else "not within 1000 raters"))
    lines.extend(f"note: {n}" for n in t["notes"])
    return "\n".join(lines)


def run_cli(args, *, inputs, name: str) -> int:
    """``varcomp reliability``: check --out, fit, write, print the tables."""
    from varcomp.analyses.fit import is_terminal
    from varcomp.analyses.outputs import checkpoint, resolve_out, stop_on_signals

    out = Path(args.out) if args.out else Path("reports") / f"{name}-reliability"
    resolve_out(out, inputs=inputs)
    d_values = _values(args.d_study, "--d-study")
    with stop_on_signals():
        rel = reliability(args.data, target=args.target, rater=args.rater,
                          response=args.response, occasion=args.occasion, d_values=d_values,
                          goal=args.goal, goal_prob=args.goal_prob, draws=args.draws,
                          tune=args.tune, chains=args.chains, seed=args.seed,
                          progress=is_terminal())
        checkpoint()
        out = write_reliability(rel, out, inputs=inputs)
    print(text(rel))
    print(f"reliability: {out / 'report.html'}   {out / 'reliability.json'}")
    return 0
