"""Make every warning raised by a gallery script an error.

The gallery pages teach: a warning printed in the middle of one (a deprecated
argument, a dtype mismatch, a cache format about to change) is either a bug in the
script or in ``diag``, and nobody reads the stderr of a docs build. So while a script
runs, warnings are turned into exceptions; sphinx-gallery then aborts the build
(``abort_on_example_error``) and names the script and the line.

Two places use it:

* ``conf.py`` lists :func:`warnings_as_errors` in sphinx-gallery's ``reset_modules``,
  which calls it before and after each script (``when="before"`` / ``"after"``),
  and orders the pages with :func:`example_order`;
* ``unittests/test_gallery.py`` runs each script in a subprocess through
  :func:`run_script`, so the fast mode fails on the same warnings as the docs build.

While a script runs, transformers' progress bars (``Loading weights``, ``Writing model
shards``) are off: they are written on stderr, which sphinx-gallery puts in the page.

One warning is let through: diag's :class:`~diag.compat.versions.UntestedReleaseWarning`
(a transformers newer than the tested ones). The page then works and says so in one
line of its output, printed once, instead of failing the day a release comes out.

Example::

    >>> import warnings
    >>> install_filters()
    >>> try:
    ...     warnings.warn("something is off", UserWarning)
    ... except UserWarning as e:
    ...     print("raised:", e)
    raised: something is off
"""

from __future__ import annotations

import os
import runpy
import sys
import warnings

from diag.compat.versions import UntestedReleaseWarning
from diag.models.pretrained.load import transformers_progress

# Known third-party noise that no gallery script can avoid, as
# (action, message regex, category, module regex). Keep it short and say why:
# each entry hides a warning on every page.
IGNORED: list[tuple[str, str, type[Warning], str]] = [
    # matplotlib's font cache rebuild on a fresh machine, not about the script.
    ("ignore", r"Matplotlib is building the font cache", UserWarning, ""),
]

# the contexts opened before a script and closed after it: the warning filters and the
# progress bars switched off
_contexts: list = []


def install_filters() -> None:
    """Turns warnings into errors, except the :data:`IGNORED` ones and diag's
    :class:`~diag.compat.versions.UntestedReleaseWarning`, printed once on stdout."""
    warnings.simplefilter("error")
    # filterwarnings inserts at the front: the ignore-list wins over "error".
    for action, message, category, module in IGNORED:
        warnings.filterwarnings(action, message=message, category=category, module=module)
    warnings.filterwarnings("once", category=UntestedReleaseWarning)
    warnings.showwarning = show_on_stdout


def show_on_stdout(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of a script: one line on stdout, which the page shows
    (sphinx-gallery captures stdout; stderr goes to the build's log, which nobody reads)."""
    print(f"{category.__name__}: {message}")


def warnings_as_errors(gallery_conf: dict, fname: str, when: str) -> None:
    """sphinx-gallery ``reset_modules`` hook: errors during a script, then restore.

    Called with ``when="before"`` before each script runs and ``when="after"`` once it
    has run; Sphinx's own warnings (outside the scripts) keep their usual handling.
    """
    if when == "before":
        # catch_warnings saves the filters and restores them on exit (it also resets
        # the "already shown" registries, so a warning seen earlier still raises).
        _contexts[:] = [warnings.catch_warnings(), transformers_progress(False)]
        for context in _contexts:
            context.__enter__()
        install_filters()
    else:
        while _contexts:
            _contexts.pop().__exit__(None, None, None)


#: the sections of the gallery, subfolders of ``examples_gallery/`` (each with its
#: README.txt: the title and a line per page), in the order of the index
SECTIONS = ["generate", "export", "onnxruntime", "diagnose", "speed"]

#: order of the pages inside a section: the tour first, then one topic each; others by
#: name after
ORDER = [
    "plot_generate.py",
    "plot_sampling.py",
    "plot_beam_search.py",
    "plot_batch.py",
    "plot_export_patches.py",
    "plot_parity.py",
    "plot_diagnose.py",
    "plot_regression_tests.py",
]


def example_order(filename: str) -> tuple[int, str]:
    """sphinx-gallery ``within_subsection_order`` key: :data:`ORDER`, then by name.

    >>> sorted(["plot_b.py", "plot_parity.py", "plot_generate.py"], key=example_order)
    ['plot_generate.py', 'plot_parity.py', 'plot_b.py']
    """
    name = os.path.basename(filename)
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def run_script(path: str) -> None:
    """Runs a gallery script as ``__main__`` with warnings turned into errors.

    ``python _doc/gallery_hooks.py examples_gallery/generate/plot_generate.py`` runs one
    script the way the docs build does.
    """
    install_filters()
    sys.argv = [path]
    with transformers_progress(False):
        runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isfile(sys.argv[1]):
        raise SystemExit(
            "usage: python _doc/gallery_hooks.py examples_gallery/<section>/plot_<name>.py"
        )
    run_script(sys.argv[1])
