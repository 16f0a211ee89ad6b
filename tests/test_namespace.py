"""One import name (issue 23): everything lives inside ``varcomp``; a user's own ``models.py`` or
``analyses/`` package in the working directory shadows nothing, in an editable install (this venv)
and in a non-editable one (a wheel built from this tree, installed into a folder of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (
    "import sys, varcomp; "
    "from varcomp.analyses.fit import fit; from varcomp.models.data import load; "
    "import models, analyses; "
    "assert models.MINE == 1 and analyses.MINE == 2, 'the user modules are theirs'; "
    "d = load('dyestuff', group='Batch', response='Yield'); "
    "print(varcomp.__file__, d.n_obs if hasattr(d, 'n_obs') else len(d.y))"
)


def _user_folder(tmp_path: Path) -> Path:
    """A folder as a Django or ML project has it: a models.py and an analyses/ package."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "models.py").write_text("MINE = 1\n")
    (tmp_path / "analyses").mkdir()
    (tmp_path / "analyses" / "__init__.py").write_text("MINE = 2\n")
    return tmp_path


def test_editable_install_ignores_a_users_models_and_analyses(tmp_path):
    cwd = _user_folder(tmp_path)
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == "30"
    exe = Path(sys.executable).with_name("varcomp")
    res = subprocess.run([str(exe), "describe", "dyestuff"], cwd=cwd, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert "6" in res.stdout
    res = subprocess.run([sys.executable, "-m", "varcomp", "datasets"], cwd=cwd,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "dyestuff" in res.stdout, res.stderr


def test_every_subpackage_is_listed_in_the_build():
    """A new folder with an __init__.py under models/ or analyses/ must be mapped into varcomp."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"varcomp." + ".".join(p.parent.relative_to(ROOT).parts)
             for top in ("models", "analyses") for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, found - listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                          "--disable-pip-version-check", "-w", str(out), str(ROOT)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"building the wheel failed: {res.stderr[-2000:]}")
    return next(out.glob("varcomp-*.whl"))


def test_the_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"varcomp"}, tops
    for needed in ("varcomp/models/compiled/oneway.py", "varcomp/analyses/report/static/style.css",
                   "varcomp/data/dyestuff.csv", "varcomp/analyses/report/templates/report.html.j2"):
        assert needed in names, needed


def test_non_editable_install_ignores_a_users_models_and_analyses(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    assert not (target / "models").exists() and not (target / "analyses").exists()
    cwd = _user_folder(tmp_path / "project")
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=cwd, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0].startswith(str(target)), res.stdout
    res = subprocess.run([sys.executable, "-m", "varcomp", "describe", "dyestuff"], cwd=cwd,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
