"""Where torch and ONNX disagree: per step, at the first diverging token, per layer.

* :func:`compare_teacher_forced`: both backends read the same tokens step by step;
  per-step logits difference, argmax agreement, top-k overlap, KL divergence.
* :func:`first_divergence`: free-running generation on both sides; the first step
  where the tokens differ, each side's top-k candidates and margins, and whether it
  is a near tie. :func:`diag.diagnose.sides.compare_results` does the same on two
  generations already made (``python -m diag compare`` uses it for its parity
  verdict), two beam searches step by step (:mod:`diag.diagnose.beams`), the others
  by their tokens and logits (:func:`find_divergence`).
* :func:`localize_layer`: one input, hidden states compared after every decoder
  layer; the first layer beyond the tolerance.
* :func:`quantization_report`: teacher-forced and free-running comparisons on several
  prompts and a perplexity, for a quantized export against float32 torch.
* :mod:`diag.diagnose.kernel_time`: where ONNX Runtime spends a generation's time, per
  operator type (the prefill and a decode step apart).
* :func:`plot_teacher_forced`, :func:`plot_layers`, :func:`plot_quantization`:
  matplotlib views of the above.

Example::

    import diag
    df = diag.compare_teacher_forced(model, "model.onnx", ids, max_new_tokens=20)
    print(diag.first_divergence(model, "model.onnx", ids, max_new_tokens=20))
    print(diag.localize_layer(model, "model.onnx", {"input_ids": ids}).culprit)
"""

from diag.diagnose.divergence import Candidate, Divergence, find_divergence
from diag.diagnose.free_running import first_divergence
from diag.diagnose.layers import LayerLocalization, localize_layer, model_stages
from diag.diagnose.metrics import perplexity, step_metrics, token_log_prob
from diag.diagnose.plot import plot_layers, plot_quantization, plot_teacher_forced
from diag.diagnose.quantization import QuantizationReport, quantization_report
from diag.diagnose.teacher_forced import compare_teacher_forced

__all__ = [
    "Candidate",
    "Divergence",
    "LayerLocalization",
    "QuantizationReport",
    "compare_teacher_forced",
    "find_divergence",
    "first_divergence",
    "localize_layer",
    "model_stages",
    "perplexity",
    "plot_layers",
    "plot_quantization",
    "plot_teacher_forced",
    "quantization_report",
    "step_metrics",
    "token_log_prob",
]
