"""Sphinx configuration of the course website (``make site``).

The sources are the repository's own files, read in place: the executed notebooks (rendered as
committed, never re-executed), the pages of docs/, the instructor's guide, and this folder's
landing page and API reference. MathJax is served from a local copy that the build takes from
the ``jupyter-server-mathjax`` package, so the site renders formulas with no network at all.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import decorr_lite  # noqa: E402

project = "decorr-lite"
author = "The decorr-lite authors"
copyright = "2026, The decorr-lite authors (code: MIT; course material: CC BY 4.0)"
release = version = decorr_lite.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

root_doc = "site/index"
# read only the course's files from the repository root (the source folder)
include_patterns = [
    "site/*.md",
    "docs/*.md",
    "notebooks/[0-9][0-9]_*.ipynb",
    "notebooks/TEACHING.md",
    "notebooks/README.md",
]
exclude_patterns = ["build/**", ".venv/**", "student/**"]

# notebooks: shown as committed (executed), never run by the build
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # the notebooks start at heading level 1 and skip no level on purpose

# API reference from the docstrings
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# MathJax 2.7 from the jupyter-server-mathjax wheel, copied into the site: no CDN at view time
MATHJAX = ROOT / "build" / "site-static" / "mathjax"


def _local_mathjax() -> None:
    import jupyter_server_mathjax

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (MATHJAX / "MathJax.js").is_file():
        shutil.copytree(source, MATHJAX, dirs_exist_ok=True)


_local_mathjax()
html_static_path = [str(MATHJAX.parent)]
# The wheel ships MathJax's one combined configuration (TeX input, HTML-CSS output) and its
# STIX-Web fonts, not its TeX ones: draw with STIX-Web. (HTML-CSS still probes for two TeX fonts,
# MathJax_AMS and MathJax_Script, and falls back to STIX-Web when they are not there; the site
# test allows exactly those two requests to fail.)
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# the pages mark their body tex2jax_ignore and each formula "math": typeset those, and only those
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processClass": "tex2jax_process|mathjax_process|math|output_area",
        "ignoreClass": "tex2jax_ignore|mathjax_ignore",
    },
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
}

html_theme = "sphinx_book_theme"
html_title = f"decorr-lite {release}"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_show_sourcelink = False
html_copy_source = False
