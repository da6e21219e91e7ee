"""Renames the inputs, outputs and dynamic dimensions of an ONNX model (onnx-ir).

The exporter names graph inputs after the flattened arguments
(``past_key_values_0``...) and outputs after the nodes producing them
(``linear_14``, ``cat_3``...). :func:`rename_io` gives them the names of the export
contract (:mod:`diag.contract`).

Example::

    >>> import onnx_ir as ir
    >>> x = ir.Value(name="x_0", shape=ir.Shape(["s0", 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> node = ir.node("Relu", [x])
    >>> model = ir.Model(ir.Graph([x], node.outputs, nodes=[node]), ir_version=10)
    >>> rename_io(model, ["x"], ["y"], dims={"s0": "batch"})
    >>> model.graph.inputs[0].name, str(model.graph.inputs[0].shape), model.graph.outputs[0].name
    ('x', '[batch,4]', 'y')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx_ir as ir


def _all_values(graph: ir.Graph) -> dict[str, ir.Value]:
    values: dict[str, ir.Value] = {}
    for v in graph.inputs:
        values[v.name] = v
    for v in graph.initializers.values():
        values[v.name] = v
    for node in graph:
        for v in node.outputs:
            if v.name:
                values[v.name] = v
    return values


def _set_name(graph: ir.Graph, value: ir.Value, name: str, taken: dict[str, ir.Value]) -> None:
    if value.name == name:
        return
    other = taken.get(name)
    if other is not None and other is not value:
        # move the value that already holds the name out of the way
        suffix = 0
        while f"{name}__{suffix}" in taken:
            suffix += 1
        other.name = f"{name}__{suffix}"
        taken[other.name] = other
    taken.pop(value.name, None)
    value.name = name
    taken[name] = value


def rename_dims(value: ir.Value, dims: Mapping[str, str]) -> None:
    """Renames the symbolic dimensions of ``value``'s shape following ``dims``."""
    if value.shape is None:
        return
    new = []
    changed = False
    for d in value.shape:
        if isinstance(d, ir.SymbolicDim) and d.value in dims:
            new.append(dims[d.value])
            changed = True
        else:
            new.append(d.value if isinstance(d, ir.SymbolicDim) else d)
    if changed:
        value.shape = ir.Shape(new)


def rename_io(
    model: ir.Model,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dims: Mapping[str, str] | None = None,
) -> None:
    """Renames, in place, the graph inputs and outputs in order, and symbolic dims.

    :param model: the model
    :param input_names: new names of the first ``len(input_names)`` inputs
    :param output_names: new names of the first ``len(output_names)`` outputs
    :param dims: old symbolic dimension name -> new name, applied to every input and
        output shape
    """
    graph = model.graph
    for kind, current, names in (
        ("inputs", graph.inputs, input_names),
        ("outputs", graph.outputs, output_names),
    ):
        if names is not None and len(names) > len(current):
            raise ValueError(
                f"{len(names)} names given for the {kind} but the graph has {len(current)} "
                f"{kind} ({[v.name for v in current]}); give at most one name per {kind[:-1]}."
            )
        if names is not None and len(set(names)) != len(names):
            raise ValueError(f"duplicated names for the {kind}: {list(names)}")
    taken = _all_values(graph)
    for value, name in zip(graph.inputs, input_names or (), strict=False):
        _set_name(graph, value, name, taken)
    for value, name in zip(graph.outputs, output_names or (), strict=False):
        _set_name(graph, value, name, taken)
    if dims:
        for value in [*graph.inputs, *graph.outputs]:
            rename_dims(value, dims)
