"""diag: show, measure and check how a causal language model generates text,
in PyTorch and in ONNX Runtime, side by side.

Every public name is importable from ``diag`` directly::

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

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # helpers
    "string_type": "diag.helpers.string_type",
    "max_diff": "diag.helpers.max_diff",
    "to_any": "diag.helpers.torch_helper",
    "get_weight_type": "diag.helpers.torch_helper",
    "make_dynamic_cache": "diag.helpers.cache_helper",
    "measure_bandwidth": "diag.helpers.bandwidth",
    # model zoo
    "get_untrained_model_with_inputs": "diag.models",
    "load_pretrained": "diag.models",
    "cache_layout": "diag.models",
    # generation (torch) and the shared decoding core
    "generate": "diag.generation",
    "GenerateResult": "diag.generation",
    "UNSET": "diag.generation",
    # export
    "torch_export_patches": "diag.export",
    "to_onnx": "diag.export",
    "export_causal_lm": "diag.export",
    # onnxruntime, and the contract it reads an exported model against
    "onnx_generate": "diag.generation",
    "read_contract": "diag.contract",
    "detect_layout": "diag.contract.detect",
    "inspect_onnx": "diag.contract.inspection",
    "Layout": "diag.contract",
    "ContractError": "diag.contract",
    # diagnosis
    "compare_teacher_forced": "diag.diagnose",
    "first_divergence": "diag.diagnose",
    "find_divergence": "diag.diagnose",
    "Divergence": "diag.diagnose",
    "Candidate": "diag.diagnose",
    "localize_layer": "diag.diagnose",
    "LayerLocalization": "diag.diagnose",
    "plot_teacher_forced": "diag.diagnose",
    "plot_layers": "diag.diagnose",
    # regression tests (the submodule itself: diag.testing.record, ...)
    "testing": "diag.testing",
    "assert_same_tokens": "diag.testing",
    "assert_logits_close": "diag.testing",
    "assert_matches_record": "diag.testing",
    # quantization: the options of export_causal_lm(quantize=...) and the report
    "QuantizeOptions": "diag.export",
    "quantization_report": "diag.diagnose",
    "plot_quantization": "diag.diagnose",
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
