"""The second stage of an export, make: the ONNX file traced, rewritten, optimised,
quantized and saved, as the plan (:mod:`diag.export.plan`) says; it imports the plan only.

* :mod:`~diag.export.make.patches`: :func:`diag.torch_export_patches`, what makes
  transformers' models and caches traceable (:mod:`~diag.export.make.cache_pytree`:
  the caches as pytree nodes);
* :mod:`~diag.export.make.onnx_export`: :func:`diag.to_onnx`, trace and translate;
  :mod:`~diag.export.make.decoder_export` and :mod:`~diag.export.make.static_export`:
  a causal LM with a growing or a static cache (:mod:`~diag.export.make.static_cache`),
  its ``logits_to_keep`` input (:mod:`~diag.export.make.logits_to_keep`) and its
  attention op (:mod:`~diag.export.make.attention_kind`);
* :mod:`~diag.export.make.optimize`, :mod:`~diag.export.make.weight_transpose`,
  :mod:`~diag.export.make.rewrite`, :mod:`~diag.export.make.rename`: the graph
  optimised, fused and named after the contract;
* :mod:`~diag.export.make.quantize` and :mod:`~diag.export.make.quantize_experts`:
  the weights quantized by ONNX Runtime's tools;
* :mod:`~diag.export.make.save`: the file written atomically, external data included.

Example::

    >>> from diag.export.make.logits_to_keep import example_positions
    >>> example_positions(3, {2, 3, 4, 5}).tolist()
    [0, 1, 2, 0, 1, 2]
"""
