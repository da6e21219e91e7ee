"""The second stage of an export: the ONNX file, traced, rewritten, optimised, quantized.

* :mod:`~diag.export.build.patches`: :func:`diag.torch_export_patches`, what makes
  transformers' models and caches traceable (:mod:`~diag.export.build.cache_pytree`:
  the caches as pytree nodes);
* :mod:`~diag.export.build.onnx_export`: :func:`diag.to_onnx`, trace and translate;
  :mod:`~diag.export.build.decoder_export` and :mod:`~diag.export.build.static_export`:
  a causal LM with a growing or a static cache (:mod:`~diag.export.build.static_cache`),
  its ``logits_to_keep`` input (:mod:`~diag.export.build.logits_to_keep`) and its
  attention op (:mod:`~diag.export.build.attention_kind`);
* :mod:`~diag.export.build.optimize`, :mod:`~diag.export.build.weight_transpose`,
  :mod:`~diag.export.build.rewrite`, :mod:`~diag.export.build.rename`: the graph
  optimised, fused and named after the contract;
* :mod:`~diag.export.build.quantize` and :mod:`~diag.export.build.quantize_experts`:
  the weights quantized by ONNX Runtime's tools.

Example::

    >>> from diag.export.build.static_export import check_max_length
    >>> check_max_length("static", 128)
    128
"""
