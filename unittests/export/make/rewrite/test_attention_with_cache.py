"""diag.export.make.rewrite.attention_with_cache: the cache concatenation moves into
Attention, and the refusals say why."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from diag.export.make.rewrite import explain, fuse_decoder


def _attention_graph(graphs, axis: int = 2, computed_past: bool = False, reader: bool = False):
    """``Attention(q, Concat(past_k, k), Concat(past_v, v), mask)``, the
    concatenations as outputs (2 query heads, 1 key/value head)."""
    q = graphs.value("q", [1, 2, 3, 4])
    k, v = graphs.value("k", [1, 1, 3, 4]), graphs.value("v", [1, 1, 3, 4])
    mask = graphs.value("mask", [3, 8])
    past_k = graphs.value("past_key", [1, 1, 5, 4])
    past_v = graphs.value("past_value", [1, 1, 5, 4])
    inputs = [q, k, v, mask, past_k, past_v]
    nodes = []
    if computed_past:
        nodes.append(ir.node("Neg", [past_k]))
        past_k = nodes[-1].outputs[0]
        past_k.name = "negated_past"
    nodes.append(ir.node("Concat", [past_k, k], attributes={"axis": axis}))
    nodes.append(ir.node("Concat", [past_v, v], attributes={"axis": axis}))
    present_k, present_v = nodes[-2].outputs[0], nodes[-1].outputs[0]
    nodes.append(ir.node("Attention", [q, present_k, present_v, mask], name="attention"))
    outputs = [nodes[-1].outputs[0], present_k, present_v]
    if reader:
        nodes.append(ir.node("Neg", [present_k], name="reader"))
        outputs.append(nodes[-1].outputs[0])
    for value, name in zip(outputs, ["y", "present_key", "present_value", "neg"], strict=False):
        value.name = name
    return graphs.model(inputs, outputs, nodes)


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    shapes = {"q": (1, 2, 3, 4), "k": (1, 1, 3, 4), "v": (1, 1, 3, 4), "mask": (3, 8)}
    shapes.update({"past_key": (1, 1, 5, 4), "past_value": (1, 1, 5, 4)})
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def test_attention_takes_the_past_and_returns_the_present(graphs):
    model = _attention_graph(graphs)
    expected = graphs.run(model, _feeds())
    assert fuse_decoder(model, ["attention_past"]) == {"attention_past": 1}
    assert graphs.ops(model) == ["Attention"]
    attention = next(iter(model.graph))
    assert [v.name for v in attention.inputs] == ["q", "k", "v", "mask", "past_key", "past_value"]
    # the present tensors are the attention's own outputs, under the same names
    assert [v.name for v in model.graph.outputs] == ["y", "present_key", "present_value"]
    assert [v.producer() for v in model.graph.outputs] == [attention] * 3
    # rounding of these few-term float32 sums (values ~1) is ~1e-6 on any kernel; a wrong
    # fusion moves them by their own size
    for got, want in zip(graphs.run(model, _feeds()), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"computed_past": True}, "the past 'negated_past' is computed, not a graph input"),
        ({"axis": 3}, "the cache is concatenated along axis 3, not 2"),
        ({"reader": True}, "'present_key' is also read by ['reader']"),
    ],
)
def test_attention_with_cache_refuses_and_says_why(graphs, kwargs, reason):
    model = _attention_graph(graphs, **kwargs)
    assert explain(model, ["attention_past"]) == {
        "attention_past": [f"attention (Attention): {reason} [AttentionWithCache]"]
    }
    assert fuse_decoder(model, ["attention_past"]) == {"attention_past": 0}
    assert graphs.ops(model).count("Concat") == 2
