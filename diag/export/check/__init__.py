"""The third stage of an export: the file checked against the torch model; it imports
the plan and the make stage only.

* :mod:`~diag.export.check.validate`: :func:`validate_causal_lm`, ONNX Runtime and torch
  on several input sets, a report per output group;
* :mod:`~diag.export.check.tolerance`: the tolerance of that check (float32 noise
  measured on a float64 copy, quantization);
* :mod:`~diag.export.check.validation_inputs`: the input sets and a step's inputs.

Example::

    >>> from diag.export.check.validation_inputs import DEFAULT_INPUT_SETS
    >>> DEFAULT_INPUT_SETS[0].name
    'prefill'
"""
