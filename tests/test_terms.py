"""Random-effects terms: lme4's slope syntax parsed into (factor, coefficient columns), the
uncorrelated ``||`` rewritten as text, the output names of (factor, coefficient), and every
family refusing slope columns until one fits them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varcomp.analyses.cli import main
from varcomp.models.design import from_formula, parse
from varcomp.models.errors import DataError
from varcomp.models.forms import family_of
from varcomp.models.formula_guard import expand_uncorrelated
from varcomp.models.terms import Factor, Term, corr_name, sd_coords, sd_name


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat([f"s{i}" for i in range(6)], 5)
    return pd.DataFrame({"y": rng.normal(size=g.size), "x": rng.normal(size=g.size),
                         "z": rng.normal(size=g.size), "g": g,
                         "h": np.tile(["a", "b", "c"], 10), "t": np.tile(["u", "v"], 15)})


@pytest.mark.parametrize(("formula", "terms"), [
    ("y ~ (1|g)", [(("g",), ("Intercept",))]),
    ("y ~ x + (1 + x|g)", [(("g",), ("Intercept", "x"))]),
    ("y ~ x + (x|g)", [(("g",), ("Intercept", "x"))]),
    ("y ~ (0 + x|g)", [(("g",), ("x",))]),
    ("y ~ (-1 + x|g)", [(("g",), ("x",))]),
    ("y ~ (x + z|g)", [(("g",), ("Intercept", "x", "z"))]),
    ("y ~ (1 + x || g)", [(("g",), ("Intercept",)), (("g",), ("x",))]),
    ("y ~ (0 + x + z || g)", [(("g",), ("x",)), (("g",), ("z",))]),
    ("y ~ (x|g/h) + (1|t)", [(("g",), ("Intercept", "x")), (("g", "h"), ("Intercept", "x")),
                              (("t",), ("Intercept",))]),
])
def test_terms_are_parsed_as_lme4_reads_them(formula, terms):
    p = parse(formula)
    assert list(p.random) == terms
    assert list(p.groups) == list(dict.fromkeys(f for f, _ in terms))


def test_uncorrelated_rewrite_is_text_only():
    assert expand_uncorrelated("y ~ x + (1 + x || g)") == "y ~ x + (1|g) + (0 + x|g)"
    assert expand_uncorrelated("y ~ (x || a:b) + (1|c)") == "y ~ (1|a:b) + (0 + x|a:b) + (1|c)"
    assert expand_uncorrelated("y ~ (1|g)") == "y ~ (1|g)"


def test_design_carries_each_terms_columns_and_values():
    df = _frame()
    d = from_formula(df, "y ~ x + (1 + x|g) + (0 + z|h)").design
    assert [(t.factor.name, t.columns) for t in d.random] == [("g", ("Intercept", "x")),
                                                             ("h", ("z",))]
    g, h = d.random
    np.testing.assert_array_equal(g.values, np.column_stack([np.ones(len(df)), df.x]))
    np.testing.assert_array_equal(h.values, df[["z"]].to_numpy())
    np.testing.assert_array_equal(g.factor.codes, pd.factorize(df.g)[0])
    assert [f.name for f in d.factors] == ["g", "h"]  # crossed: formula order
    plain = from_formula(df, "y ~ x + (1|g)").design
    assert [(t.factor.name, t.columns) for t in plain.random] == [("g", ("Intercept",))]
    assert plain.random[0].factor.name == plain.factors[0].name
    np.testing.assert_array_equal(plain.random[0].values, np.ones((len(df), 1)))


def _term(name: str, *cols: str) -> Term:
    return Term(Factor(name, None, np.array(["a", "b"], dtype=object)), cols or ("Intercept",))


def test_output_names_of_factor_and_coefficient():
    one = [_term("batch")]
    assert sd_name(one, "batch") == "tau" and sd_coords(one) is None
    two = [_term("batch"), _term("batch:cask")]
    assert [sd_name(two, f) for f in ("batch", "batch:cask")] == ["tau[batch]",
                                                                  "tau[batch:cask]"]
    assert sd_coords(two) == ["batch", "batch:cask"]
    slopes = [_term("Subject", "Intercept", "Days"), _term("item")]
    assert sd_name(slopes, "Subject", "Days") == "tau[Subject|Days]"
    assert sd_name(slopes, "item") == "tau[item]"
    assert sd_coords(slopes) == ["Subject|Intercept", "Subject|Days", "item"]
    assert corr_name("Subject", "Intercept", "Days") == "rho[Subject|Intercept,Days]"
    with pytest.raises(KeyError):
        sd_name(slopes, "item", "Days")


BAD_TERMS = [
    ("y ~ (C(h)|g)", "a random slope is a numeric column, not the categorical C(h)"),
    ("y ~ (t|g)", "the random slope 't' in (t|g) is not a numeric column"),
    ("y ~ (np.log(x)|g)", "compute a transformed slope as a column of its own"),
    ("y ~ (x:z|g)", "compute a transformed slope as a column of its own"),
    ("y ~ (0|g)", "which has no coefficient"),
    ("y ~ (x|g) + (1|g)", "writes the term (1|g) twice"),
    ("y ~ (np.log(x) || g)", "writes an uncorrelated term (np.log(x) || g) varcomp cannot read"),
    ("y ~ (1|g) || h", "writes an uncorrelated term"),
    ("y ~ x + (x|g) + (1|h)", "random slopes: (1 + x|g) with several grouping factors is not "
                              "fitted yet"),
    ("y ~ x + (x || g) + (1|h)", "random slopes: (0 + x|g) with several grouping factors"),
]


@pytest.mark.parametrize(("formula", "words"), BAD_TERMS)
def test_bad_terms_are_one_line(tmp_path, capsys, formula, words):
    with pytest.raises(DataError) as info:
        family_of(from_formula(_frame(), formula))
    assert words in str(info.value) and "\n" not in str(info.value)
    path, out = tmp_path / "d.csv", tmp_path / "out"
    _frame().to_csv(path, index=False)
    try:
        code = main(["fit", str(path), "--formula", formula, "--out", str(out)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()
