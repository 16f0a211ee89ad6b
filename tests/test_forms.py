"""The family and form types: what every family's forms expose, which family data get, when
``--model all`` skips a form, and the parameter-block layout shared by packer, kernels and tests."""

from __future__ import annotations

import numpy as np
import pytest

from varcomp.models import load
from varcomp.models.compiled import multivariate as cmv
from varcomp.models.compiled import oneway as cow
from varcomp.models.compiled.layout import Layout
from varcomp.models.forms import FAMILY_MODULES, FORM_NAMES, Family, Form, family_named, family_of
from varcomp.models.priors import MvPriors, Priors
from varcomp.models.simulate import simulate_univariate

FAMILIES = tuple(FAMILY_MODULES)
"""Every registered family: the structure and form-contract tests run over each."""
DATA_FAMILIES = ("oneway", "multivariate")
"""Families whose sufficient form the compiled-route test samples (the formula families' compiled
kernels have their own tests)."""
CASES = [(fam, form) for fam in FAMILIES for form in family_named(fam).forms]


# ------------------------------------------------------------------------------ the families
def test_family_of_decides_by_the_number_of_responses(make_partly_missing):
    """Data without a formula design: one response gets the one-way family, several the
    multivariate one; a family is looked up by its registered name only."""
    assert family_of(load("dyestuff")) is family_named("oneway")
    assert family_of(load("dyestuff")).default(load("dyestuff")) == "sufficient"
    assert family_of(load("gcsemv")) is family_named("multivariate")
    assert family_of(make_partly_missing(3, 1)).name == "multivariate"
    with pytest.raises(KeyError):
        family_named("no-such-family")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_has_the_four_forms_in_display_order(name):
    """Each registered family is a Family of at least the four common Forms, named and ordered as
    FORM_NAMES, each
    a record of callables; the default (and any fallback) form is one of them; the summarised
    variables include tau and sigma; an unknown form is one line naming the
    choices."""
    family = family_named(name)
    assert isinstance(family, Family) and family.name == name
    assert tuple(family.forms) == tuple(n for n in FORM_NAMES if n in family.forms)
    assert {"centred", "noncentred", "marginal", "sufficient"} <= set(family.forms)
    for key, form in family.forms.items():
        assert isinstance(form, Form) and form.name == key and form.summary
        assert callable(form.build) and callable(form.data_values) and callable(form.skip)
        assert form.compiled is None or callable(form.compiled)
    assert family.default_form in family.forms
    assert (family.fallback_form is None or callable(family.fallback_form)
            or family.fallback_form in family.forms)
    assert {"tau", *family.likelihood.params} <= set(family.summary_vars) and family.compare_vars
    assert callable(family.default_priors) and callable(family.add_effects)
    with pytest.raises(ValueError, match="unknown model 'latent'.*centred, noncentred"):
        family.form("latent")


def _effect_vars(family: Family, data) -> list[str]:
    """The variables holding a latent form's group effects."""
    if not family.design:
        return ["group_effect"]
    from varcomp.models.forms.mixed import effect_names

    return [var for var, _ in effect_names(data)]


@pytest.mark.parametrize("family_name, form_name", CASES)
def test_forms_put_their_data_in_containers_and_name_the_family_s_variables(
        family_name, form_name, mixed_data):
    """``data_values(data)`` is exactly the model's pm.Data containers with their values; every
    variable the family summarises and compares exists in every form (those its ``derive`` adds
    after sampling excepted: tau and sigma always); ``latent`` says whether the form has the
    group effects itself."""
    family = family_named(family_name)
    form = family.form(form_name)
    data = mixed_data(family_name)
    assert family_of(data) is family
    if why := form.applies(data):  # absent for these data (a GLMM's integrated forms)
        pytest.skip(f"{form_name} is absent for {family_name}: {why}")
    model = form.build(data, priors=family.default_priors(data))
    values = form.data_values(data)
    assert values and {v.name for v in model.data_vars} == set(values)
    for key, value in values.items():
        np.testing.assert_array_equal(model[key].get_value(), value)
    named = set(model.named_vars)
    assert {"tau", *family.likelihood.params} <= named
    if family.derive is None:
        assert set(family.summary_vars) | set(family.compare_vars) <= named
    assert all(v in named for v in _effect_vars(family, data)) == form.latent
    assert any(v in named for v in _effect_vars(family, data)) == form.latent


@pytest.mark.parametrize("family_name, form_name", [
    pytest.param(*c, marks=pytest.mark.slow) if c == ("multivariate", "marginal") else c
    for c in CASES])  # the multivariate marginal's PyMC graph: ~3 s to compile
def test_a_compiled_density_reads_swapped_data(family_name, form_name, mixed_data):
    """One compiled model serves every data set of its design: a log density compiled for data
    A, with its containers set to ``data_values(B)``, is the density of the model built on B
    (what models.sampling.DataSwapper and SBC rely on). B = 3 + 2 A has A's design."""
    import pymc as pm

    family = family_named(family_name)
    form = family.form(form_name)
    a = mixed_data(family_name)
    if why := form.applies(a):  # absent for these data (a GLMM's integrated forms)
        pytest.skip(f"{form_name} is absent for {family_name}: {why}")
    b = mixed_data(family_name, shift=3.0, scale=2.0)
    priors = family.default_priors(a)  # the same priors for both: only the data change
    model_a = form.build(a, priors=priors)
    logp_a = model_a.compile_logp(mode="FAST_COMPILE")
    start = model_a.initial_point()
    rng = np.random.default_rng(1)
    point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in start.items()}
    before = float(logp_a(point))
    with model_a:
        pm.set_data(form.data_values(b))
    want = float(form.build(b, priors=priors).compile_logp(mode="FAST_COMPILE")(point))
    assert float(logp_a(point)) == pytest.approx(want, rel=1e-12)
    assert abs(before - want) > 1e-3 * abs(want)  # the data did change the density


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_s_forms_equal_its_kit_s_oracle_and_its_broken_form_fails(name, mixed_data):
    """The one exact-density driver over every registered family (its check kit, named by
    ``Family.oracle``): each form that applies equals the kit's independent scipy oracle to 1e-9
    at 4 random points (latent GLMM and slopes forms: the joint of rows and effects), the PyMC
    prior terms equal the kit's numpy/scipy priors, absent forms are reported skipped with their
    reason, and the family's deliberately broken form (:data:`checks.broken.BROKEN`) fails."""
    from varcomp.models.checks import BROKEN, compare_logp

    family = family_named(name)
    data = mixed_data(name)
    broken = BROKEN[name]
    res = compare_logp(data, n_points=4, seed=1, family=family, builders={"broken": broken})
    errors = res.details["max_rel_err"]
    assert set(errors) | set(res.details["skipped"]) >= set(family.forms) | {"broken"}
    assert set(res.details["skipped"]) == set(family.absent(data))
    assert res.details["failed"] == ["broken"] and errors["broken"] > 1e-3, res.text
    assert max(v for k, v in errors.items() if k != "broken") <= 1e-9


@pytest.mark.parametrize("name", DATA_FAMILIES)
def test_only_sufficient_has_a_compiled_route(name, mixed_data):
    """The compiled route is the sufficient form's: a ready nutpie model over the same sampler
    coordinates as the PyMC model (its n_dim) that expands to the family's summary variables."""
    family = family_named(name)
    data = mixed_data(name)
    assert [n for n, f in family.forms.items() if f.compiled is not None] == ["sufficient"]
    compiled = family.form("sufficient").compiled(data, None)
    model = family.form("sufficient").build(data)
    n_dim = sum(int(np.size(v)) for v in model.initial_point().values())
    assert compiled.n_dim == n_dim
    assert set(family.summary_vars) <= set(compiled.shapes)


# ------------------------------------------------------------------------------ skipping
def test_oneway_marginal_is_skipped_above_200_rows_per_cluster():
    """The literal MvNormal costs O(n^2) per cluster: ``--model all`` leaves it out when a
    cluster has more than 200 rows (and says how to run it anyway), not at 200."""
    family = family_named("oneway")
    at_limit = simulate_univariate(2, [200, 3], rng=1).data()
    above = simulate_univariate(2, [201, 3], rng=1).data()
    assert family.skipped(at_limit) == {}
    skipped = family.skipped(above)
    assert list(skipped) == ["marginal"]
    assert "201 rows" in skipped["marginal"] and "--model marginal" in skipped["marginal"]
    assert family.skipped(load("dyestuff")) == {}


def test_multivariate_marginal_is_skipped_beyond_eight_blocks(make_partly_missing):
    """gcsemv's literal MvNormal would need 68 blocks (distinct cluster layouts): ``--model
    all`` leaves it out with the count; six small clusters (at most six blocks) keep it."""
    from varcomp.models.forms.multivariate import MARGINAL_MAX_BLOCKS
    from varcomp.models.mvstats import marginal_block_count

    family = family_named("multivariate")
    data = load("gcsemv")
    assert marginal_block_count(data) == 68 > MARGINAL_MAX_BLOCKS
    skipped = family.skipped(data)
    assert list(skipped) == ["marginal"] and "68 blocks" in skipped["marginal"]
    assert family.skipped(make_partly_missing(2, 0)) == {}


def test_family_of_reads_a_formula_s_design(mixed_data):
    """A formula's rows: intercept and one factor is the one-way model (its data carry the
    design; only family_of reads it), a covariate makes the regression, several factors nested
    or crossed as the data nest; each family's fields say what differs by kind of model."""
    import pandas as pd

    from varcomp.models.design import from_formula

    frame = pd.DataFrame({"g": list("aabbbccdd"), "y": [1.0, 2, 4, 3, 5, 6, 8, 2, 3],
                          "x": [0.5, 1, 0, 2, 1, 3, 1, 2, 0]})
    one = from_formula(frame, "y ~ 1 + (1|g)")
    assert one.design is not None and family_of(one) is family_named("oneway")
    assert family_of(from_formula(frame, "y ~ x + (1|g)")) is family_named("regression")
    for name in ("regression", "nested", "crossed", "slopes"):
        assert family_of(mixed_data(name)) is family_named(name)
    def kit(f):
        return f.oracle and f.oracle.rsplit(".", 1)[-1]

    fields = {n: (kit(family_named(n)), family_named(n).design, family_named(n).scalar_tau,
                  family_named(n).anova) for n in FAMILIES}
    assert fields == {"oneway": ("kit_oneway:KIT", False, False, True),
                      "multivariate": ("kit_multivariate:KIT", False, False, True),
                      "regression": ("lmm:KIT", True, True, False),
                      "nested": ("lmm:KIT", True, False, False),
                      "crossed": ("lmm:KIT", True, False, False),
                      "binomial": ("kit_glmm:KIT", True, True, False),
                      "poisson": ("kit_glmm:KIT", True, True, False),
                      "binomial_multilevel": ("kit_glmm:KIT", True, False, False),
                      "poisson_multilevel": ("kit_glmm:KIT", True, False, False),
                      "slopes": ("kit_slopes:KIT", True, False, False)}


def test_a_form_that_does_not_apply_is_absent_with_its_reason(mixed_data):
    """An unbalanced crossed design has no closed form: ``sufficient`` is absent (its reason),
    left out by ``--model all``, refused by name with that reason, and the default falls back
    to ``partial``; on the balanced design every form applies."""
    from varcomp.models.data import DataError
    from varcomp.models.design import from_formula

    family = family_named("crossed")
    balanced = mixed_data("crossed")
    assert family.absent(balanced) == {} and family.default(balanced) == "sufficient"
    import pandas as pd

    rows = pd.DataFrame({"a": [f"a{i}" for i in range(3) for _ in range(8)],
                         "b": [f"b{j}" for _ in range(3) for j in range(4) for _ in range(2)],
                         "y": np.random.default_rng(0).normal(size=24)}).iloc[1:]
    unbalanced = from_formula(rows, "y ~ 1 + (1|a) + (1|b)")
    absent = family.absent(unbalanced)
    assert list(absent) == ["sufficient"] and absent["sufficient"]
    assert family.skipped(unbalanced)["sufficient"] == absent["sufficient"]
    assert family.default(unbalanced) == "partial"
    with pytest.raises(DataError, match="--model sufficient does not apply to these data"):
        family.form_for("sufficient", unbalanced)
    assert family.form_for("partial", unbalanced) is family.forms["partial"]


@pytest.mark.parametrize("name", FAMILIES)
def test_model_names_a_form_of_the_family_or_is_one_line(name, mixed_data):
    """``--model NAME`` for a form the family does not have: one line naming the family's forms
    (the Python API raises the same DataError before any work)."""
    from varcomp.analyses.fit import fit
    from varcomp.models.data import DataError

    family = family_named(name)
    data = mixed_data(name)
    missing = [n for n in FORM_NAMES if n not in family.forms]
    for form in missing:
        with pytest.raises(DataError, match=f"unknown model '{form}' for the {name} family: "
                           f"choose one of {', '.join(family.forms)}$"):
            fit(data, model=form)
    assert missing or name == "crossed"


# ------------------------------------------------------------------------------ the layout
def test_layout_packs_and_unpacks_every_name():
    """The header holds the scalars, one offset per array and the total length; unpack reads
    back what pack wrote; missing, unknown or repeated names are refused."""
    lay = Layout(scalars=("a", "b"), arrays=("x", "y"))
    assert lay.header == 5 and lay.size_slot == 4
    assert lay.constants() == (0, 1, 2, 3) and lay.index("y") == 3
    x, y = np.arange(6.0).reshape(2, 3), np.array([7.5])
    block = lay.pack({"a": 1.5, "b": -2.0}, {"x": x, "y": y})
    assert block.size == 5 + 6 + 1 and block[4] == block.size and block[2] == 5
    scalars, arrays = lay.unpack(block)
    assert scalars == {"a": 1.5, "b": -2.0}
    np.testing.assert_array_equal(arrays["x"], x.ravel())
    np.testing.assert_array_equal(arrays["y"], y)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        lay.pack({"a": 1.0}, {"x": x, "y": y})
    with pytest.raises(ValueError, match=r"unknown \['z'\]"):
        lay.pack({"a": 1.0, "b": 2.0}, {"x": x, "y": y, "z": y})
    with pytest.raises(ValueError, match="repeat"):
        Layout(scalars=("a", "x"), arrays=("x",))


ONEWAY_CONSTANTS = {
    "_K": "K", "_N": "N", "_L": "L", "_SS": "SS", "_LOC": "mu_loc", "_SMU": "mu_scale",
    "_CENTER": "center", "_SCALE": "scale", "_LOGSCALE": "log_scale", "_FT": "tau_family",
    "_ST": "tau_scale", "_NUT": "tau_nu", "_FS": "sigma_family", "_SS2": "sigma_scale",
    "_NUS": "sigma_nu", "_CONST": "const", "_O_SIZES": "sizes", "_O_COUNT": "count",
    "_O_MEAN": "mean", "_O_SCATTER": "scatter"}
MV_CONSTANTS = {
    "_P": "p", "_NPAT": "n_patterns", "_L": "L", "_NDIM": "n_dim", "_ETAV": "eta_between",
    "_ETAS": "eta_within", "_CONST": "const", "_NEXP": "n_expanded", "_KC": "n_size_groups",
    "_LC": "n_complete", "_O_CENTER": "center", "_O_SCALE": "scale", "_O_MULOC": "mu_loc",
    "_O_MUSCALE": "mu_scale", "_O_SDV": "sd_between", "_O_SDS": "sd_within",
    "_O_PAT": "patterns", "_O_NQ": "pattern_rows", "_O_W": "pattern_scatter", "_O_N": "n",
    "_O_MEAN": "mean", "_O_GROUPS": "size_groups"}


@pytest.mark.parametrize("module, names", [(cow, ONEWAY_CONSTANTS), (cmv, MV_CONSTANTS)],
                         ids=["oneway", "multivariate"])
def test_kernel_index_constants_are_the_layout_s(module, names):
    """Each index the numba kernels read is the layout's index of the entry it means (a swapped
    pair in the kernels' unpacking would read tau's scale as sigma's); every entry is read."""
    lay = module.LAYOUT
    for const, entry in names.items():
        assert getattr(module, const) == lay.index(entry), const
    assert set(names.values()) == set(lay.scalars) | set(lay.arrays)
    assert module.HEADER == lay.header and module._SIZE == lay.size_slot


def test_oneway_block_reads_back_what_the_packer_wrote(unbalanced):
    """``LAYOUT.unpack(parameter_block(...))``: the data totals, the priors (family codes,
    scales, nu) and the per-size statistics of size_groups, in the layout's entries."""
    priors = Priors.default(unbalanced)
    scalars, arrays = cow.LAYOUT.unpack(cow.parameter_block(unbalanced.stats, priors))
    n, xbar, ss = unbalanced.stats.column(0)
    assert scalars["K"] == 3 and scalars["N"] == 7 and scalars["L"] == 3
    assert scalars["SS"] == pytest.approx(ss.sum(), rel=1e-15)
    assert (scalars["mu_loc"], scalars["mu_scale"]) == (priors.mu.loc, priors.mu.scale)
    assert (scalars["center"], scalars["scale"]) == (priors.center, priors.scale)
    for name, prior in (("tau", priors.tau), ("sigma", priors.sigma)):
        assert scalars[f"{name}_family"] == cow.FAMILY_CODE[prior.family]
        assert (scalars[f"{name}_scale"], scalars[f"{name}_nu"]) == (prior.scale, prior.nu)
    for key, want in zip(("sizes", "count", "mean", "scatter"), cow.size_groups(n, xbar),
                         strict=True):
        np.testing.assert_array_equal(arrays[key], want)
    np.testing.assert_array_equal(arrays["sizes"], [1.0, 2.0, 4.0])


def test_multivariate_block_reads_back_what_the_packer_wrote(make_partly_missing):
    """``LAYOUT.unpack(parameter_block(...))``: pattern statistics, the partly observed clusters
    one by one, the complete ones grouped by size, and the priors on the standardised scale."""
    from varcomp.models.mvstats import pattern_stats

    data = make_partly_missing(2, 5, L=12, prob=0.1)
    priors = MvPriors.default(data)
    scalars, arrays = cmv.LAYOUT.unpack(cmv.parameter_block(data, priors))
    st = pattern_stats(data)
    info = (st.n.sum(axis=1) > 0) & ~st.complete_only
    assert 0 < info.sum() < data.n_groups  # both parts present
    assert (scalars["p"], scalars["n_patterns"], scalars["n_dim"]) == (2, len(st.patterns), 8)
    assert scalars["L"] == info.sum() and scalars["n_complete"] == st.complete_only.sum()
    assert (scalars["eta_between"], scalars["eta_within"]) == (priors.eta_between,
                                                               priors.eta_within)
    np.testing.assert_array_equal(arrays["patterns"], st.patterns.ravel())
    np.testing.assert_array_equal(arrays["pattern_rows"], st.n.sum(axis=0))
    np.testing.assert_array_equal(arrays["pattern_scatter"], st.scatter.ravel())
    np.testing.assert_array_equal(arrays["n"], st.n[info].ravel())
    np.testing.assert_array_equal(arrays["sd_between"],
                                  np.asarray(priors.tau_scale) / np.asarray(priors.scale))
    groups = arrays["size_groups"].reshape(int(scalars["n_size_groups"]), 2 + 2 + 4)
    sizes = st.n[st.complete_only, st.complete_index]
    np.testing.assert_array_equal(groups[:, 0], np.unique(sizes))
    assert groups[:, 1].sum() == st.complete_only.sum()


@pytest.mark.parametrize("module", [cow, cmv], ids=["oneway", "multivariate"])
def test_kernels_read_the_constant_where_the_layout_puts_it(module, unbalanced,
                                                            make_partly_missing):
    """Adding 1 to the block's ``const`` entry (unpack, change, pack) adds exactly 1 to the
    compiled log density and leaves its gradient alone: kernel and layout agree on the slot."""
    if module is cow:
        block = cow.parameter_block(unbalanced.stats, Priors.default(unbalanced))
        x = np.array([0.2, -0.3, 0.1])
    else:
        block = cmv.parameter_block(make_partly_missing(2, 1))
        x = np.random.default_rng(0).normal(scale=0.5, size=8)
    scalars, arrays = module.LAYOUT.unpack(block)
    moved = module.LAYOUT.pack(scalars | {"const": scalars["const"] + 1.0}, arrays)
    value, grad = module.logp_and_grad(x, block)
    value2, grad2 = module.logp_and_grad(x, moved)
    assert value2 - value == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_array_equal(grad2, grad)
