"""diag.testing.perturb: noise on the weight of one module of an export."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from diag.testing.perturb import module_weight, perturb_weight


def _arrays(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_perturb_weight_changes_that_weight_only(zoo):
    _, path = zoo("llama")
    proto = onnx.load(path)
    before = _arrays(proto)
    name = perturb_weight(proto, "layers.1.mlp.down_proj", scale=0.5, seed=3)
    after = _arrays(proto)
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed == [name]
    noise = after[name] - before[name]
    assert noise.shape == before[name].shape and noise.ndim == 2
    assert 0.4 < float(noise.std()) < 0.6
    # the same seed draws the same noise
    again = onnx.load(path)
    perturb_weight(again, "layers.1.mlp.down_proj", scale=0.5, seed=3)
    np.testing.assert_array_equal(_arrays(again)[name], after[name])
    # the embedding table, read by a Gather
    assert module_weight(proto, "embed_tokens", ("Gather",)).name != name


def test_perturb_weight_unknown_module_says_what_to_give(zoo):
    _, path = zoo("llama")
    with pytest.raises(ValueError, match="no 2-D weight read by a MatMul/Gemm node under a module named '...layers.99.mlp'"):
        perturb_weight(onnx.load(path), "layers.99.mlp", scale=0.1)
