"""torch_export_patches: applied inside, fully undone after (also on exception),
missing targets skipped with a note, caches as pytree nodes that round-trip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.utils._pytree as pytree
import transformers
from transformers.cache_utils import (
    DynamicCache,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    EncoderDecoderCache,
    StaticCache,
)
from transformers.integrations import sdpa_attention

from diag.compat.torch_pytree import deregister_pytree_node
from diag.compat.transformers_api import output_cache_field, parameter_names
from diag.export import torch_export_patches
from diag.export.make.patches import (
    EXPERTS_PATCHES,
    ROUTER_PATCHES,
    TORCH_PATCHES,
    TRANSFORMERS_PATCHES,
    Patch,
    PatchTargetMissing,
    resolve_target,
)
from diag.helpers.cache_helper import cache_to_list, make_dynamic_cache


def _snapshot() -> dict[str, object]:
    """Everything the patches touch, as seen from outside."""
    return {
        "sdpa": torch.nn.functional.scaled_dot_product_attention,
        **{
            f"sliding.{m}": DynamicSlidingWindowLayer.__dict__.get(m)
            for m in ("update", "get_mask_sizes", "get_seq_length")
        },
        "gqa": sdpa_attention.use_gqa_in_sdpa,
        "nodes": set(pytree.SUPPORTED_NODES),
    }


def test_patches_applied_inside_and_undone_after():
    before = _snapshot()
    assert DynamicCache not in pytree.SUPPORTED_NODES
    with torch_export_patches() as report:
        inside = _snapshot()
        assert DynamicCache in pytree.SUPPORTED_NODES
        assert DynamicSlidingWindowLayer in pytree.SUPPORTED_NODES
        assert inside["sdpa"] is not before["sdpa"]
        assert DynamicSlidingWindowLayer.update is DynamicLayer.update
        assert DynamicSlidingWindowLayer.get_seq_length is DynamicLayer.get_seq_length
        key = torch.zeros(1, 2, 3, 8)
        # (attention_mask, key) in transformers 4.57, (attention_mask, key, value) in 5.x
        args = [torch.ones(1, 1, 3, 3, dtype=torch.bool), key, key]
        n_args = len(parameter_names(before["gqa"]))
        assert sdpa_attention.use_gqa_in_sdpa(*args[:n_args])
    assert _snapshot() == before
    # the experts patches of the other release family skip (5.x: experts_gathered,
    # 4.57: experts_dense.*), each with its reason
    applied_experts = [p.name for p in EXPERTS_PATCHES if p.name in report.applied]
    assert applied_experts in (["experts_gathered"], [p.name for p in EXPERTS_PATCHES[1:]])
    # a model family's patch applies when its module is imported (by another test)
    routers = [p.name for p in ROUTER_PATCHES if p.name in report.applied]
    assert (
        report.applied
        == [p.name for p in TORCH_PATCHES + TRANSFORMERS_PATCHES] + applied_experts + routers
    )
    assert len(report.skipped) == len(EXPERTS_PATCHES + ROUTER_PATCHES) - len(
        applied_experts + routers
    )
    assert "DynamicCache" in report.pytree_nodes


def test_patches_undone_on_exception():
    before = _snapshot()
    with pytest.raises(RuntimeError, match="boom"):
        with torch_export_patches():
            assert _snapshot() != before
            raise RuntimeError("boom")
    assert _snapshot() == before


def test_patch_kinds_can_be_switched_off():
    before = _snapshot()
    with torch_export_patches(patch_transformers=False) as report:
        assert DynamicCache not in pytree.SUPPORTED_NODES
        assert DynamicSlidingWindowLayer.update is before["sliding.update"]
        assert torch.nn.functional.scaled_dot_product_attention is not before["sdpa"]
    assert report.applied == [p.name for p in TORCH_PATCHES]
    with torch_export_patches(patch_torch=False) as report:
        assert torch.nn.functional.scaled_dot_product_attention is before["sdpa"]
        assert DynamicCache in pytree.SUPPORTED_NODES
    assert _snapshot() == before


def test_missing_target_is_skipped_with_a_note(capsys):
    calls = []
    fakes = [
        Patch("fake_attr", "transformers.cache_utils:NoSuchCache.update", calls.append, "test"),
        Patch("fake_module", "transformers.no_such_module:f", calls.append, "test"),
    ]
    before = _snapshot()
    with torch_export_patches(verbose=1, extra_patches=fakes) as report:
        # after the built-in skips (the experts patches of the other release family)
        fake = [note for note in report.skipped if "fake_" in note]
        assert len(fake) == 2
        assert "fake_attr" in fake[0] and "NoSuchCache" in fake[0]
        assert "fake_module" in fake[1]
        assert "sdpa_zero_fully_masked_rows" in report.applied
    assert calls == []  # the factories of skipped patches never ran
    assert _snapshot() == before
    out = capsys.readouterr().out
    assert "skipped 'fake_attr'" in out and "patched sdpa_zero_fully_masked_rows" in out
    assert "undone" in out


def test_patch_restores_inherited_attribute_by_deleting():
    class Base:
        def f(self):
            return "base"

    class Child(Base):
        pass

    import sys
    import types

    module = types.ModuleType("diag_test_fake_module")
    module.Child = Child
    sys.modules[module.__name__] = module
    try:
        patch = Patch(
            "child_f", f"{module.__name__}:Child.f", lambda orig: lambda self: "patched", "t"
        )
        assert patch.apply() is None
        assert Child().f() == "patched" and "f" in Child.__dict__
        patch.undo()
        assert Child().f() == "base" and "f" not in Child.__dict__
        assert not patch.applied
    finally:
        del sys.modules[module.__name__]


def test_patch_keeps_staticmethods():
    class Holder:
        @staticmethod
        def g(x):
            return x + 1

    import sys
    import types

    module = types.ModuleType("diag_test_fake_module2")
    module.Holder = Holder
    sys.modules[module.__name__] = module
    try:
        patch = Patch("g", f"{module.__name__}:Holder.g", lambda orig: lambda x: orig(x) * 10, "t")
        patch.apply()
        assert Holder.g(1) == 20 and Holder().g(1) == 20
        with pytest.raises(RuntimeError, match="already applied"):
            patch.apply()
        patch.undo()
        assert Holder.g(1) == 2
    finally:
        del sys.modules[module.__name__]


def test_resolve_target_errors():
    assert resolve_target("math:pi") == (math, "pi")
    with pytest.raises(ValueError, match="package.module:Owner.attribute"):
        resolve_target("math.pi")
    with pytest.raises(PatchTargetMissing):
        resolve_target("math:nope")


def test_sdpa_patch_zeroes_fully_masked_rows_only():
    (patch,) = [p for p in TORCH_PATCHES if p.name == "sdpa_zero_fully_masked_rows"]
    original = torch.nn.functional.scaled_dot_product_attention
    sdpa = patch.factory(original)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8) for _ in range(3))
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool).tril()
    mask[0, :, :2] = False  # two fully masked rows in the first sequence
    got = sdpa(q, k, v, attn_mask=mask)
    expected = original(q, k, v, attn_mask=mask)
    torch.testing.assert_close(got, expected)
    assert got[0, :, :2].abs().max() == 0
    assert got[0, :, 2:].abs().max() > 0
    # float masks and no mask are left alone
    torch.testing.assert_close(sdpa(q, k, v, is_causal=True), original(q, k, v, is_causal=True))


def test_sdpa_patch_enable_gqa_from_head_counts():
    (patch,) = [p for p in TORCH_PATCHES if p.name == "sdpa_enable_gqa_from_head_counts"]
    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs.get("enable_gqa", False))
        return torch.nn.functional.scaled_dot_product_attention(*args, **kwargs)

    sdpa = patch.factory(recording)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 3, 8)
    k, v = torch.randn(2, 1, 3, 8), torch.randn(2, 1, 3, 8)
    mask = torch.ones(2, 1, 3, 3, dtype=torch.bool).tril()
    # one key/value head for four query heads: what eager broadcasting computes
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(sdpa(q, k, v, attn_mask=mask), expected)
    # two key/value heads for four query heads: each serves its group
    k2, v2 = torch.randn(2, 2, 3, 8), torch.randn(2, 2, 3, 8)
    grouped = torch.nn.functional.scaled_dot_product_attention(
        q, k2.repeat_interleave(2, dim=1), v2.repeat_interleave(2, dim=1), attn_mask=mask
    )
    torch.testing.assert_close(sdpa(q, k2, v2, attn_mask=mask), grouped)
    # as many heads: no flag, even when the caller gives it (the ONNX translation
    # refuses enable_gqa=True for equal head counts); same values as without it
    plain = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    torch.testing.assert_close(sdpa(q, q, q, attn_mask=mask), plain)
    torch.testing.assert_close(sdpa(q, q, q, attn_mask=mask, enable_gqa=True), plain)
    assert calls == [True, True, False, False]


# --- pytree round trips ---


def _gemma2_config(window: int = 4):
    return transformers.AutoConfig.for_model(
        "gemma2",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=100,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"],
    )


def _pairs(n_layers: int, past: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(2, 2, past, 8, generator=g), torch.randn(2, 2, past, 8, generator=g))
        for _ in range(n_layers)
    ]


@pytest.mark.parametrize("past", [3, 7])
def test_dynamic_cache_round_trip(past):
    pairs = _pairs(2, past)
    cache = make_dynamic_cache(pairs, config=_gemma2_config(window=4))
    with torch_export_patches(patch_torch=False):
        leaves, spec = pytree.tree_flatten(cache)
        # the agreed layout: key_0, value_0, key_1, value_1
        assert len(leaves) == 4
        expected = [t for pair in cache_to_list(cache) for t in pair]
        assert all(a is b for a, b in zip(leaves, expected, strict=True))
        back = pytree.tree_unflatten(leaves, spec)
        paths = [pytree.keystr(p) for p, _ in pytree.tree_flatten_with_path(cache)[0]]
        assert paths == ["[0]", "[1]", "[2]", "[3]"]
    assert type(back) is DynamicCache
    assert [type(layer) for layer in back.layers] == [DynamicSlidingWindowLayer, DynamicLayer]
    assert back.layers[0].sliding_window == 4
    # a sliding layer cut to its window still knows the full length
    assert back.get_seq_length() == cache.get_seq_length() == past
    assert back.layers[0].cumulative_length == cache.layers[0].cumulative_length == past
    # a 5.x sliding layer holds its window as a tensor too (4.57's does not): rebuilt as such
    assert ("_sliding_window_tensor" in vars(back.layers[0])) == (
        "_sliding_window_tensor" in vars(cache.layers[0])
    )
    if "_sliding_window_tensor" in vars(cache.layers[0]):
        assert int(back.layers[0]._sliding_window_tensor) == 4
    for (k0, v0), (k1, v1) in zip(cache_to_list(back), cache_to_list(cache), strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    # the rebuilt cache keeps working: one more update
    new = torch.ones(2, 2, 1, 8)
    back.update(new, new, 1)
    assert back.layers[1].keys.shape[2] == past + 1


def test_dynamic_cache_with_model_outputs_flatten_in_contract_order():
    cache = make_dynamic_cache(_pairs(3, 5))
    with torch_export_patches(patch_torch=False):
        output_class = transformers.modeling_outputs.CausalLMOutputWithPast
        out = output_class(
            logits=torch.zeros(2, 3, 10), **{output_cache_field(output_class): cache}
        )
        leaves, _ = pytree.tree_flatten(out)
    assert len(leaves) == 1 + 6
    assert leaves[0].shape == (2, 3, 10)
    assert leaves[1] is cache.layers[0].keys and leaves[2] is cache.layers[0].values
    assert leaves[6] is cache.layers[2].values


def test_static_and_encoder_decoder_caches_round_trip():
    cfg = _gemma2_config(window=4)
    static = StaticCache(config=cfg, max_cache_len=6)
    for i, (k, v) in enumerate(_pairs(2, 3)):
        static.update(k, v, i)
    enc = EncoderDecoderCache(
        make_dynamic_cache(_pairs(2, 3, 1)), make_dynamic_cache(_pairs(2, 5, 2))
    )
    with torch_export_patches(patch_torch=False):
        leaves, spec = pytree.tree_flatten(static)
        # key, value and (where the release's layer keeps one) the filled length, per layer
        lengths = sum(hasattr(layer, "cumulative_length") for layer in static.layers)
        assert len(leaves) == 4 + lengths
        back = pytree.tree_unflatten(leaves, spec)
        enc_leaves, enc_spec = pytree.tree_flatten(enc)
        assert len(enc_leaves) == 8
        enc_back = pytree.tree_unflatten(enc_leaves, enc_spec)
    assert type(back) is StaticCache
    assert [type(a) for a in back.layers] == [type(b) for b in static.layers]
    for (k0, v0), (k1, v1) in zip(cache_to_list(back), cache_to_list(static), strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
    # 5.x static layers count their filled positions in a tensor, 4.57's full one does not
    for got, expected in zip(back.layers, static.layers, strict=True):
        assert hasattr(got, "cumulative_length") == hasattr(expected, "cumulative_length")
        if hasattr(expected, "cumulative_length"):
            assert int(got.cumulative_length) == int(expected.cumulative_length)
    assert back.get_seq_length() == static.get_seq_length() == 3
    assert [a.max_cache_len for a in back.layers] == [b.max_cache_len for b in static.layers]
    assert back.layers[1].max_cache_len == 6
    assert type(enc_back) is EncoderDecoderCache
    assert enc_back.cross_attention_cache.get_seq_length() == 5
    assert enc_back.is_updated == enc.is_updated


def test_classes_registered_by_someone_else_are_left_alone():
    calls = []

    def flatten(c):
        calls.append("flatten")
        return [layer.keys for layer in c.layers], None

    def unflatten(values, context):
        return make_dynamic_cache([(v, v) for v in values])

    pytree.register_pytree_node(DynamicCache, flatten, unflatten, serialized_type_name="user.DC")
    try:
        with torch_export_patches(patch_torch=False) as report:
            assert "DynamicCache" not in report.pytree_nodes
            leaves, _ = pytree.tree_flatten(make_dynamic_cache(_pairs(2, 3)))
            assert len(leaves) == 2 and calls == ["flatten"]
        # still registered: not ours to remove
        assert DynamicCache in pytree.SUPPORTED_NODES
    finally:
        deregister_pytree_node(DynamicCache)


def test_transformers_exporter_nodes_set_aside_for_an_export_and_put_back():
    # transformers' own exporter registers every Cache subclass for the rest of the
    # process, with a flattening of its own (a sliding layer's attributes as leaves): an
    # export with a sliding-window cache and diag's dynamic shapes after it failed with
    # torch.export's "Node arity mismatch" until diag set those nodes aside for the time
    # of its export
    exporter = pytest.importorskip(
        "transformers.exporters.exporter_dynamo", reason="transformers.exporters exists from 5.23"
    )
    from diag.export.make.cache_pytree import flatten_cache

    class Total(torch.nn.Module):
        def forward(self, cache):
            return torch.cat([t for pair in cache_to_list(cache) for t in pair], dim=2).sum(2)

    cache = make_dynamic_cache(_pairs(2, 3), config=_gemma2_config(window=4))
    past = torch.export.Dim("past", min=1, max=4)
    before = set(pytree.SUPPORTED_NODES)
    exporter.register_cache_pytrees_for_model(Total())
    theirs = pytree.SUPPORTED_NODES[DynamicCache]
    name = pytree.SUPPORTED_SERIALIZED_TYPES[DynamicCache].serialized_type_name
    try:
        with torch_export_patches() as report:
            assert pytree.SUPPORTED_NODES[DynamicCache].flatten_fn is flatten_cache
            assert "DynamicCache" in report.pytree_nodes
            ep = torch.export.export(
                Total(), (cache,), dynamic_shapes=([{2: past}] * 4,), strict=False
            )
        # the exporter's registration is back, exactly
        assert pytree.SUPPORTED_NODES[DynamicCache] == theirs
        assert pytree.SUPPORTED_SERIALIZED_TYPES[DynamicCache].serialized_type_name == name
        assert DynamicSlidingWindowLayer not in pytree.SUPPORTED_NODES
        # the program has one input per tensor of the cache, the past length dynamic
        placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
        assert len(placeholders) == 4
        assert not isinstance(placeholders[0].meta["val"].shape[2], int)
    finally:
        for cls in set(pytree.SUPPORTED_NODES) - before:
            deregister_pytree_node(cls)
    assert set(pytree.SUPPORTED_NODES) == before


def test_imported_only_patch_waits_for_its_module():
    import math

    absent = Patch(
        "absent", "diag_no_such_family.modeling:f", lambda o: o, "why", imported_only=True
    )
    assert "diag_no_such_family.modeling is not imported" in absent.apply()
    present = Patch("pi", "math:pi", lambda original: 3.0, "why", imported_only=True)
    assert present.apply() is None and math.pi == 3.0
    present.undo()
    assert math.pi > 3.14
