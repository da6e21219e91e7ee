"""Fixtures shared by the whole test suite.

``bigram_lm`` builds hand-written ONNX models that follow (or break) the export
contract, for the contract and ONNX Runtime tests.

Tests that use the real model (SmolLM2-135M-Instruct) take the ``smollm2`` fixture and
are marked ``slow``; CI runs them too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

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

# The mixture-of-experts families of the zoo (4 experts, top-2). Their experts need
# the export patches of diag.export.make.patches.experts_patches; qwen3_moe runs in every
# release's phase, the others on the pinned set only (second architectures of the same
# patch; gpt_oss, granitemoe and phimoe are refused on transformers 4.57).
MOE_ARCHITECTURES = ["qwen3_moe", "qwen2_moe", "olmoe", "gpt_oss", "granitemoe", "phimoe"]
EVERY_RELEASE_MOE = "qwen3_moe"


def moe_params() -> list:
    """:data:`MOE_ARCHITECTURES` as pytest params, all but :data:`EVERY_RELEASE_MOE`
    marked ``pinned``."""
    return [
        pytest.param(n, marks=[] if n == EVERY_RELEASE_MOE else [pytest.mark.pinned])
        for n in MOE_ARCHITECTURES
    ]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole module (:func:`diag.helpers.torch_helper.single_torch_thread`,
    the setting restored afterwards). Modules of small models or of ``[batch, vocab]``
    rows take it: on a loaded 2-core machine two torch threads spin-waiting on each
    other, or on ONNX Runtime's pool, make every small op many times slower."""
    from diag.helpers.torch_helper import single_torch_thread

    with single_torch_thread():
        yield


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct, float32, eval mode."""
    from diag.models import load_pretrained

    model, tokenizer = load_pretrained("smollm2-135m-instruct")
    return model.eval(), tokenizer


#: the sliding-window variants of the zoo (a window of 8 positions)
SLIDING_VARIANTS = ["mistral-sw8", "gemma2-sw8"]
#: buffers of the static cache exports of :func:`static_exports`
STATIC_MAX_LENGTH = 32


@pytest.fixture(scope="session")
def static_exports(tmp_path_factory):
    """``get(name) -> (model, ExportResult)``: the zoo model ``name`` exported once per
    session with ``cache="static", max_length=STATIC_MAX_LENGTH``, unvalidated (the
    export tests validate one; the parity tests compare the tokens)."""
    from diag.export import export_causal_lm
    from diag.models import get_untrained_model_with_inputs

    done: dict = {}

    def get(name: str):
        if name not in done:
            model = get_untrained_model_with_inputs(name)["model"].eval()
            path = tmp_path_factory.mktemp(f"static-{name}") / "model.onnx"
            done[name] = (
                model,
                export_causal_lm(
                    model, path, cache="static", max_length=STATIC_MAX_LENGTH, verify=False
                ),
            )
        return done[name]

    return get


@pytest.fixture(scope="session")
def gqa_exports(tmp_path_factory):
    """``get(name) -> (model, ExportResult)``: the zoo model ``name`` exported once per
    session with ``attention="gqa"`` (``GroupQueryAttention``), validated."""
    from diag.export import export_causal_lm
    from diag.models import get_untrained_model_with_inputs

    done: dict = {}

    def get(name: str):
        if name not in done:
            model = get_untrained_model_with_inputs(name)["model"].eval()
            path = tmp_path_factory.mktemp(f"gqa-{name}") / "model.onnx"
            done[name] = (model, export_causal_lm(model, path, attention="gqa"))
        return done[name]

    return get


def left_padded_prompts(
    length: int, pads: tuple[int, ...], *, high: int, seed: int, low: int = 3, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``len(pads)`` seeded random prompts of ``length`` ids in ``[low, high)``, row ``i``
    left-padded with ``pads[i]`` tokens ``pad_id``: ``(input_ids, attention_mask)``."""
    ids = torch.randint(low, high, (len(pads), length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
        ids[row, :pad] = pad_id
    return ids, mask


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


# the packages whose release shapes what another tool writes
_TOOL_PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnx-ir", "onnxruntime-genai", "optimum-onnx")


def _folder_sha256(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()


def tool_folder(tool: str, source, options: dict, build: Callable[[Path], None]) -> Path:
    """The folder ``build(folder)`` writes with another tool from the Hugging Face folder
    ``source``: ``$DIAG_CACHE/other_tools/<tool>-<key>``, built once per key (the tool,
    its options, the releases of the packages it runs on, the bytes of ``source``) and
    reused by every later test and run. It is built in a temporary folder beside it and
    renamed into place (a rename of a folder is atomic): a folder under that name is whole.
    """
    from diag.compat.versions import installed_version
    from diag.export.plan.export_key import cache_dir, key_of_parts
    from diag.export.record.cache_eviction import evict, mark_used

    parts = {
        "tool": tool,
        "options": options,
        "versions": {p: installed_version(p) for p in _TOOL_PACKAGES},
        "source": _folder_sha256(source),
    }
    final = Path(cache_dir()) / "other_tools" / f"{tool}-{key_of_parts(parts)}"
    if final.is_dir():
        mark_used(final / "diag_key.json")
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        (tmp / "diag_key.json").write_text(json.dumps(parts, indent=1, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not another process that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # the same budget as the export cache's: least recently used folders go first
    evict(str(final.parent), keep=str(final))
    return final


@functools.cache
def genai_builder_failure() -> str | None:
    """Why onnxruntime-genai's model builder cannot be imported here, None when it can:
    0.18's builder imports classes of transformers 5.x, and fails on 4.57. Tried in
    this process, once: torch and transformers are loaded already, so it takes seconds
    where a subprocess would load them again (half a minute on CI's 2 cores)."""
    try:
        importlib.import_module("onnxruntime_genai.models.builder")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def build_genai_folder(hf_folder, out, precision: str = "fp32") -> None:
    """onnxruntime-genai's model builder on ``hf_folder`` (CPU), into ``out``."""
    import subprocess
    import sys

    failure = genai_builder_failure()
    if failure is not None:
        pytest.skip(f"onnxruntime-genai's builder cannot run on this transformers: {failure}")
    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_folder), "-o", str(out), "-p", precision, "-e", "cpu",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def genai_folder(hf_folder, precision: str = "fp32") -> Path:
    """:func:`build_genai_folder` of ``hf_folder``, cached (:func:`tool_folder`)."""
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai (a dev extra) is not installed")
    options = {"precision": precision, "execution_provider": "cpu"}
    return tool_folder(
        "genai", hf_folder, options, lambda out: build_genai_folder(hf_folder, out, precision)
    )


@pytest.fixture(scope="session")
def genai_tiny_llama(tiny_llama_folder):
    """``(model, folder)``: the tiny llama through onnxruntime-genai's builder, fp32."""
    model, hf = tiny_llama_folder
    return model, genai_folder(hf)


def load_causal_lm(hf_folder) -> torch.nn.Module:
    """The model of ``hf_folder`` as the tests' torch side has it: its config read by
    :func:`diag.compat.transformers_api.load_config` (on 4.57, a folder saved by 5.x
    would otherwise load with the default rotary base: another model)."""
    from transformers import AutoModelForCausalLM

    from diag.compat.transformers_api import load_config

    return AutoModelForCausalLM.from_pretrained(hf_folder, config=load_config(hf_folder)).eval()


@contextlib.contextmanager
def pytree_nodes_restored() -> Iterator[None]:
    """Removes the pytree nodes registered inside the block: transformers' exporter
    registers the cache classes for the rest of the process, and the tests of
    :func:`diag.torch_export_patches` check the table it finds and leaves. (diag's own
    export runs after them too: it sets them aside for its time, a test of
    ``unittests/export/patches`` checks it.)"""
    import torch.utils._pytree as pytree

    from diag.compat.torch_pytree import deregister_pytree_node

    before = set(pytree.SUPPORTED_NODES)
    try:
        yield
    finally:
        # from every registry (optree's too when installed): the next registration
        # of the class would fail otherwise
        for cls in set(pytree.SUPPORTED_NODES) - before:
            deregister_pytree_node(cls)


def export_with_transformers(
    hf_folder, out, *, with_mask: bool = True, optimize: bool = True, dynamic: bool = True
) -> None:
    """transformers' own exporter (``transformers.exporters``) on the model of
    ``hf_folder``, dynamic shapes, a batch of 2 sample prompts (a batch of 1 specialises
    the batch dimension), the second left-padded when ``with_mask``. ``optimize=False``
    skips onnxscript's optimizer (``OnnxConfig.optimize``, 5.23 on): on SmolLM2
    it is most of the export's time (18 min on a loaded 2-core machine, 2 min without)
    and the graph computes the same. ``dynamic=False`` is the exporter's default: every
    dimension fixed at the sample's."""
    pytest.importorskip(
        "transformers.exporters", reason="transformers.exporters exists from transformers 5.23"
    )
    from transformers.exporters import OnnxConfig, OnnxExporter

    model = load_causal_lm(hf_folder)
    sample = {"input_ids": torch.tensor([[1, 5, 7, 9], [2, 1, 4, 6]])}
    if with_mask:
        sample["attention_mask"] = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    config = OnnxConfig(dynamic=dynamic, optimize=optimize)
    with pytree_nodes_restored():
        OnnxExporter().export_for_generation(model, sample, config).save_pretrained(out)


def transformers_folder(
    hf_folder, *, with_mask: bool = True, optimize: bool = True, dynamic: bool = True
) -> Path:
    """:func:`export_with_transformers` of ``hf_folder``, cached (:func:`tool_folder`)."""
    options = {"with_mask": with_mask, "optimize": optimize, "dynamic": dynamic}
    return tool_folder(
        "transformers",
        hf_folder,
        options,
        lambda out: export_with_transformers(hf_folder, out, **options),
    )


@pytest.fixture(scope="session")
def transformers_tiny_llama(tiny_llama_folder):
    """``(model, folder)``: the tiny llama through transformers' exporter
    (``prefill.onnx`` + ``decode.onnx`` + ``export.json``)."""
    model, hf = tiny_llama_folder
    return model, transformers_folder(hf)


@pytest.fixture(scope="session")
def smollm2_folder():
    """The Hugging Face folder of SmolLM2-135M-Instruct (converted once, cached)."""
    from diag.models.pretrained import ensure_model_folder

    return ensure_model_folder("smollm2-135m-instruct", progress=False)


@pytest.fixture(scope="session")
def genai_smollm2(smollm2_folder):
    """``precision -> folder``: SmolLM2 through onnxruntime-genai's builder, built on
    first use (fp32 ~10 s, int4 ~20 s on 2 cores), cached."""
    return lambda precision: genai_folder(smollm2_folder, precision)


@pytest.fixture(scope="session")
def transformers_smollm2(smollm2_folder):
    """SmolLM2 through transformers' exporter (a prefill + decode folder), without
    onnxscript's optimizer (with it: 18 min on a loaded 2-core machine), cached."""
    return transformers_folder(smollm2_folder, optimize=False)


def require_optimum() -> None:
    """Skips where optimum-onnx is not installed: it needs transformers < 4.58, CI's
    4.57.6 phase installs it (its extra requirements), the other phases skip."""
    pytest.importorskip(
        "optimum.exporters.onnx",
        reason="optimum-onnx needs transformers < 4.58: CI's 4.57.6 phase installs it",
    )


def optimum_folder(hf_folder) -> Path:
    """optimum-onnx's decoder export (``text-generation-with-past``) of the model of
    ``hf_folder``, cached (:func:`tool_folder`); its own validation against torch is
    skipped (the tests compare the tokens)."""
    require_optimum()
    from optimum.exporters.onnx import onnx_export_from_model

    task = "text-generation-with-past"

    def build(out: Path) -> None:
        onnx_export_from_model(load_causal_lm(hf_folder), str(out), task=task, do_validation=False)

    return tool_folder("optimum", hf_folder, {"task": task}, build)


@pytest.fixture(scope="session")
def optimum_tiny_llama(tiny_llama_folder):
    """``(model, folder)``: the tiny llama through optimum-onnx's decoder export."""
    model, hf = tiny_llama_folder
    return model, optimum_folder(hf)


@pytest.fixture(scope="session")
def optimum_smollm2(request):
    """SmolLM2 through optimum-onnx's decoder export, cached (skips before SmolLM2's
    folder is asked for where optimum-onnx is missing)."""
    require_optimum()
    return optimum_folder(request.getfixturevalue("smollm2_folder"))


def greedy_reference(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int = 12):
    """``model.generate``'s greedy tokens on an unpadded ``prompt``, eos ignored: the
    reference the tests of other layouts' files compare with."""
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=None,
    )
