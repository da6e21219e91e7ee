"""The first stage of an export: what it will make, decided before anything is traced.

* :mod:`~diag.export.plan.export_plan`: the options checked, the key that names the
  export in the cache, the file, the input and output names (:func:`~diag.export.plan.export_plan.plan_export`);
* :mod:`~diag.export.plan.plain_layout`: the ``layout=`` option;
* :mod:`~diag.export.plan.causal_lm_names`: the contract's names of a graph that
  :func:`diag.to_onnx` traced with its cache.

Example::

    >>> from diag.export.plan.plain_layout import check_layout
    >>> check_layout("diag")
    'diag'
"""
