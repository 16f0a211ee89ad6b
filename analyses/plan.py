"""``varcomp plan``: clusters needed for a target, with the ICC's uncertainty (assurance).

The ICC comes from one of: a fixed value (``icc``: the textbook formula, assurance 0 or 1), a
Beta prior (``icc_prior="beta:A:B"``: draws from it), or a varcomp output folder of a one-way
fit (``source``: its posterior ``icc`` draws). The formulas are :mod:`models.planning`'s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from varcomp.models.errors import DataError
from varcomp.models.planning import assurance, design_effect, n_individual, needed, smallest_assured

__all__ = ["icc_draws", "plan", "text", "write_plan"]

PRIOR_DRAWS = 4000
"""Draws taken from an ``--icc-prior`` (the assurance's Monte Carlo error is <= 0.008)."""


def icc_draws(*, icc=None, icc_prior: str | None = None, source=None, seed: int = 0):
    """(draws or one value, a description) from exactly one of the three ICC sources."""
    given = [x is not None for x in (icc, icc_prior, source)]
    if sum(given) != 1:
        raise DataError("give exactly one ICC source: --icc VALUE, --icc-prior beta:A:B or "
                        "--from FOLDER (a varcomp fit's output)")
    if icc is not None:
        if isinstance(icc, bool) or not isinstance(icc, (int, float)) or not 0 <= icc < 1:
            raise DataError(f"the ICC must be a number in [0, 1), got {icc!r}")
        return np.array([float(icc)]), f"ICC = {icc:g}"
    if icc_prior is not None:
        parts = str(icc_prior).split(":")
        try:
            a, b = float(parts[1]), float(parts[2])
            ok = parts[0].lower() == "beta" and len(parts) == 3 and a > 0 and b > 0 and \
                math.isfinite(a + b)
        except (IndexError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"--icc-prior must be beta:A:B with A, B > 0 (e.g. beta:2:18), got "
                            f"{icc_prior!r}")
        draws = np.random.default_rng(seed).beta(a, b, PRIOR_DRAWS)
        return draws, f"ICC ~ Beta({a:g}, {b:g}), {PRIOR_DRAWS} draws"
    return _from_folder(Path(source))


def _from_folder(folder: Path):
    summary = folder / "summary.json"
    if not summary.is_file():
        raise DataError(f"{folder} is not a varcomp output folder (no summary.json)")
    try:
        info = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{summary} cannot be read as JSON") from None
    if info.get("family") != "oneway" or not info.get("fits"):
        raise DataError(f"{folder} holds a {info.get('family')!r} fit; --from needs a one-way "
                        f"fit (varcomp fit DATA --group G), whose posterior has the ICC")
    form = next(iter(info["fits"]))
    nc = folder / f"{form}.nc"
    if not nc.is_file():
        raise DataError(f"{folder} lacks {nc.name}, the posterior draws of the fit")
    import arviz as az

    post = az.from_netcdf(str(nc)).posterior
    if "icc" not in post:
        raise DataError(f"{nc} has no icc draws")
    draws = post["icc"].values.ravel()
    return draws, f"ICC posterior of {folder} ({form}, {draws.size} draws)"


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not \
            math.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def plan(*, size: float, cv: float = 0.0, effect: float | None = None, alpha: float = 0.05,
         power: float = 0.8, se: float | None = None, sd: float = 1.0, level: float = 0.8,
         icc=None, icc_prior: str | None = None, source=None, seed: int = 0) -> dict:
    """The design effect, the clusters needed and the assurance curve (plan.json's contents).

    ``size``: mean cluster size m; ``cv``: the sizes' coefficient of variation; the target is
    a two-arm comparison at standardised ``effect`` (``alpha``, ``power``; clusters per arm)
    or a mean's standard error ``se`` for an outcome of sd ``sd`` (clusters in all);
    ``level``: the assurance the recommended number of clusters must reach.
    """
    size = _positive(size, "the mean cluster size")
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not 0 <= cv < 10:
        raise DataError(f"the coefficient of variation of cluster sizes must be in [0, 10), got "
                        f"{cv!r}")
    if (effect is None) == (se is None):
        raise DataError("give one target: --effect D (a two-arm comparison) or --se SE (the "
                        "standard error of a mean)")
    for value, name in ((alpha, "alpha"), (power, "power"), (level, "the assurance level")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise DataError(f"{name} must be in (0, 1), got {value!r}")
    if effect is not None:
        effect = _positive(effect, "the effect size")
    else:
        se, sd = _positive(se, "the standard error"), _positive(sd, "the outcome sd")
    draws, described = icc_draws(icc=icc, icc_prior=icc_prior, source=source, seed=seed)
    kn = needed(draws, size, cv=cv, d=effect, alpha=alpha, power=power, se=se, sd=sd)
    top = int(kn.max())
    ks = np.unique(np.linspace(1, max(top, 2), num=min(max(top, 2), 200)).round().astype(int))
    mean_icc = float(np.mean(draws))
    return {
        "icc": described, "icc_mean": mean_icc, "size": size, "cv": cv,
        "target": ({"kind": "comparison", "effect": effect, "alpha": alpha, "power": power,
                    "n_individual": n_individual(effect, alpha, power)} if effect is not None
                   else {"kind": "se", "se": se, "sd": sd}),
        "per": "arm" if effect is not None else "study",
        "design_effect": float(design_effect(mean_icc, size, cv)),
        "clusters_at_mean_icc": int(needed(mean_icc, size, cv=cv, d=effect, alpha=alpha,
                                           power=power, se=se, sd=sd)),
        "level": level, "clusters_assured": smallest_assured(kn, level),
        "curve": [{"clusters": int(k), "assurance": float(a)}
                  for k, a in zip(ks, assurance(kn, ks), strict=True)],
    }


def text(p: dict) -> str:
    """The command's printed lines."""
    per = "per arm" if p["per"] == "arm" else "in all"
    return "\n".join([
        f"{p['icc']}; mean cluster size {p['size']:g}, CV {p['cv']:g}",
        f"design effect at the mean ICC {p['icc_mean']:.4f}: {p['design_effect']:.4f}",
        f"clusters {per} at the mean ICC: {p['clusters_at_mean_icc']}",
        f"clusters {per} with assurance >= {p['level']:g}: {p['clusters_assured']}"])


def write_plan(p: dict, out: Path) -> Path:
    """plan.csv (the assurance curve), plan.json and plan.html into ``out``, atomically."""
    from varcomp.analyses.outputs import dump_json, write_atomically
    from varcomp.analyses.report.render import environment, style_sheet

    def writer(tmp: Path) -> None:
        rows = ["clusters,assurance"] + [f"{r['clusters']},{r['assurance']:.6g}"
                                         for r in p["curve"]]
        (tmp / "plan.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        dump_json(p, tmp / "plan.json")
        html = environment().get_template("plan.html.j2").render(p=p, css=style_sheet())
        (tmp / "plan.html").write_text(html, encoding="utf-8")

    return write_atomically(Path(out), writer)


def run_cli(args) -> int:
    """``varcomp plan``: check --out, compute, print, write."""
    from varcomp.analyses.outputs import resolve_out

    if args.out:
        resolve_out(args.out)
    p = plan(size=args.size, cv=args.cv, effect=args.effect, alpha=args.alpha, power=args.power,
             se=args.se, sd=args.sd, level=args.assurance, icc=args.icc,
             icc_prior=args.icc_prior, source=args.source, seed=args.seed)
    print(text(p))
    if args.out:
        out = write_plan(p, Path(args.out))
        print(f"plan: {out / 'plan.csv'}   {out / 'plan.json'}   {out / 'plan.html'}")
    return 0
