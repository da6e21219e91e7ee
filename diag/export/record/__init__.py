"""The last stage of an export: the file written and its record kept, so that the next
export with the same key reuses it.

* :mod:`~diag.export.record.save`: a model written atomically, external data included;
* :mod:`~diag.export.record.generation_config`: the model's generation config in the
  file's metadata;
* :mod:`~diag.export.record.export_cache`: the key of an export and its sidecar file;
* :mod:`~diag.export.record.cache_eviction`: the export cache kept within its size budget;
* :mod:`~diag.export.record.result`: :class:`ExportResult`, what an export did, and its
  entry in the sidecar.

Example::

    >>> from diag.export.record.export_cache import sidecar_path
    >>> sidecar_path("model.onnx")
    'model.onnx.json'
"""
