"""Sphinx configuration of diag's documentation.

Build (executes every gallery script on the real model, SmolLM2-135M-Instruct)::

    python -m sphinx -W -n --keep-going -b html _doc _doc/_build/html

``-W`` turns Sphinx warnings into errors, ``-n`` makes a reference that links nowhere
one; a warning raised *inside* a gallery script
is turned into an exception by :mod:`gallery_hooks` and aborts the build as well.
``DIAG_FAST=1`` in the environment runs the gallery on a tiny untrained model instead
(minutes become seconds; the texts are then random tokens).
``DIAG_GALLERY_PATTERN`` (a regular expression, default ``plot_``) executes only the
pages whose path it matches.
"""

from __future__ import annotations

import os
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # the repository: ``import diag``
sys.path.insert(0, _HERE)  # ``gallery_hooks``

# The gallery scripts save their figures in DIAG_GALLERY_OUT (default: the current
# folder). sphinx-gallery runs them from examples_gallery/, so point it into the
# build folder to keep the sources clean; the pages get the figures through the
# matplotlib scraper, not through these files.
os.environ.setdefault("DIAG_GALLERY_OUT", os.path.join(_HERE, "_build", "gallery_figures"))
os.makedirs(os.environ["DIAG_GALLERY_OUT"], exist_ok=True)

import gallery_hooks  # noqa: E402
import make_inventories  # noqa: E402
import reference_paths  # noqa: E402
from api_check import check_api_page  # noqa: E402

import diag  # noqa: E402

project = "diag"
author = "diag developers"
copyright = "2026, diag developers"
release = diag.__version__
version = diag.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# diag's docstrings are reStructuredText field lists (``:param x:``), not Google or
# NumPy sections: no napoleon, which would read an attribute's "static cache: ..." as
# a type named "static cache"

# --- intersphinx: offline, every inventory a file of the repository -------------------
# python.inv is Debian's (python3.11-doc); the others are written by make_inventories.py
# from the installed packages for the names these pages refer to (rerun it when a new
# external name shows up in a ``-n`` build). No entry may point at the network: the
# docs build must pass on a machine without it.
intersphinx_mapping = make_inventories.intersphinx_mapping()
# References no inventory can resolve, each with its reason:
nitpick_ignore = [
    # a type hint naming onnxscript's rewrite rule by its private module; onnxscript
    # publishes no API page for the class
    ("py:class", "onnxscript.rewriter._rewrite_rule.RewriteRule"),
    # ONNX Runtime's Python API reference has no entry for its quantization tools (its
    # quantization page describes them in prose)
    ("py:class", "onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer"),
    ("py:func", "onnxruntime.quantization.quantize_dynamic"),
    # the type variable of diag.helpers.timing's generic classes: autodoc writes it as a
    # class in the signatures, it has no entry of its own
    ("py:class", "diag.helpers.timing.T"),
]
# --- end intersphinx ------------------------------------------------------------------

templates_path = []
exclude_patterns = ["_build", "auto_examples/**.ipynb", "auto_examples/**.py"]

html_theme = "furo"
html_title = f"diag {release}"
# long code and output lines wrap at the page's width instead of being cut off
html_static_path = ["_static"]
html_css_files = ["wrap.css"]


# a public name added to diag without its entry in api.rst fails the build, naming the line
check_api_page(os.path.join(_HERE, "api.rst"), diag)


def _gallery_pattern() -> str:
    """The pages to execute: ``DIAG_GALLERY_PATTERN``, a regular expression searched in
    each script's path (sphinx-gallery's ``filename_pattern``), default every page.

    Example: ``DIAG_GALLERY_PATTERN=plot_batch`` rebuilds the batch page alone.
    """
    pattern = os.environ.get("DIAG_GALLERY_PATTERN", "plot_")
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(
            f"DIAG_GALLERY_PATTERN={pattern!r} is not a regular expression ({e}); "
            "give one searched in the scripts' paths, such as 'plot_batch|plot_parity'"
        ) from None
    return pattern


sphinx_gallery_conf = {
    "examples_dirs": "../examples_gallery",
    "gallery_dirs": "auto_examples",
    # the scripts executed (the others are listed, not run): DIAG_GALLERY_PATTERN
    "filename_pattern": _gallery_pattern(),
    "abort_on_example_error": True,
    # always execute: sphinx-gallery skips a script whose source did not change, which
    # would leave the outputs of an earlier DIAG_FAST=1 build in the real pages
    "run_stale_examples": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    # the sections in the index's order (a subfolder left out of the list fails the build)
    "subsection_order": [f"../examples_gallery/{name}" for name in gallery_hooks.SECTIONS],
    "within_subsection_order": "gallery_hooks.example_order",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    # "matplotlib" closes the figures of the previous script; the hook makes any
    # warning raised by a script an error (see gallery_hooks.py).
    "reset_modules": ("matplotlib", "gallery_hooks.warnings_as_errors"),
    "reset_modules_order": "both",
    "min_reported_time": 1,
    "show_memory": False,
    "capture_repr": ("_repr_html_", "__repr__"),
}


# --- every module of diag, one entry each (its docstring) -------------------------
def _write_modules_page() -> None:
    """Writes ``modules.rst`` (not kept in git): one ``automodule`` entry per module of
    diag, so that any ``:mod:`` reference of a docstring or a page has a target and the
    page lists them all, whatever moves."""
    import pkgutil

    import diag

    names = ["diag"] + sorted(
        m.name for m in pkgutil.walk_packages(diag.__path__, "diag.") if ".__main__" not in m.name
    )
    lines = [
        "Modules",
        "=======",
        "",
        "Every module of diag and what it does; the functions and classes a user calls are",
        "in :doc:`api`.",
        "",
    ]
    here = os.path.dirname(__file__)
    documented = set()  # an automodule entry of another page: one entry a module
    for page in os.listdir(here):
        if page.endswith(".rst") and page != "modules.rst":
            with open(os.path.join(here, page), encoding="utf-8") as f:
                documented |= set(re.findall(r"^\.\. automodule:: (\S+)", f.read(), re.M))
    for name in names:
        # a heading each: the page's table of contents is the package's tree
        lines += [name, "-" * len(name), ""]
        if name in documented:
            lines += [f"Documented with its members: :mod:`{name}`.", ""]
        else:
            lines += [f".. automodule:: {name}", "    :no-members:", ""]
    text = "\n".join(lines)
    path = os.path.join(os.path.dirname(__file__), "modules.rst")
    if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
        with open(path, "w", encoding="utf-8") as f:  # unchanged: sphinx rebuilds nothing
            f.write(text)


_write_modules_page()


# --- references to diag objects under any importable path -------------------------
def setup(app):
    # diag.testing.assert_same_tokens (the gallery's path) links to the entry of
    # diag.assert_same_tokens, a type hint's defining module to the public name...
    app.connect("missing-reference", reference_paths.resolve)
