"""Removes the runtime transposition of large weights from an exported graph.

``torch.nn.Linear`` computes ``x @ W.T``: the exporter writes
``MatMul(x, Transpose(W))``. The onnxscript optimizer folds the transposition of
small weights into a pre-transposed initializer, but leaves large ones alone (its
constant folding has a size limit), so the ``lm_head`` of a model with a large
vocabulary is transposed at every step: 28M parameters (113 MB) for SmolLM2. When the
weight is tied to the token embedding (``Gather(W, input_ids)``), it cannot be
replaced by its transpose either.

:func:`fold_weight_transposes` rewrites every ``MatMul(x, Transpose(W, perm=[1, 0]))``
where ``W`` is a 2D initializer:

* ``W`` read only by this transposition: ``W`` is replaced by its transpose, stored
  once, and the ``Transpose`` disappears;
* ``W`` also read elsewhere (tied embedding): ``Gemm(x2d, W, transB=1)`` between two
  reshapes, so the weight is stored once, untransposed, and the matrix product reads
  it transposed without copying it.

Example::

    >>> import numpy as np, onnx_ir as ir
    >>> x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> w = ir.Value(name="w", const_value=ir.tensor(np.ones((5, 3), dtype=np.float32)))
    >>> t = ir.node("Transpose", [w], attributes={"perm": [1, 0]})
    >>> mm = ir.node("MatMul", [x, t.outputs[0]])
    >>> g = ir.Graph([x], mm.outputs, nodes=[t, mm], initializers=[w])
    >>> fold_weight_transposes(ir.Model(g, ir_version=10))
    ['w: pre-transposed']
    >>> [n.op_type for n in g], g.initializers["w"].const_value.shape
    (['MatMul'], Shape([3, 5]))
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

# below this size the onnxscript optimizer already folds the transposition
_MIN_ELEMENTS = 1


def _transposed_initializer(node: ir.Node, graph: ir.Graph) -> ir.Value | None:
    """The 2D initializer ``node`` (a Transpose with perm [1, 0]) reads, if any."""
    if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return None
    perm = node.attributes.get("perm")
    if perm is None or list(perm.as_ints()) != [1, 0]:
        return None
    weight = node.inputs[0]
    if weight is None or weight.const_value is None or weight.name not in graph.initializers:
        return None
    if len(weight.const_value.shape) != 2 or weight.is_graph_input():
        return None
    return weight


def _int64(graph: ir.Graph, name: str, values: list[int]) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(np.array(values, dtype=np.int64), name=name))
    graph.register_initializer(value)
    return value


def fold_weight_transposes(model: ir.Model, min_elements: int = _MIN_ELEMENTS) -> list[str]:
    """Rewrites ``MatMul(x, Transpose(W))`` in place; returns what was done, per weight."""
    graph = model.graph
    done: list[str] = []
    for node in list(graph):
        weight = _transposed_initializer(node, graph)
        if weight is None or weight.const_value.size < min_elements:
            continue
        out = node.outputs[0]
        users = out.uses()
        if not users or any(u.node.op_type != "MatMul" or u.idx != 1 for u in users):
            continue
        if out.is_graph_output():
            continue
        other_users = [u for u in weight.uses() if u.node is not node]
        if not other_users:
            # only this transposition reads the weight: store it transposed
            array = weight.const_value.numpy().T.copy()
            weight.const_value = ir.tensor(array, name=weight.name)
            weight.shape = ir.Shape(array.shape)
            out.replace_all_uses_with(weight)
            graph.remove(node, safe=True)
            done.append(f"{weight.name}: pre-transposed")
            continue
        # tied weight: Gemm reads it transposed (transB) without a copy
        n_out, n_in = weight.const_value.shape
        for k, use in enumerate(list(users)):
            matmul = use.node
            x = matmul.inputs[0]
            y = matmul.outputs[0]
            prefix = f"{weight.name}__gemm{k}"
            shape_2d = _int64(graph, f"{prefix}_shape2d", [-1, n_in])
            last = _int64(graph, f"{prefix}_last", [n_out])
            shape_x = ir.node("Shape", [x], attributes={"end": -1}, name=f"{prefix}_shape")
            out_shape = ir.node(
                "Concat",
                [shape_x.outputs[0], last],
                attributes={"axis": 0},
                name=f"{prefix}_concat",
            )
            x2d = ir.node("Reshape", [x, shape_2d], name=f"{prefix}_flat")
            gemm = ir.node(
                "Gemm", [x2d.outputs[0], weight], attributes={"transB": 1}, name=f"{prefix}_gemm"
            )
            y_new = ir.node(
                "Reshape", [gemm.outputs[0], out_shape.outputs[0]], name=f"{prefix}_unflat"
            )
            graph.insert_before(matmul, [shape_x, out_shape, x2d, gemm, y_new])
            new_value = y_new.outputs[0]
            new_value.shape, new_value.type = y.shape, y.type
            # a graph output keeps its name: move it onto the new value
            was_output = y.is_graph_output()
            name = y.name
            y.replace_all_uses_with(new_value, replace_graph_outputs=True)
            graph.remove(matmul, safe=True)
            if was_output:
                new_value.name = name
        graph.remove(node, safe=True)
        done.append(f"{weight.name}: read by Gemm(transB=1), stored once (tied)")
    return done
