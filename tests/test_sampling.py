"""The sampler's trace as InferenceData: varcomp's conversion of the raw trace is nutpie's."""

from __future__ import annotations

import nutpie
import pytest

from varcomp.analyses.fit import prepare
from varcomp.models import family_of, load
from varcomp.models.sampling import sample_compiled, trace_to_idata

SETTINGS = {"draws": 60, "tune": 50, "chains": 3, "cores": 2, "seed": 4}


@pytest.mark.parametrize("dataset", ["dyestuff", "gcsemv"])
def test_trace_to_idata_is_nutpies_conversion(dataset):
    """Scalars (Dyestuff), vectors and matrices over named dims (gcsemv): the same groups,
    variables, values, dtypes, dims, coordinates and attributes (but the creation time) as
    ``nutpie.sample``'s own InferenceData of the same seeded run; a trace that holds the
    warm-up rows gives the same posterior (they are left out, as nutpie does)."""
    data = load(dataset)
    compiled, backend = prepare(family_of(data).form("sufficient"), data)
    assert backend == "native"
    s = SETTINGS
    theirs = nutpie.sample(compiled, draws=s["draws"], tune=s["tune"], chains=s["chains"],
                           cores=s["cores"], seed=s["seed"], progress_bar=False,
                           save_warmup=False)
    ours = sample_compiled(compiled, **s)
    assert ours.groups() == theirs.groups() == ["posterior", "sample_stats"]
    for group in ours.groups():
        a, b = ours[group], theirs[group]
        assert set(a.attrs) == set(b.attrs)
        assert a.attrs["arviz_version"] == b.attrs["arviz_version"]
        assert a.drop_attrs(deep=False).identical(b.drop_attrs(deep=False)), group
        assert list(a.data_vars) == list(b.data_vars)
        for v in a.data_vars:
            assert a[v].dtype == b[v].dtype and a[v].dims == b[v].dims, (group, v)
    raw = nutpie.sample(compiled, draws=s["draws"], tune=s["tune"], chains=s["chains"],
                        cores=s["cores"], seed=s["seed"], progress_bar=False, save_warmup=True,
                        return_raw_trace=True)
    kept = trace_to_idata(raw, compiled)  # warm-up rows are in this trace: sliced off
    assert kept.posterior.identical(ours.posterior.assign_attrs(kept.posterior.attrs))
