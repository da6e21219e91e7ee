"""diag: show, measure and check how a causal language model generates text,
in PyTorch and in ONNX Runtime, side by side.

The verbs a user calls are importable from ``diag`` directly; helpers and plumbing
are public in their sub-packages (``diag.helpers.string_type``,
``diag.contract.read_contract``...)::

    import diag
    model, tokenizer = diag.load_pretrained("smollm2-135m-instruct")
    tokens = diag.generate(model, tokenizer("def f(x):", return_tensors="pt").input_ids,
                           max_new_tokens=20)

Names are resolved lazily: ``import diag`` stays cheap and never fails because an
optional piece (or a changed transformers / torch) cannot be imported; the error
comes, with its message, when that piece is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it: the verbs a user calls and the values they
# pass or get back; helpers and plumbing are public in their sub-packages
# (diag.helpers, diag.contract, diag.diagnose, diag.models, diag.generation)
_LAZY: dict[str, str] = {
    # model zoo
    "get_untrained_model_with_inputs": "diag.models",
    "load_pretrained": "diag.models",
    # generation, torch and ONNX Runtime
    "generate": "diag.generation",
    "onnx_generate": "diag.generation",
    "GenerateResult": "diag.generation",
    # export
    "torch_export_patches": "diag.export",
    "to_onnx": "diag.export",
    "export_causal_lm": "diag.export",
    "QuantizeOptions": "diag.export",
    "inspect_onnx": "diag.contract.inspection",
    # diagnosis
    "compare_teacher_forced": "diag.diagnose",
    "first_divergence": "diag.diagnose",
    "find_divergence": "diag.diagnose",
    "localize_layer": "diag.diagnose",
    "plot_teacher_forced": "diag.diagnose",
    "plot_layers": "diag.diagnose",
    "quantization_report": "diag.diagnose",
    "plot_quantization": "diag.diagnose",
    # regression tests (the submodule itself: diag.testing.record, ...)
    "testing": "diag.testing",
    "assert_same_tokens": "diag.testing",
    "assert_logits_close": "diag.testing",
    "assert_matches_record": "diag.testing",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diag' has no attribute {name!r}")
    imported = importlib.import_module(module)
    # a submodule maps to itself
    value = imported if module == f"diag.{name}" else getattr(imported, name)
    globals()[name] = value  # next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
