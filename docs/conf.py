"""Sphinx configuration of the varcomp documentation (``make docs``).

The tutorials are MyST-markdown notebooks (``.md`` with a jupytext header) that myst-nb executes on
every build: their outputs are computed, never stored in the repository. The build runs with
warnings as errors (``sphinx-build -W --keep-going``); a failing cell fails it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the executed notebooks and autodoc import the installed (editable) varcomp

project = "varcomp"
author = "the varcomp developers"
copyright = "2026, the varcomp developers"

from varcomp import __version__ as release  # noqa: E402

version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# --- MyST and notebook execution -------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Execute every notebook on every build ("force"): CI checks the tutorials against today's code,
# and no cache can hide a stale output. VARCOMP_DOCS_EXECUTE=cache re-runs only changed notebooks
# while writing docs locally (jupyter-cache in docs/_build/.jupyter_cache).
nb_execution_mode = os.environ.get("VARCOMP_DOCS_EXECUTE", "force")
nb_execution_cache_path = str(ROOT / "docs" / "_build" / ".jupyter_cache")
nb_execution_timeout = 900  # seconds per cell: a cold numba cache compiles the kernels once
# a failing cell is a warning (the build goes on to report every notebook's failure; -W fails it)
nb_execution_raise_on_error = False
nb_execution_show_tb = True
nb_kernel_rgx_aliases = {".*": "python3"}
nb_merge_streams = True

# --- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
# "Attributes" sections as fields of the class, not a second description of each dataclass field
napoleon_use_ivar = True
# the docstrings cross-reference names like :func:`models.forms.family_of` (repository paths):
# unresolved references are not warnings unless nitpicky, which stays off
nitpicky = False
# numpydoc types such as "(p,) array" are cross-referenced by the Python domain; names like ``p``
# and ``mu`` are attributes of several classes, so the lookup is ambiguous: not a broken reference
suppress_warnings = ["ref.python"]

# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"varcomp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
