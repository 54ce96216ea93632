"""Sphinx configuration of the toolkit's documentation site (``make docs``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "neural-collapse-depth"
author = "neural-collapse-depth developers"
release = "0.1.0"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "tutorials/*.py", "benchmarks_*.md"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # dataclass fields: no duplicate object entries
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
myst_enable_extensions = ["dollarmath"]
html_theme = "alabaster"
html_title = "neural-collapse-depth"
# numpydoc types such as "array of shape (K, d)" name dataclass fields too; those ambiguous
# cross-references are harmless
suppress_warnings = ["myst.header", "ref.python"]
