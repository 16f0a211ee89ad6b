"""What a small fit's process loads and compiles (issue 18); times are measured by make bench.

Each check runs ``varcomp`` in a fresh interpreter, since what a process imports and compiles
is only visible from its start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

LISTEN = textwrap.dedent("""
    import json, sys
    from numba.core import event

    seen = []

    class Listener(event.Listener):
        def on_start(self, ev):
            seen.append(ev.kind)

        def on_end(self, ev):
            pass

    # numba:run_pass fires for every compilation (jit and vectorize alike), never for a
    # function loaded from numba's on-disk cache.
    for kind in ("numba:compile", "numba:run_pass"):
        event.register(kind, Listener())
""")
RUN = LISTEN + textwrap.dedent("""
    from varcomp.analyses.cli import main

    code = main(sys.argv[2:], whole_process=sys.argv[1] == "whole")
    heavy = sorted({m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
                   & {"pymc", "pytensor", "dask", "distributed"})
    print(json.dumps({"code": code, "compilations": len(seen), "heavy": heavy}),
          file=sys.stderr)
""")


def _run(args: list[str], whole: bool = True) -> dict:
    res = subprocess.run([sys.executable, "-c", RUN, "whole" if whole else "library", *args],
                         capture_output=True, text=True, timeout=600)
    return json.loads(res.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["dyestuff"],
    pytest.param(["gcsemv", "--group", "school", "--response", "written", "--response",
                  "course"], marks=pytest.mark.slow),
    pytest.param(["pastes", "--formula", "strength ~ 1 + (1|batch/cask)"],
                 marks=pytest.mark.slow),
], ids=["oneway", "multivariate", "nested"])
def test_sufficient_fit_imports_no_pymc_and_compiles_nothing_once_cached(args, tmp_path):
    """The compiled sufficient route needs neither pymc nor pytensor (nor Dask, which xarray's
    NetCDF writer would import), and a second run finds every numba function in its cache
    (the first may fill it, as on a fresh clone)."""
    first = _run(["fit", *args, "--draws", "300", "--tune", "300", "--out", str(tmp_path / "a")])
    assert first["code"] == 0 and first["heavy"] == []
    second = _run(["fit", *args, "--draws", "300", "--tune", "300", "--out",
                   str(tmp_path / "b")])
    assert second == {"code": 0, "compilations": 0, "heavy": []}


def test_the_detector_sees_a_compilation():
    """The listener is trusted because it fires when numba does compile, both kinds that a
    run could hit: a jit function and an eagerly typed vectorize (ArviZ's ECDF kind)."""
    code = LISTEN + textwrap.dedent("""
        import numba

        numba.njit(lambda x: x + 1)(1)
        jit = len(seen)
        numba.vectorize(["float64(float64)"])(lambda x: 2.0 * x)
        print(jit, len(seen) - jit)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    jit, vectorize = map(int, res.stdout.split())
    assert jit > 0 and vectorize > 0


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["fit", "--draws", "0", "x"],
                                  ["bogus"]])
def test_help_and_argument_errors_import_nothing_heavy(args):
    """``varcomp --help`` and argument errors answer before numpy, pandas or ArviZ load."""
    code = textwrap.dedent("""
        import sys
        from varcomp.analyses.cli import main
        try:
            main(sys.argv[1:])
        except SystemExit:
            pass
        print(sorted({m.split(".")[0] for m in sys.modules}
                     & {"numpy", "pandas", "scipy", "arviz", "pymc", "numba", "matplotlib"}))
    """)
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr


def test_console_pauses_the_collector_for_imports_only(tmp_path):
    """``varcomp`` (the console script) runs its imports without cyclic GC and its fit with it,
    the import-time heap frozen; a library call of ``main`` leaves the collector as it was."""
    code = textwrap.dedent(f"""
        import gc, os, sys
        from varcomp.analyses import cli

        real_exit = os._exit
        def report(code):
            print(code, gc.isenabled(), gc.get_freeze_count() > 100_000, flush=True)
            real_exit(0)
        os._exit = report
        if sys.argv[1] == "library":
            code = cli.main(["fit", "dyestuff", "--draws", "200", "--out", {str(tmp_path / "l")!r}])
            report(code)
        sys.argv = ["varcomp", "fit", "dyestuff", "--draws", "200", "--out",
                    {str(tmp_path / "c")!r}]
        cli.console()
    """)
    said = {}
    for how in ("console", "library"):
        res = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                             timeout=300)
        said[how] = res.stdout.split()[-3:]
    assert said == {"console": ["0", "True", "True"], "library": ["0", "True", "False"]}, said
