"""The first stage of an export: what it will make, decided before anything is traced,
from the model and the options alone; it imports no other stage.

* :mod:`~diag.export.plan.export_plan`: the options checked, the key that names the
  export in the cache, the file, the input and output names (:func:`~diag.export.plan.export_plan.plan_export`);
* :mod:`~diag.export.plan.model`: the model refused when it is not a causal LM with a
  cache, its name, the optional inputs its forward takes;
* :mod:`~diag.export.plan.option_checks`: the checks of the exporter, the opset, the
  attention op, the cache and its length;
* :mod:`~diag.export.plan.export_options`, :mod:`~diag.export.plan.trace_options`,
  :mod:`~diag.export.plan.quantize_options`: the options asked, how the make stage
  traces, what it quantizes;
* :mod:`~diag.export.plan.plain_layout`: the ``layout=`` option;
* :mod:`~diag.export.plan.dtype`: the file's dtype and its metadata entry;
* :mod:`~diag.export.plan.generation_config`: the model's generation config, its
  metadata entry (it is in the key);
* :mod:`~diag.export.plan.export_key`: the key of an export in the cache and the
  cache's folder;
* :mod:`~diag.export.plan.causal_lm_names`: the contract's names of a graph that
  :func:`diag.to_onnx` traced with its cache.

Example::

    >>> from diag.export.plan.plain_layout import check_layout
    >>> check_layout("diag")
    'diag'
"""
