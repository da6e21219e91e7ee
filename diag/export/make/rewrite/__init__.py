"""Fuses the small operators of an exported decoder into the ONNX ops made for them.

The exporter translates a transformers decoder op by op: an RMSNorm becomes seven
nodes, a rotary embedding eight per head group, the cache update a ``Concat`` beside
the attention. A decode step of a small model then runs ~1,600 tiny kernels around
its ~200 matrix products, and on a CPU each costs a few microseconds of dispatch and
thread synchronisation. :func:`fuse_decoder` rewrites those patterns into standard
ONNX ops (opset 23, run by ONNX Runtime's CPU and CUDA providers) with rules of
onnxscript's rewriter, each pattern written as the computation it matches, each
refusal with its reason (:func:`explain`). One module per fusion, run in this order:

* ``rms_norm`` (:mod:`~diag.export.make.rewrite.rms_norm`, onnxscript's rules):
  ``x * 1/sqrt(mean(x**2) + eps) * w`` -> ``RMSNormalization``;
* ``rotary`` (:mod:`~diag.export.make.rewrite.rotary`, onnxscript's rule):
  ``x * cos + rotate_half(x) * sin``, ``cos = cos(cat(f, f))`` ->
  ``RotaryEmbedding(x, cos(f), sin(f))``;
* ``attention_past`` (:mod:`~diag.export.make.rewrite.attention_with_cache`):
  ``Attention(q, Concat(past_k, k), Concat(past_v, v))`` -> ``Attention(q, k, v,
  past_k, past_v)`` with ``present`` as its own outputs;
* ``attention_3d`` (:mod:`~diag.export.make.rewrite.attention_3d`): ``Attention`` and
  ``RotaryEmbedding`` on ``[batch, seq, heads * head_dim]`` tensors, the
  ``Reshape``/``Transpose`` into heads and back gone;
* ``packed_matmul`` (:mod:`~diag.export.make.rewrite.packed_matmul`): the products of one
  input by several weights (q, k, v; gate, up) -> one product by the concatenated
  weights and a ``Split``;
* ``gather_positions`` (:mod:`~diag.export.make.rewrite.gather_positions`): the positions
  whose logits are kept (``logits_to_keep``), ``Transpose -> GatherND -> Transpose``
  -> one ``Gather`` before the ``lm_head`` product;
* ``skip_norm`` (:mod:`~diag.export.make.rewrite.skip_norm`): a residual ``Add`` and the
  ``RMSNormalization`` of its sum -> ``com.microsoft.SkipSimplifiedLayerNormalization``
  (ONNX Runtime's kernel; its 4th output, the sum, feeds the next residual).

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> x = ir.Value(name="x", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> w1 = ir.Value(name="w1", const_value=ir.tensor(np.ones((4, 2), dtype=np.float32)))
    >>> w2 = ir.Value(name="w2", const_value=ir.tensor(np.ones((4, 3), dtype=np.float32)))
    >>> a, b = ir.node("MatMul", [x, w1]), ir.node("MatMul", [x, w2])
    >>> g = ir.Graph([x], [a.outputs[0], b.outputs[0]], nodes=[a, b], initializers=[w1, w2],
    ...              opset_imports={"": 23})
    >>> fuse_decoder(ir.Model(g, ir_version=10))["packed_matmul"]
    1
    >>> [n.op_type for n in g]
    ['MatMul', 'Split']
"""

from __future__ import annotations

from diag.export.make.rewrite.refusals import explain
from diag.export.make.rewrite.rule_set import FUSIONS, MIN_OPSET, fuse_decoder

__all__ = ["FUSIONS", "MIN_OPSET", "explain", "fuse_decoder"]
