"""``first_divergence``: torch and ONNX generate freely, then the first step where their
tokens differ, and why (:func:`diag.diagnose.divergence.find_divergence`).

Both sides are opened by :func:`~diag.generation.steps.open_steps` and generate with
the same options, compared by :func:`~diag.diagnose.sides.compare_sides` (greedy by
default, raw logits kept at every step); the report and its near-tie verdict are those of
:mod:`diag.diagnose.divergence`, told when the ONNX side is a quantized export.

Example::

    div = first_divergence(model, "model.onnx", input_ids, max_new_tokens=30, tokenizer=tok)
    print(div)        # readable report
    div.step          # None when the token streams agree
"""

from __future__ import annotations

from typing import Any

import torch

from diag.contract import metadata_quantization
from diag.contract.inspection import quantized_bits
from diag.diagnose.divergence import Divergence
from diag.diagnose.sides import compare_sides, comparison_options
from diag.generation.decoding import check_inputs
from diag.generation.steps import open_steps


def first_divergence(
    model: Any,
    onnx_model_or_session: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    *,
    tokenizer: Any = None,
    num_candidates: int = 5,
    seed: int | None = None,
    providers: Any = None,
    **decoding: Any,
) -> Divergence:
    """Generates with both backends and reports the first step where their tokens differ.

    :param model: the transformers causal LM (or a torch StepBackend)
    :param onnx_model_or_session: a path, an ``onnx.ModelProto``, an
        ``onnxruntime.InferenceSession`` or an :class:`~diag.ort.backend.OrtBackend`;
        a folder or file another tool wrote (onnxruntime-genai's builder,
        transformers' exporter...: the layouts :mod:`diag.contract.detect` knows)
    :param input_ids: the prompt ``[batch, seq]`` (left-padded for batches)
    :param attention_mask: ``[batch, seq]``, 0 on the padding
    :param max_new_tokens: length of the generations
    :param tokenizer: adds the text of the tokens to the report
    :param num_candidates: number of candidates reported per side (not ``top_k``,
        which is the sampling option of that name)
    :param seed: seeds both sides' sampling generators identically (sampling only)
    :param providers: ONNX Runtime providers when a path / ModelProto is given
    :param decoding: other decoding options, ``GenerationConfig`` names
        (``do_sample``, ``temperature``, ``eos_token_id``, ``repetition_penalty``...);
        greedy (``do_sample=False``) unless given, whatever the model's
        ``generation_config`` says; ``num_beams > 1`` compares two beam searches
        (:mod:`diag.diagnose.beams`: the hypotheses the sides ranked the other way)
    :return: a :class:`Divergence` (sides ``torch`` and ``onnx``), falsy when both
        streams agree

    Example::

        div = first_divergence(model, "model.onnx", ids, max_new_tokens=40, tokenizer=tok)
        if div:
            print(div)  # step, both sides' top-5, margins, verdict
    """
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}.")
    input_ids, attention_mask = check_inputs(input_ids, attention_mask)
    torch_side = open_steps(model)
    # the options checked before a session is made
    options, seed = comparison_options(
        torch_side.defaults, max_new_tokens, {**decoding, "seed": seed}, who="first_divergence"
    )
    onnx_side = open_steps(onnx_model_or_session, providers=providers, what="onnx_model_or_session")
    # a quantized model differs from torch by design: diag's exports say so in their
    # metadata, the graph of another tool's file (MatMulNBits) does
    session = getattr(onnx_side.backend, "session", None)
    quantization = metadata_quantization(session) if session is not None else None
    bits = quantization.get("bits") if quantization else quantized_bits(onnx_side.onnx_model)
    *_, divergence = compare_sides(
        torch_side, onnx_side, input_ids, attention_mask, options, seed,
        names=("torch", "onnx"), tokenizer=tokenizer, num_candidates=num_candidates,
        quantized_bits=bits,
    )  # fmt: skip
    return divergence


__all__ = ["first_divergence"]
