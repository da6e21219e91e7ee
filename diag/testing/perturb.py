"""A broken export on purpose: noise on the weight of one module of an ONNX model.

What a faulty conversion or a corrupted file looks like, to check that a regression
test (or a diagnosis) catches it and names the right layer. The module is found by
the scope the dynamo exporter stores on every node (metadata
``pkg.torch.onnx.name_scopes``, :data:`~diag.diagnose.layers.onnx_intermediates.NAME_SCOPES`).

Example::

    proto = onnx.load("model.onnx")
    name = perturb_weight(proto, "layers.1.mlp.down_proj", scale=0.05)
    onnx.save(proto, "broken.onnx")
"""

from __future__ import annotations

import ast

import numpy as np
import onnx
from onnx import numpy_helper

from diag.diagnose.layers.onnx_intermediates import NAME_SCOPES


def node_scopes(node: onnx.NodeProto) -> list[str]:
    """The module names a node was traced in (empty without the exporter's metadata).

    >>> node = onnx.helper.make_node("MatMul", ["x", "w"], ["y"])
    >>> onnx.helper.set_metadata_props(node, {NAME_SCOPES: "['', 'model.layers.0']"})
    >>> node_scopes(node)
    ['', 'model.layers.0']
    """
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            return [str(s) for s in ast.literal_eval(prop.value)]
    return []


def module_weight(
    proto: onnx.ModelProto, module: str, op_types: tuple[str, ...] = ("MatMul", "Gemm")
) -> onnx.TensorProto:
    """The 2-D initializer read by the first node of type ``op_types`` traced in a
    module whose name ends with ``module`` (``layers.1.mlp.down_proj``,
    ``embed_tokens`` with ``("Gather",)``)."""
    initializers = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in op_types and any(s.endswith(module) for s in node_scopes(node)):
            for name in node.input:
                if name in initializers and len(initializers[name].dims) == 2:
                    return initializers[name]
    raise ValueError(
        f"no 2-D weight read by a {'/'.join(op_types)} node under a module named "
        f"'...{module}' in this model: give a module name the exporter recorded "
        f"(metadata {NAME_SCOPES!r}; the dynamo exporter writes it)."
    )


def perturb_weight(
    proto: onnx.ModelProto,
    module: str,
    scale: float,
    seed: int = 0,
    op_types: tuple[str, ...] = ("MatMul", "Gemm"),
) -> str:
    """Adds gaussian noise (standard deviation ``scale``, drawn from ``seed``) to the
    weight of ``module`` (``module_weight``), in ``proto`` itself; returns the
    initializer's name.

    :param proto: the model, changed in place
    :param module: the end of the torch module's name (``layers.1.mlp.down_proj``)
    :param scale: the standard deviation of the noise
    :param seed: the seed of the noise
    :param op_types: the operators whose weight input is looked for
    """
    init = module_weight(proto, module, op_types)
    weight = numpy_helper.to_array(init).copy()
    weight += (scale * np.random.default_rng(seed).standard_normal(weight.shape)).astype(weight.dtype)
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    return init.name


__all__ = ["module_weight", "node_scopes", "perturb_weight"]
