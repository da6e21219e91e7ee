"""The positions whose logits are kept, gathered in one ``Gather``.

transformers keeps the logits of some positions with ``hidden_states[:, positions,
:]`` (its ``logits_to_keep``, :mod:`diag.export.make.logits_to_keep`), which the dynamo
exporter translates through the positions-first layout::

    y = Transpose(GatherND(Transpose(x, perm=[1, 0, 2]), Unsqueeze(positions, -1)),
                  perm=[1, 0, 2])

The rule rewrites it into ``Gather(x, positions, axis=1)``: the same rows, without
two copies of the ``[batch, seq, hidden]`` states around the lookup. It refuses (and
says why) when a permutation is another one, when the positions are not unsqueezed
along their last axis or when ``GatherND`` has batch dimensions.

Example::

    >>> import onnx_ir as ir
    >>> from diag.export.make.rewrite import fuse_decoder
    >>> x = ir.Value(name="x", shape=ir.Shape([2, 5, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> keep = ir.Value(name="keep", shape=ir.Shape([3]), type=ir.TensorType(ir.DataType.INT64))
    >>> axes = ir.Value(name="axes", const_value=ir.tensor([-1]))
    >>> t1 = ir.node("Transpose", [x], attributes={"perm": [1, 0, 2]})
    >>> unsq = ir.node("Unsqueeze", [keep, axes])
    >>> gnd = ir.node("GatherND", [t1.outputs[0], unsq.outputs[0]])
    >>> t2 = ir.node("Transpose", [gnd.outputs[0]], attributes={"perm": [1, 0, 2]})
    >>> g = ir.Graph([x, keep], t2.outputs, nodes=[t1, unsq, gnd, t2], initializers=[axes],
    ...              opset_imports={"": 23})
    >>> fuse_decoder(ir.Model(g, ir_version=10), ["gather_positions"])
    {'gather_positions': 1}
    >>> [(n.op_type, n.attributes["axis"].value) for n in g]
    [('Gather', 1)]
"""

from __future__ import annotations

from onnxscript.rewriter import pattern

_SWAP = [1, 0, 2]


class GatherPositions(pattern.RewriteRuleClassBase):
    """``Transpose(GatherND(Transpose(x), Unsqueeze(positions, -1)))`` ->
    ``Gather(x, positions, axis=1)``."""

    def pattern(self, op, x, positions, axes, perm_in, perm_out):
        rows = op.Transpose(x, perm=perm_in)
        picked = op.GatherND(
            rows, op.Unsqueeze(positions, axes), _allow_other_attributes=True, _outputs=["picked"]
        )
        return op.Transpose(picked, perm=perm_out)

    def check(self, context, x, positions, axes, perm_in, perm_out, picked, **_):
        result = pattern.MatchResult()
        for perm in (perm_in, perm_out):
            if list(perm.value) != _SWAP:
                return result.fail(f"a Transpose has perm {list(perm.value)}, not {_SWAP}")
        batch_dims = picked.producer().attributes.get_int("batch_dims", 0)
        if batch_dims != 0:
            return result.fail(f"GatherND has batch_dims={batch_dims}")
        if axes.const_value is None:
            return result.fail("the positions are unsqueezed along computed axes", axes)
        rank = positions.shape.rank() if positions.shape is not None else None
        last = {-1} if rank is None else {-1, rank}
        axis = axes.const_value.numpy().reshape(-1).tolist()
        if rank not in (None, 1) or len(axis) != 1 or axis[0] not in last:
            return result.fail("the positions are not a 1-D tensor unsqueezed on its last axis")
        return result

    def rewrite(self, op, x, positions, **_):
        return op.Gather(x, positions, axis=1)


#: the rule
RULES = (GatherPositions.rule(),)
