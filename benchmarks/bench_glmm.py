"""The binomial/Poisson GLMM goals of issue 26, measured in one run (nothing here is asserted).

Run ``python benchmarks/bench_glmm.py [--verbagg]``; writes ``benchmarks/results_glmm.md`` and
``.json`` with the machine's load average.

- ``cbpp``: ``varcomp fit data/cbpp.csv --formula 'p(incidence, size) ~ C(period) + (1|herd)'``
  end to end, warm (one untimed run first), process wall time: the default form (``marginal``:
  period varies within herds), 4 chains x (1000 + 1000).
- ``ess``: a 2,000-cluster binomial set (5-29 trials per cluster, tau 0.8): ``sufficient`` (the
  default) against ``centred``, each compiled once (untimed) then sampled 2 chains x
  (1000 + 1000) through ``analyses.fit.prepare`` and ``models.sampling.sample_model``; ESS/s is
  the smaller bulk ESS of beta and tau over the sampling seconds; their ratio in the same run.
- ``--verbagg``: ``varcomp fit data/verbagg.csv`` of VerbAgg's crossed binary model (default
  form ``noncentred``, the gate), end to end (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARCOMP = str(Path(sys.executable).with_name("varcomp"))


def _run(args) -> float:
    t = time.perf_counter()
    subprocess.run([VARCOMP, *args], check=True, capture_output=True)
    return time.perf_counter() - t


def cbpp() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["fit", str(ROOT / "data" / "cbpp.csv"), "--formula",
                "p(incidence, size) ~ C(period) + (1|herd)", "--out", f"{tmp}/o", "--seed", "1"]
        _run(args)  # warm: caches written
        return {"seconds": _run(args)}


def ess() -> dict:
    import arviz as az
    import numpy as np
    import pandas as pd

    from varcomp.analyses.fit import prepare
    from varcomp.models.design import from_formula
    from varcomp.models.forms import family_of
    from varcomp.models.sampling import sample_model

    rng = np.random.default_rng(1)
    L = 2000
    n = rng.integers(5, 30, L)
    y = rng.binomial(n, 1 / (1 + np.exp(-(-0.5 + rng.normal(0, 0.8, L)))))
    df = pd.DataFrame({"g": [f"g{i}" for i in range(L)], "y": y, "n": n})
    data = from_formula(df, "p(y, n) ~ 1 + (1|g)", family="binomial")
    fam = family_of(data)
    out = {}
    for name in ("sufficient", "centred"):
        t = time.perf_counter()
        model, backend = prepare(fam.form(name), data)
        compile_s = time.perf_counter() - t
        idata, sec = sample_model(model, draws=1000, tune=1000, chains=2, seed=1,
                                  backend=backend)
        s = az.summary(idata, var_names=["beta", "tau"])
        out[name] = {"build_s": compile_s, "compile_s": sec["compile"],
                     "sample_s": sec["sample"], "ess_bulk_min": float(s.ess_bulk.min()),
                     "ess_per_s": float(s.ess_bulk.min()) / sec["sample"],
                     "tau_mean": float(idata.posterior["tau"].mean())}
    out["ratio"] = out["sufficient"]["ess_per_s"] / out["centred"]["ess_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verbagg", action="store_true")
    a = ap.parse_args()
    res = {"load_before": os.getloadavg(), "cbpp": cbpp(), "ess": ess()}
    if a.verbagg:
        with tempfile.TemporaryDirectory() as tmp:
            res["verbagg"] = {"seconds": _run([
                "fit", str(ROOT / "data" / "verbagg.csv"), "--formula",
                "r2 ~ Anger + C(Gender) + C(btype) + C(situ) + (1|id) + (1|item)",
                "--family", "bernoulli", "--event", "Y", "--out", f"{tmp}/o"])}
    res["load_after"] = os.getloadavg()
    (ROOT / "benchmarks" / "results_glmm.json").write_text(json.dumps(res, indent=1))
    e = res["ess"]
    lines = ["# GLMM benchmarks", "", f"load average before {res['load_before']}, after "
             f"{res['load_after']} (2 cores shared)", "",
             f"- cbpp `varcomp fit` warm, end to end: {res['cbpp']['seconds']:.1f} s",
             f"- 2,000 binomial clusters: sufficient {e['sufficient']['ess_per_s']:.1f} ESS/s, "
             f"centred {e['centred']['ess_per_s']:.1f} ESS/s, ratio {e['ratio']:.1f}x"]
    if "verbagg" in res:
        lines.append(f"- VerbAgg crossed default fit: {res['verbagg']['seconds']:.1f} s")
    (ROOT / "benchmarks" / "results_glmm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
