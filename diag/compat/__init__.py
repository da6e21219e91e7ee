"""What differs between the releases of the libraries diag depends on, in one place.

* :mod:`diag.compat.transformers_api`: the names and classes of transformers that
  moved between the releases diag supports (the forward's cache argument and output
  field, the cache classes, the targets of the export patches), found by
  introspection of the installed release;
* :mod:`diag.compat.onnxscript_api`: the pieces of onnxscript that are not public
  (the shipped fusions diag's rewrite rules reuse, the matcher's private methods);
* :mod:`diag.compat.versions`: the tested set of releases, what is installed, and
  whether it lies inside the tested range (``python -m diag versions``).

Nothing else in diag compares version numbers or probes a signature of transformers:
a new release that moves something is handled here, once.

Example::

    >>> from diag.compat.transformers_api import CACHE_ARGUMENTS
    >>> "past_key_values" in CACHE_ARGUMENTS
    True
"""
