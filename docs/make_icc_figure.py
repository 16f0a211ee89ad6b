"""Regenerate docs/icc_posterior_dyestuff.png, the README's example figure (about 10 s).

Run from the repository root: ``.venv/bin/python docs/make_icc_figure.py``. It samples the
``sufficient`` form on Dyestuff with nutpie (4 chains x 1000 draws, seed 1: the CLI defaults)
and saves the report's ICC figure with the ML and REML estimates marked.
"""

from __future__ import annotations

import time
from pathlib import Path

import models
from analyses.report import icc_figure
from models.sampling import Fit, diagnose, sample_model

OUT = Path(__file__).resolve().parent / "icc_posterior_dyestuff.png"


def main() -> Path:
    """Fit, draw and save; prints the diagnostics verdict."""
    data = models.load("dyestuff")
    t0 = time.perf_counter()
    model = models.build("sufficient", data)
    idata, seconds = sample_model(model, draws=1000, tune=1000, chains=4, seed=1)
    fit = Fit("sufficient", idata, {"build": time.perf_counter() - t0, **seconds}, {},
              diagnose(idata))
    estimates = {"ml": models.fit_ml(data), "reml": models.fit_reml(data)}
    fig = icc_figure(fit, estimates, width=6.4)
    fig.suptitle("Dyestuff: posterior of the ICC (sufficient form, nutpie)", fontsize=10)
    fig.subplots_adjust(top=0.8)
    fig.savefig(OUT, dpi=110)
    print(f"{OUT}  diagnostics ok: {fit.ok} {fit.diagnostics['problems']}")
    return OUT


if __name__ == "__main__":
    main()
