"""Whether ONNX Runtime's execution providers have a kernel for every node of a graph,
decided from the graph before a session runs it: :func:`unsupported_nodes` and
:func:`check_provider_support`.

ONNX Runtime refuses a node it has no kernel for with ``NOT_IMPLEMENTED : Could not
find an implementation for MatMul(13) node``, which names neither the dtype nor what to
do. The CPU provider of ONNX Runtime 1.32 has bfloat16 kernels for data movement only
(``Cast``, ``Reshape``, ``Concat``, ``Gather``, ``Transpose``...), none for ``MatMul``,
``Add``, ``Mul``, ``Softmax`` or ``Attention``: a bfloat16 decoder cannot run on it,
whoever exported it. It has few float16 kernels either, but runs a float16 node without
one in float32 between casts it inserts: a float16 decoder runs. The kernels a provider has, with the element types each takes,
come from ONNX Runtime's own registry (``get_all_opkernel_def``); the element type each
node reads comes from the graph (its value infos, its initializers and inputs, ONNX's
shape inference for the rest).

Example::

    >>> import onnx
    >>> from onnx import TensorProto, helper
    >>> graph = helper.make_graph(
    ...     [helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")], "g",
    ...     [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [2, 2]) for n in "ab"],
    ...     [helper.make_tensor_value_info("c", TensorProto.BFLOAT16, [2, 2])])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    >>> [str(u) for u in unsupported_nodes(model)]
    ['MatMul (mm) on bfloat16']
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import onnx

from diag.helpers.dtypes import _BY_ONNX

#: the provider that runs what no other takes, and the one a bare ``providers=None`` means
CPU = "CPUExecutionProvider"


#: the element types checked: those whose kernels providers lack (an input of a fixed
#: type, ``Where``'s bool condition, is not among a kernel's type constraints)
CHECKED_DTYPES = frozenset(
    {"float16", "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz"}
)


class ProviderSupportError(ValueError):
    """A graph has nodes none of the session's providers has a kernel for."""


@dataclass(frozen=True)
class UnsupportedNode:
    """A node, and the element type it reads that no provider takes."""

    name: str
    op_type: str
    domain: str
    dtype: str

    def __str__(self) -> str:
        return f"{self.op_type} ({self.name}) on {self.dtype}"


@functools.cache
def _kernels() -> dict[tuple[str, str, str], list[tuple[int, int, frozenset[str]]]]:
    """``{(provider, domain, op): [(first version, last version, element types)]}`` from
    ONNX Runtime's kernel registry."""
    from onnxruntime.capi import _pybind_state

    table: dict[tuple[str, str, str], list[tuple[int, int, frozenset[str]]]] = defaultdict(list)
    for k in _pybind_state.get_all_opkernel_def():
        types = frozenset(
            t.removeprefix("tensor(").removesuffix(")")
            for allowed in k.type_constraints.values()
            for t in allowed
        )
        domain = "" if k.domain == "ai.onnx" else k.domain
        table[(k.provider, domain, k.op_name)].append(
            (k.version_range[0], k.version_range[1], types)
        )
    return dict(table)


def _has_kernel(provider: str, domain: str, op: str, version: int, dtype: str) -> bool | None:
    """Whether ``provider`` has a kernel of ``op`` at opset ``version`` taking ``dtype``;
    None when the registry knows nothing of the provider (not built in this package) or
    of the op there (a custom op): the session will say."""
    defs = _kernels().get((provider, domain, op))
    if defs is None:
        return None
    # the CPU provider runs a float16 node it has no kernel for in float32, between
    # casts it inserts itself (ONNX Runtime's InsertCastTransformer); bfloat16 has no such
    # fallback
    accepted = {dtype, "float"} if provider == CPU and dtype == "float16" else {dtype}
    return any(lo <= version <= hi and accepted & types for lo, hi, types in defs)


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every value of the main graph that the graph states or ONNX's
    shape inference finds (ops it does not know leave their outputs out)."""
    graph = model.graph
    types: dict[str, int] = {}

    def note(infos: Iterable[onnx.ValueInfoProto]) -> None:
        for v in infos:
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
                types[v.name] = v.type.tensor_type.elem_type

    note(graph.input)
    note(graph.output)
    note(graph.value_info)
    for t in graph.initializer:
        types[t.name] = t.data_type
    if len(types) < len(graph.node):  # few value infos: infer the rest
        # the weights are not needed to infer types: a copy without their bytes
        bare = onnx.ModelProto()
        bare.CopyFrom(model)
        for t in bare.graph.initializer:
            t.ClearField("raw_data")
        try:
            note(onnx.shape_inference.infer_shapes(bare, strict_mode=False).graph.value_info)
        except Exception:  # noqa: BLE001 - inference is a help here, not a requirement
            pass
    return types


def _load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(os.fspath(model), load_external_data=False)


def provider_names(providers: Any) -> list[str]:
    """The provider names of a ``providers`` argument (names or ``(name, options)``)."""
    if providers is None:
        return [CPU]
    if isinstance(providers, str):
        return [providers]
    return [p[0] if isinstance(p, tuple) else p for p in providers]


def unsupported_nodes(
    model: str | os.PathLike | onnx.ModelProto, providers: Any = None
) -> list[UnsupportedNode]:
    """The nodes of ``model``'s main graph that none of ``providers`` (None: the CPU) has
    a kernel for, given the element types they read. A node whose op a provider does not
    register at all (a custom op, a provider not built in) is not listed: only the kernel
    registry's certain refusals are."""
    proto = _load(model)
    names = provider_names(providers)
    versions = {o.domain if o.domain != "ai.onnx" else "": o.version for o in proto.opset_import}
    types = _element_types(proto)
    found: list[UnsupportedNode] = []
    for node in proto.graph.node:
        version = versions.get(node.domain, 0)
        for name in node.input:
            elem = types.get(name)
            if not name or elem is None or elem not in _BY_ONNX:
                continue
            dtype = _BY_ONNX[elem].name
            if dtype not in CHECKED_DTYPES:
                continue
            answers = [_has_kernel(p, node.domain, node.op_type, version, dtype) for p in names]
            if answers and all(a is False for a in answers):
                found.append(UnsupportedNode(node.name, node.op_type, node.domain, dtype))
                break
    return found


def support_message(unsupported: list[UnsupportedNode], providers: Any, what: str) -> str:
    """What :func:`check_provider_support` says: the dtype, the provider, the ops, the
    fix."""
    names = provider_names(providers)
    dtypes = sorted({u.dtype for u in unsupported})
    ops = sorted({u.op_type for u in unsupported})
    first = ", ".join(str(u) for u in unsupported[:3])
    fix = "run it with a provider that has these kernels"
    if "bfloat16" in dtypes:
        fix = (
            "re-export it in float32 or float16 (diag.export_causal_lm(model, dtype='float32') "
            "or dtype='float16'), or run it on CUDA (providers='CUDAExecutionProvider')"
        )
    return (
        f"{what} computes in {'/'.join(dtypes)}, which {'/'.join(names)} cannot run: "
        f"{len(unsupported)} nodes have no kernel for it ({', '.join(ops)}; first: {first}). "
        f"To run it, {fix}."
    )


def check_provider_support(
    model: str | os.PathLike | onnx.ModelProto, providers: Any = None, what: str | None = None
) -> None:
    """Raises :class:`ProviderSupportError` naming the dtype, the provider and the fix when
    a node of ``model`` has no kernel in ``providers`` (None: the CPU)."""
    unsupported = unsupported_nodes(model, providers)
    if unsupported:
        label = what or (
            repr(os.fspath(model)) if not isinstance(model, onnx.ModelProto) else "the model"
        )
        raise ProviderSupportError(support_message(unsupported, providers, label))


__all__ = [
    "ProviderSupportError",
    "UnsupportedNode",
    "check_provider_support",
    "provider_names",
    "support_message",
    "unsupported_nodes",
]
