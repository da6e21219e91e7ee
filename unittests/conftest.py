"""Fixtures shared by the whole test suite.

``bigram_lm`` builds hand-written ONNX models that follow (or break) the export
contract, for the contract and ONNX Runtime tests.

Tests that use the real model (SmolLM2-135M-Instruct) take the ``smollm2`` fixture and
are marked ``slow``; CI runs them too.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

# Two cores here: more threads only fight each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Architectures of the offline tiny-model zoo (diag.models). falcon (multi-query),
# deepseek_v3 (latent attention) and gpt_neox (no kv-head attribute) cache other
# heads or head sizes than their config's attributes say.
TINY_ARCHITECTURES = [
    "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gpt2",
    "falcon", "deepseek_v3", "gpt_neox",
]  # fmt: skip


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole module (:func:`diag.ort.generate.single_torch_thread`,
    the setting restored afterwards). Modules of small models or of ``[batch, vocab]``
    rows take it: on a loaded 2-core machine two torch threads spin-waiting on each
    other, or on ONNX Runtime's pool, make every small op many times slower."""
    from diag.ort.generate import single_torch_thread

    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, float32, eval mode."""
    from diag.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m-instruct")
    return model.eval(), tokenizer


def build_bigram_lm(
    num_layers: int = 2,
    vocab: int = 16,
    heads: int = 2,
    head_dim: int = 4,
    *,
    seed: int = 0,
    past_type: int = TensorProto.FLOAT,
    present_type: int | None = None,
    ids_type: int = TensorProto.INT64,
    with_position_ids: bool = True,
    num_present_layers: int | None = None,
    rename: dict[str, str] | None = None,
    with_logits_to_keep: bool = False,
) -> tuple[onnx.ModelProto, np.ndarray]:
    """A causal LM small enough to write by hand and to check by hand.

    ``logits = E[input_ids]`` (so greedy decoding follows ``next = argmax E[prev]``) and
    each layer's cache grows by ``K[input_ids]`` per step: ``present.i.* =
    Concat(past_key_values.i.*, ...)`` along the length axis, as the contract says.
    The keyword arguments break the contract on purpose, but ``with_logits_to_keep``:
    the graph takes ``logits_to_keep`` and returns the logits of those positions only.
    Returns the model and ``E``.
    """
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, vocab)).astype(np.float32)
    kv = rng.standard_normal((vocab, heads, head_dim)).astype(np.float32)
    present_type = past_type if present_type is None else present_type
    num_present_layers = num_layers if num_present_layers is None else num_present_layers
    inits = [numpy_helper.from_array(table, "E"), numpy_helper.from_array(kv, "K")]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["E", "ids64"], ["all_logits" if with_logits_to_keep else "logits"]),
        helper.make_node("Gather", ["K", "ids64"], ["kv_bshd"]),
        helper.make_node("Transpose", ["kv_bshd"], ["kv_new32"], perm=[0, 2, 1, 3]),
        helper.make_node("Cast", ["kv_new32"], ["kv_new"], to=past_type),
    ]
    inputs = [
        helper.make_tensor_value_info("input_ids", ids_type, ["batch", "seq_length"]),
        helper.make_tensor_value_info(
            "attention_mask", TensorProto.INT64, ["batch", "total_length"]
        ),
    ]
    if with_position_ids:
        inputs.append(
            helper.make_tensor_value_info(
                "position_ids", TensorProto.INT64, ["batch", "seq_length"]
            )
        )
    keep = "keep_length" if with_logits_to_keep else "seq_length"
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", keep, vocab])]
    for i in range(num_layers):
        for kind in ("key", "value"):
            past = f"past_key_values.{i}.{kind}"
            inputs.append(
                helper.make_tensor_value_info(
                    past, past_type, ["batch", heads, "past_length", head_dim]
                )
            )
            if i < num_present_layers:
                present = f"present.{i}.{kind}"
                nodes.append(helper.make_node("Concat", [past, "kv_new"], [present + "_"], axis=2))
                nodes.append(helper.make_node("Cast", [present + "_"], [present], to=present_type))
                outputs.append(
                    helper.make_tensor_value_info(
                        present, present_type, ["batch", heads, "total_length", head_dim]
                    )
                )
    if with_logits_to_keep:
        nodes.append(helper.make_node("Gather", ["all_logits", "logits_to_keep"], ["logits"], axis=1))
        inputs.append(helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, ["keep_length"]))
    graph = helper.make_graph(nodes, "bigram_lm", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for old, new in (rename or {}).items():
        for v in list(model.graph.input) + list(model.graph.output):
            if v.name == old:
                v.name = new
        for node in model.graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]
    onnx.checker.check_model(model)
    return model, table


@pytest.fixture(scope="session")
def bigram_lm():
    """The factory :func:`build_bigram_lm`."""
    return build_bigram_lm


# --- ONNX models made by other tools (diag.contract.detect) ---------------------------


def _save_tiny_tokenizer(folder) -> None:
    """A word-level tokenizer over the ids of the tiny vocabulary (the genai builder
    copies a tokenizer into its output and refuses a folder without one)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 1000)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory):
    """``(model, folder)``: the tiny llama of the zoo saved as a Hugging Face folder."""
    from diag.models import get_untrained_model_with_inputs

    model = get_untrained_model_with_inputs("llama")["model"].eval()
    folder = tmp_path_factory.mktemp("tiny_llama_hf")
    model.save_pretrained(folder)
    _save_tiny_tokenizer(folder)
    return model, folder


def build_genai_folder(hf_folder, out, precision: str = "fp32") -> None:
    """onnxruntime-genai's model builder on ``hf_folder`` (CPU), into ``out``."""
    import subprocess
    import sys

    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_folder), "-o", str(out), "-p", precision, "-e", "cpu",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if done.returncode != 0 and last.startswith("ImportError") and "transformers" in last:
        # onnxruntime-genai 0.18's builder imports classes of transformers 5.x
        pytest.skip(f"onnxruntime-genai's builder cannot run on this transformers: {last}")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def genai_tiny_llama(tiny_llama_folder, tmp_path_factory):
    """``(model, folder)``: the tiny llama through onnxruntime-genai's builder, fp32."""
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai (a dev extra) is not installed")
    model, hf = tiny_llama_folder
    out = tmp_path_factory.mktemp("genai_tiny_llama")
    build_genai_folder(hf, out)
    return model, out


_TRANSFORMERS_EXPORT = """
import sys, torch
from transformers import AutoModelForCausalLM
from transformers.exporters import OnnxConfig, OnnxExporter
src, out, with_mask = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
model = AutoModelForCausalLM.from_pretrained(src).eval()
sample = {"input_ids": torch.tensor([[1, 5, 7, 9], [2, 1, 4, 6]])}
if with_mask:
    sample["attention_mask"] = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
OnnxExporter().export_for_generation(model, sample, OnnxConfig(dynamic=True)).save_pretrained(out)
"""


def export_with_transformers(hf_folder, out, *, with_mask: bool = True) -> None:
    """transformers' own exporter (``transformers.exporters``) on the model of
    ``hf_folder``, dynamic shapes, a batch of 2 sample prompts (a batch of 1 specialises
    the batch dimension), the second left-padded when ``with_mask``.

    It runs in a subprocess: the exporter registers its own pytree nodes for the
    transformers caches, which then break diag's exports of sliding-window caches in
    the same process (torch.export's "Node arity mismatch").
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _TRANSFORMERS_EXPORT, str(hf_folder), str(out), "1" if with_mask else "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"transformers' exporter failed:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def transformers_tiny_llama(tiny_llama_folder, tmp_path_factory):
    """``(model, folder)``: the tiny llama through transformers' exporter
    (``prefill.onnx`` + ``decode.onnx`` + ``export.json``)."""
    pytest.importorskip(
        "transformers.exporters", reason="transformers.exporters exists from transformers 5.23"
    )
    model, hf = tiny_llama_folder
    out = tmp_path_factory.mktemp("transformers_tiny_llama")
    export_with_transformers(hf, out)
    return model, out


@pytest.fixture(scope="session")
def smollm2_folder():
    """The Hugging Face folder of SmolLM2-135M-Instruct (converted once, cached)."""
    from diag.models.pretrained import ensure_model_folder

    return ensure_model_folder("smollm2-135m-instruct", progress=False)


@pytest.fixture(scope="session")
def genai_smollm2(smollm2_folder, tmp_path_factory):
    """``precision -> folder``: SmolLM2 through onnxruntime-genai's builder, built on
    first use (fp32 ~10 s, int4 ~20 s on 2 cores)."""
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai (a dev extra) is not installed")
    built: dict[str, object] = {}

    def get(precision: str):
        if precision not in built:
            out = tmp_path_factory.mktemp(f"genai_smollm2_{precision}")
            build_genai_folder(smollm2_folder, out, precision)
            built[precision] = out
        return built[precision]

    return get


@pytest.fixture(scope="session")
def transformers_smollm2(smollm2_folder, tmp_path_factory):
    """SmolLM2 through transformers' exporter (a prefill + decode folder). The export
    takes minutes (measured here: 124 s of CPU without its optimizer, 18 min wall with
    it on a loaded 2-core machine), over the slow suite's budget: it runs when
    ``DIAG_SLOW_EXPORTS=1``."""
    pytest.importorskip(
        "transformers.exporters", reason="transformers.exporters exists from transformers 5.23"
    )
    if os.environ.get("DIAG_SLOW_EXPORTS") != "1":
        pytest.skip("SmolLM2 through transformers' exporter takes minutes: set DIAG_SLOW_EXPORTS=1")
    out = tmp_path_factory.mktemp("transformers_smollm2")
    export_with_transformers(smollm2_folder, out)
    return out


@pytest.fixture(scope="session")
def optimum_tiny_llama(tiny_llama_folder, tmp_path_factory):
    """``(model, folder)``: the tiny llama through optimum-onnx's decoder export
    (``text-generation-with-past``)."""
    pytest.importorskip(
        "optimum.exporters.onnx",
        reason="optimum-onnx needs transformers < 4.58: CI's 4.57.6 phase installs it",
    )
    from optimum.exporters.onnx import onnx_export_from_model

    model, _ = tiny_llama_folder
    out = tmp_path_factory.mktemp("optimum_tiny_llama")
    onnx_export_from_model(model, str(out), task="text-generation-with-past")
    return model, out
