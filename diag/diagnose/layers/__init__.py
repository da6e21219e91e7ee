"""Which decoder layer makes an exported model differ from torch (:func:`localize_layer`).

* :mod:`~diag.diagnose.layers.stages`: the compared stages of the torch model
  (embedding, each decoder layer, final norm, logits);
* :mod:`~diag.diagnose.layers.inputs`: the caller's inputs completed into the torch
  arguments and the ONNX feeds;
* :mod:`~diag.diagnose.layers.torch_capture`: the torch values (forward hooks);
* :mod:`~diag.diagnose.layers.onnx_intermediates`: the ONNX values (module scopes or
  the residual stream, on ``onnx_ir``) and the session that returns them;
* :mod:`~diag.diagnose.layers.routing`: the experts each MoE router chose on both sides;
* :mod:`~diag.diagnose.layers.localize`: the comparison, its tolerance and its result.

Example::

    result = diag.localize_layer(model, "model.onnx", input_ids)
    print(result)  # the first stage whose difference exceeds its tolerance
"""

from __future__ import annotations

from diag.diagnose.layers.localize import LayerLocalization, localize_layer, scaled_difference
from diag.diagnose.layers.stages import Stage, model_stages

__all__ = ["LayerLocalization", "Stage", "localize_layer", "model_stages", "scaled_difference"]
