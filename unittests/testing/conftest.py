"""Fixtures of the diag.testing tests: the tiny zoo's exports (export_causal_lm caches
them on disk, so the other test modules' exports are reused) and a deliberately broken
copy of the tiny llama export."""

from __future__ import annotations

import os

import onnx
import pytest

from diag.testing.perturb import perturb_weight

#: the decoder layer whose MLP weight the broken export perturbs
BROKEN_LAYER = 1


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Tiny models and [batch, vocab] rows: one torch thread (see the root conftest)."""
    yield


@pytest.fixture(scope="session")
def zoo():
    """``zoo(arch)`` -> ``(model, path of its export)``, each built once."""
    from diag.export import export_causal_lm
    from diag.models import get_untrained_model_with_inputs

    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            model = get_untrained_model_with_inputs(arch)["model"]
            cache[arch] = model, export_causal_lm(model, verify=False).filename
        return cache[arch]

    return get


def perturb_layer(path: str, layer: int, out: str, scale: float = 0.2) -> str:
    """Copies the export ``path`` to ``out`` with the MLP down projection of decoder layer
    ``layer`` perturbed (found by the module scope the exporter stores on each node)."""
    proto = onnx.load(path)
    perturb_weight(proto, f"layers.{layer}.mlp.down_proj", scale)
    onnx.save(proto, out)
    return out


@pytest.fixture(scope="session")
def broken_llama(zoo, tmp_path_factory) -> str:
    """The tiny llama export with one weight of decoder layer 1 perturbed."""
    _, path = zoo("llama")
    out = os.path.join(str(tmp_path_factory.mktemp("broken")), "model.onnx")
    return perturb_layer(path, BROKEN_LAYER, out)
