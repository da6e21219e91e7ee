"""The command line: ``python -m diag <command>`` or ``diag <command>``.

Commands

* ``diag generate``: generates text with one backend (``torch`` = :func:`diag.generate`,
  ``onnx`` = :func:`diag.onnx_generate`, ``hf`` = ``model.generate``) and prints the
  latency report of LLM inference scripts.
* ``diag export``: exports a model to ONNX and prints the validation report.
* ``diag compare``: the main job; runs the three backends on the same prompts, checks
  that they generate the same tokens, prints a table and writes a CSV and a bar plot.
* ``diag versions`` (or ``diag --version``): diag's version and the installed releases of
  torch, transformers, onnx, onnxruntime, onnxscript and onnx-ir against the tested ones.

Example::

    python -m diag compare --model tiny:llama --max-new-tokens 10 --output results/

The modules here import torch and transformers only inside the command handlers so that
``diag --help`` stays fast.
"""
