"""The last stage of an export: the record of the file kept, so that the next export
with the same key (:mod:`diag.export.plan.export_key`) reuses it; it imports the stages
before it only.

* :mod:`~diag.export.record.export_cache`: the sidecar of an export and the test that a
  file with a given key is there;
* :mod:`~diag.export.record.cache_eviction`: the export cache kept within its size budget;
* :mod:`~diag.export.record.result`: :class:`ExportResult`, what an export did, and its
  entry in the sidecar.

Example::

    >>> from diag.export.record.export_cache import sidecar_path
    >>> sidecar_path("model.onnx")
    'model.onnx.json'
"""
