"""Regenerate docs/icc_posterior_dyestuff.png, the README's example figure (about 10 s).

Run from the repository root: ``.venv/bin/python docs/make_icc_figure.py``. It fits the
``sufficient`` form to Dyestuff with :func:`analyses.fit.fit` (nutpie, 4 chains x 1000 draws,
seed 1) and saves the report's ICC figure with the ML and REML estimates marked.
"""

from __future__ import annotations

from pathlib import Path

from varcomp import models
from varcomp.analyses.fit import fit
from varcomp.analyses.report import icc_figure

OUT = Path(__file__).resolve().parent / "icc_posterior_dyestuff.png"


def main() -> Path:
    """Fit, draw and save; prints the diagnostics verdict."""
    data = models.load("dyestuff")
    result = fit(data, "sufficient", draws=1000, tune=1000, chains=4, seed=1)
    one = result.fits["sufficient"]
    fig = icc_figure(one, result.estimates, outcomes=result.family.outcomes(data), width=6.4)
    fig.suptitle("Dyestuff: posterior of the ICC (sufficient form, nutpie)", fontsize=10)
    fig.subplots_adjust(top=0.8)
    fig.savefig(OUT, dpi=110)
    print(f"{OUT}  diagnostics ok: {one.ok} {one.diagnostics['problems']}")
    return OUT


if __name__ == "__main__":
    main()
