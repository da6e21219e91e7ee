"""localize_layer on a mixture-of-experts export: one router weight of layer 1
perturbed in the ONNX file so that one token's routing flips, and the report names
the layer, the token, both sides' experts and their router margins."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from diag.diagnose import localize_layer
from diag.export import export_causal_lm
from diag.models import get_untrained_model_with_inputs
from diag.testing.perturb import module_weight

LAYER = 1
IDS = torch.tensor([[5, 17, 256, 1024, 4000, 77, 9, 300, 12, 2048]])


@pytest.fixture(scope="module")
def moe():
    model = get_untrained_model_with_inputs("qwen3_moe")["model"]
    return model, export_causal_lm(model, verify=False).filename


def _router_inputs_and_logits(model, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states entering the router of ``layer`` and its logits, per token."""
    seen = {}
    gate = model.get_submodule(f"model.layers.{layer}.mlp.gate")

    def hook(_module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        seen["x"], seen["logits"] = args[0].reshape(-1, args[0].shape[-1]), first

    handle = gate.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=IDS, use_cache=False)
    finally:
        handle.remove()
    return seen["x"], seen["logits"]


def test_healthy_export_reports_no_flip(moe):
    model, path = moe
    report = localize_layer(model, path, {"input_ids": IDS})
    assert report.agrees
    assert report.details["routing"] == []


def test_flipped_router_names_layer_token_and_experts(moe, tmp_path):
    model, path = moe
    k = model.config.num_experts_per_tok
    x, logits = _router_inputs_and_logits(model, LAYER)
    ranked = torch.sort(logits, dim=-1, descending=True)
    margins = ranked.values[:, k - 1] - ranked.values[:, k]
    token = int(torch.argmin(margins))  # the nearest tie
    left_out, last_in = int(ranked.indices[token, k]), int(ranked.indices[token, k - 1])
    # raise the left-out expert's logit for that token by its margin and a bit: along
    # the token's own router input, so that this token flips for sure
    delta = (float(margins[token]) + 0.5) * x[token] / x[token].dot(x[token])
    proto = onnx.load(path)
    init = module_weight(proto, f"layers.{LAYER}.mlp.gate")
    weight = numpy_helper.to_array(init).copy()
    if list(weight.shape) == list(logits.shape[-1:]) + [x.shape[-1]]:
        weight[left_out] += delta.numpy()
    else:  # stored transposed for a MatMul
        weight[:, left_out] += delta.numpy()
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    broken = str(tmp_path / "router.onnx")
    onnx.save(proto, broken)

    report = localize_layer(model, broken, {"input_ids": IDS})
    flips = {flip.token: flip for flip in report.details["routing"]}
    assert {flip.layer for flip in flips.values()} == {LAYER}
    flip = flips[token]
    chosen = [int(e) for e in ranked.indices[token, :k]]
    assert flip.torch_experts == tuple(sorted(chosen))
    assert flip.onnx_experts == tuple(sorted([e for e in chosen if e != last_in] + [left_out]))
    assert flip.torch_margin == pytest.approx(float(margins[token]), rel=1e-4, abs=1e-5)
    # the ONNX side's left-out expert now leads the one it replaced by about 0.5
    assert 0 < flip.onnx_margin < 0.5 + 1e-3
    assert report.culprit_layer == LAYER
    text = str(report)
    assert f"layer {LAYER}, token {token}: torch chose experts {flip.torch_experts}" in text
    assert np.isfinite(report.to_dict()["routing"][0]["onnx_margin"])
