"""The residual sum and the norm after it -> ``com.microsoft.SkipSimplifiedLayerNormalization``.

A decoder layer adds each block's output to the residual stream and normalizes the
sum for the next block::

    total = Add(x, skip)
    normalized = RMSNormalization(total, scale, axis=-1)

ONNX Runtime computes both in one kernel, ``SkipSimplifiedLayerNormalization(x, skip,
scale)``, whose outputs are the normalized sum and (its 4th) the sum itself, which the
next residual ``Add`` reads (the outputs nothing reads are left out,
:func:`drop_unread_outputs`): one pass over the hidden state instead of two, one kernel
launch less per pair (two per layer). The rule runs after ``rms_norm``, on the
``RMSNormalization`` nodes it wrote. onnxscript's own rule
(``onnxscript.rewriter.ort_fusions.skip_normalization``) matches ORT's
``SimplifiedLayerNormalization``, not opset 23's ``RMSNormalization``: it does not fire
on diag's graphs. The rule refuses (and says why) a norm over another axis or in
another precision (``stash_type``), a scale that is not one weight per channel, a sum
whose two sides differ in shape (a broadcast), a type ONNX Runtime's CPU kernel does
not take.

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> from diag.export.make.rewrite import fuse_decoder
    >>> x, skip = (ir.Value(name=n, shape=ir.Shape([1, 2, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    ...            for n in ("x", "skip"))
    >>> w = ir.Value(name="w", const_value=ir.tensor(np.ones(4, dtype=np.float32)))
    >>> add = ir.node("Add", [x, skip])
    >>> norm = ir.node("RMSNormalization", [add.outputs[0], w], attributes={"epsilon": 1e-6})
    >>> g = ir.Graph([x, skip], [norm.outputs[0], add.outputs[0]], nodes=[add, norm],
    ...              initializers=[w], opset_imports={"": 23})
    >>> fuse_decoder(ir.Model(g, ir_version=10), ["skip_norm"])
    {'skip_norm': 1}
    >>> [(n.domain, n.op_type) for n in g]
    [('com.microsoft', 'SkipSimplifiedLayerNormalization')]
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from diag.contract.metadata import OUTPUT_SCOPES_METADATA

#: the module scopes the dynamo exporter writes in each node's metadata
NAME_SCOPES = "pkg.torch.onnx.name_scopes"

#: the types ONNX Runtime's CPU kernel is registered for
_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16})


def _dims(value: ir.Value) -> list | None:
    """The dimensions of ``value`` (ints or symbolic names), None when unknown."""
    shape = value.shape
    if shape is None and value.const_value is not None:
        shape = value.const_value.shape
    if shape is None:
        return None
    dims = []
    for dim in shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif getattr(dim, "value", None) is not None:
            dims.append(dim.value)
        else:
            return None  # an anonymous dimension: nothing says two of them are equal
    return dims


def _dtype(value: ir.Value) -> ir.DataType | None:
    if value.dtype is None and value.const_value is not None:
        return value.const_value.dtype
    return value.dtype


class SkipNorm(pattern.RewriteRuleClassBase):
    """``RMSNormalization(Add(x, skip), scale)`` and the sum ->
    ``SkipSimplifiedLayerNormalization(x, skip, scale)`` (outputs 0 and 3)."""

    def pattern(self, op, x, skip, scale):
        total = op.Add(x, skip, _outputs=["total"])
        normalized = op.RMSNormalization(
            total, scale, _allow_other_attributes=True, _outputs=["normalized"]
        )
        return normalized, total

    def check(self, context, x, skip, scale, total, normalized, **_):
        result = pattern.MatchResult()
        attributes = normalized.producer().attributes
        x_dims, skip_dims = _dims(x), _dims(skip)
        if x_dims is None or skip_dims is None:
            return result.fail("the shapes of the sum's two sides are not known", x)
        if x_dims != skip_dims:
            return result.fail(f"the sum broadcasts {x_dims} and {skip_dims}", x)
        if len(x_dims) not in (2, 3):
            return result.fail(f"the sum is {len(x_dims)}-D, the kernel takes 2-D or 3-D", x)
        axis = attributes.get_int("axis", -1)
        if axis not in (-1, len(x_dims) - 1):
            return result.fail(f"the norm is over axis {axis}, not the last one")
        stash = attributes.get_int("stash_type", 1)
        if stash != 1:
            return result.fail(f"the norm computes in stash_type={stash}, the kernel in float")
        if x.dtype not in _TYPES or _dtype(scale) != x.dtype:
            return result.fail(
                f"types {x.dtype} and {_dtype(scale)}: the kernel takes float or float16 alike"
            )
        scale_dims = _dims(scale)
        if scale_dims is None or len(scale_dims) != 1 or scale_dims[0] != x_dims[-1]:
            return result.fail(
                f"the scale is {scale_dims}, not one weight per channel [{x_dims[-1]}]", scale
            )
        return result

    def rewrite(self, op, x, skip, scale, normalized, total, **_):
        norm_node, add_node = normalized.producer(), total.producer()
        epsilon = norm_node.attributes.get_float("epsilon", 1e-5)
        # outputs 1 and 2 (mean, inverse std): see drop_unread_outputs
        fused, _mean, _inv_std, summed = op.SkipSimplifiedLayerNormalization(
            x, skip, scale, epsilon=epsilon, _outputs=4, _domain="com.microsoft"
        )
        # the node is the norm's (its module scopes); the sum ends the module of the
        # Add (a decoder layer): diag.localize_layer reads a layer's output there
        node = fused.producer()
        node.metadata_props.update(norm_node.metadata_props)
        if NAME_SCOPES in add_node.metadata_props:
            node.metadata_props[OUTPUT_SCOPES_METADATA] = add_node.metadata_props[NAME_SCOPES]
        return fused, summed


def drop_unread_outputs(model: ir.Model) -> int:
    """Names ``""`` the outputs of the fused nodes nothing reads (the mean and inverse
    std, training outputs), so that ONNX Runtime neither computes nor allocates them;
    returns how many. The last norm's sum stays, unread: it is the last layer's output,
    which :func:`diag.localize_layer` compares (one hidden state written a step). It runs after the rewrite: the graph
    names every value a rule writes."""
    outputs = set(model.graph.outputs)
    dropped = 0
    for node in model.graph:
        if node.op_type != "SkipSimplifiedLayerNormalization" or node.domain != "com.microsoft":
            continue
        for value in node.outputs[1:3]:  # the sum stays: localize_layer reads layers there
            if value.name and not value.uses() and value not in outputs:
                value.name = ""
                dropped += 1
    return dropped


#: the rule
RULES = (SkipNorm.rule(),)
# a near miss (diag.export.make.rewrite.explain) is both nodes matched and a check refused:
# every RMSNormalization matches alone, the first layer's reads no sum
RULES[0].near_miss_size = 4
