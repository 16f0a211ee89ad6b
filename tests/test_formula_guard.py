"""A formula is data (models.formula_guard): code in a formula never runs, every accepted input is
honoured, everything else is one line (DataError in Python, exit 2 in the CLI)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses.cli import main
from varcomp.models.design import from_formula, load_formula
from varcomp.models.errors import DataError
from varcomp.models.formula_guard import NUMPY, TRANSFORMS, check, env


def _frame(seed: int = 0, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 8, n).astype(str)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=n) + 3, "z": rng.normal(size=n),
                       "h": rng.choice(list("abc"), n), "pos": rng.uniform(1, 2, n)})
    df["y"] = 1 + 0.5 * df.x + rng.normal(size=8)[g.astype(int)] + rng.normal(size=n)
    return df


INJECTIONS = [
    "y ~ x + pd.io.common.os.system('touch {m}') + (1|g)",
    "y ~ x + np.testing._private.utils.os.system('touch {m}') + (1|g)",
    "y ~ x + formulae.environment.inspect.os.system('touch {m}') + (1|g)",
    "y ~ x + np.save('{m}', x) + (1|g)",
    "y ~ x + I(np.save('{m}', x)) + (1|g)",
    "y ~ x + np.log(os.system('touch {m}')) + (1|g)",
    "y ~ x + __import__('os').system('touch {m}') + (1|g)",
    "np.save('{m}', y) ~ x + (1|g)",
    "y ~ x + offset(np.save('{m}', x)) + (1|g)",
    "y ~ x + (1|g) + C(x, np.save('{m}', x))",
]


@pytest.mark.parametrize("formula", INJECTIONS)
def test_code_in_a_formula_never_runs(tmp_path, formula):
    """from_formula and load_formula refuse with one line, and the marker file never appears."""
    marker = tmp_path / "marker"
    f = formula.format(m=marker)
    df = _frame()
    with pytest.raises(DataError) as info:
        from_formula(df, f)
    assert "\n" not in str(info.value)
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError):
        load_formula(tmp_path / "d.csv", f)
    assert not marker.exists() and not (tmp_path / "marker.npy").exists()


def test_the_attack_is_real_without_the_guard(tmp_path):
    """The broken variant: formulae alone, in the caller's namespace, runs the formula's code."""
    import formulae

    marker = tmp_path / "marker"
    with pytest.raises(Exception):  # noqa: B017 - formulae fails only after running the code
        formulae.design_matrices(f"y ~ x + pd.io.common.os.system('touch {marker}')",
                                 _frame().assign(pd=0).drop(columns="pd"))
    assert marker.exists()


@pytest.mark.parametrize("command", [
    ["fit", "{d}", "--formula", "{f}"],
    ["compare", "{d}", "--formula", "{f}", "--formula", "y ~ 1 + (1|g)"],
    ["fit", "{p}", "--engine", "dask", "--formula", "{f}"],
])
def test_the_cli_refuses_an_injection_before_any_work(tmp_path, capsys, command):
    marker = tmp_path / "marker"
    df = _frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    f = INJECTIONS[0].format(m=marker)
    argv = [a.format(d=tmp_path / "d.csv", p=tmp_path / "d.parquet", f=f) for a in command]
    code = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not an allowed transform" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


ACCEPTED = [
    "y ~ np.log(x) + np.log1p(x) + (1|g)",
    "y ~ np.exp(z) + np.sqrt(x) + np.abs(z) + (1|g)",
    "y ~ center(x) + scale(z) + (1|g)",
    "y ~ standardize(x) + (1|g)",
    "y ~ I(x ** 2) + {x * z} + I((x - 3) / 2) + (1|g)",
    "y ~ C(h) + x:z + (1|g)",
    "y ~ C(h, Treatment('b')) + x + (1|g)",
    "y ~ x * C(h) - 1 + (1|g)",
    "y ~ x + offset(2 * z) + (1|g)",
    "np.log(pos) ~ x + (1|g)",
    "I(y - z) ~ x + (1|g)",
    "y ~ x + `z` + (1|g)",
]


@pytest.mark.parametrize("formula", ACCEPTED)
def test_every_documented_transform_is_accepted(formula):
    d = from_formula(_frame(), formula)
    assert d.n_obs > 0 and d.design is not None


def test_the_evaluation_namespace_holds_only_the_allowed_functions():
    """np in a formula is a namespace of the five allowed ufuncs, nothing else (no np.save)."""
    ns = env().namespace
    assert sorted(vars(ns["np"])) == sorted(NUMPY)
    assert ns.keys() == [[], ["np"]]
    assert set(TRANSFORMS) == {"np.log", "np.log1p", "np.exp", "np.sqrt", "np.abs", "center",
                               "scale", "standardize", "I", "C", "offset"}


REFUSED = [
    ("y ~ x[a] + (1|g)", "subscripts"),
    ("y ~ C(h, levels='a') + (1|g)", "keyword argument"),
    ("y ~ I(x > 1) + (1|g)", "inside a call"),
    ("y ~ np.log('x') + (1|g)", "holds the value 'x'"),
    ("y ~ I(x + True) + (1|g)", "holds the value True"),
    ("y ~ x + np.log(x.__class__) + (1|g)", "starting with __"),
    ("y ~ x + np.random.normal(x) + (1|g)", "not an allowed transform"),
    ("y ~ x + bs(x) + (1|g)", "not an allowed transform"),
    ("y ~ x ) + z + (1|g)", "unexpected ')'"),
    ("y ~ 1e-5 * x + (1|g)", "unexpected 'e'"),
    ("p(np.log(y), pos) ~ x + (1|g)", "p(successes, trials) stands alone left of ~"),
    ("y ~ x + p(y, pos) + (1|g)", "p(successes, trials) stands alone left of ~"),
    ("center(y) ~ x + (1|g)", "the response center(y) is not supported"),
    ("y ~ center(scale(x)) + (1|g)", "nests a centring/scaling"),
    ("y ~ x:offset(z) + (1|g)", "write it as a term of its own"),
    ("y ~ x - offset(z) + (1|g)", "subtracts offset(z)"),
    ("y ~ np.log(C(h)) + (1|g)", "C() inside another call"),
    ("y ~ C(np.log(x)) + (1|g)", "not a column"),
    ("y ~ C(h, Sum) + (1|g)", "only C(x, Treatment(level))"),
    ("y ~ x * (1|g)", "inside another term"),
    ("y ~ x + (1|np.log(g))", "a group term's factor is a column"),
    ("y ~ x + Intercept + (1|g)", "rename the column"),
    ("~ x + (1|g)", "has no response: write 'y ~ ...'"),
    ("y x (1|g)", "has no response"),
]


@pytest.mark.parametrize(("formula", "words"), REFUSED)
def test_refusals_are_one_line_before_evaluation(formula, words):
    """The guard alone (no data, nothing evaluated) refuses; so does from_formula, alike."""
    with pytest.raises(DataError) as info:
        check(formula)
    assert words in str(info.value) and "\n" not in str(info.value)
    df = _frame().assign(Intercept=1.0)
    with pytest.raises(DataError) as again:
        from_formula(df, formula)
    assert str(again.value) == str(info.value)
