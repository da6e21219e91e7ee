"""``first_divergence``: torch and ONNX generate freely, then the first step where their
tokens differ, and why (:func:`diag.diagnose.divergence.find_divergence`).

Both backends generate with the same decoding loop
(:func:`diag.generation.decoding.decode`, greedy by default) and keep their raw logits
at every step; the report and its near-tie verdict are those of
:mod:`diag.diagnose.divergence`.

Example::

    div = first_divergence(model, "model.onnx", input_ids, max_new_tokens=30, tokenizer=tok)
    print(div)        # readable report
    div.step          # None when the token streams agree
"""

from __future__ import annotations

from typing import Any

import torch

from diag.diagnose.divergence import Divergence, find_divergence
from diag.generation.decoding import check_inputs, decode
from diag.generation.options import resolve_options
from diag.ort.step_backend import as_step_backend


def _row_streams(result: Any) -> list[list[int]]:
    return [
        result.new_tokens[row, :n].tolist() for row, n in enumerate(result.num_generated_tokens)
    ]


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
        ``generation_config`` says
    :return: a :class:`Divergence` (sides ``torch`` and ``onnx``), falsy when both
        streams agree

    Example::

        div = first_divergence(model, "model.onnx", ids, max_new_tokens=40, tokenizer=tok)
        if div:
            print(div)  # step, both sides' top-5, margins, verdict
    """
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}.")
    if "output_logits" in decoding or "output_scores" in decoding:
        raise ValueError("first_divergence sets output_logits itself; do not pass it.")
    input_ids, attention_mask = check_inputs(input_ids, attention_mask)
    decoding.setdefault("do_sample", False)
    if decoding["do_sample"] and seed is None:
        raise ValueError(
            "first_divergence with do_sample=True needs a seed: both sides must draw the same "
            "random numbers for their tokens to be comparable."
        )
    defaults = getattr(model, "generation_config", None)
    options = resolve_options(
        defaults=defaults, max_new_tokens=max_new_tokens, output_logits=True, **decoding
    )
    torch_backend = as_step_backend(model)
    ort_backend = as_step_backend(onnx_model_or_session, providers, what="onnx_model_or_session")

    def gen(backend: Any) -> Any:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return decode(backend, input_ids, attention_mask, options, generator=generator)

    pt = gen(torch_backend)
    ox = gen(ort_backend)
    return find_divergence(
        _row_streams(pt),
        _row_streams(ox),
        pt.logits,
        ox.logits,
        names=("torch", "onnx"),
        tokenizer=tokenizer,
        num_candidates=num_candidates,
    )


__all__ = ["first_divergence"]
