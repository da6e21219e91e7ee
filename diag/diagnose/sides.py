"""Two sides of a comparison decoded alike: the options both use
(:func:`comparison_options`: greedy unless sampling is asked, sampling needs a seed,
the raw logits kept, and a beam search's scores), one side's generation with them
(:func:`generate_side`), the first divergence of two results (:func:`compare_results`:
by their tokens and logits, a beam search by its steps' decisions), both sides' runs and
their divergence (:func:`compare_sides`) and the float32 noise of a torch side (:func:`float32_noise`: the same comparison
against its float64 copy; :func:`generate_with_noise`: a side's run and its noise in
one call).

:func:`~diag.diagnose.free_running.first_divergence` and :mod:`diag.testing` both
compare through these functions.

>>> options, seed = comparison_options(None, 3, {"top_k": 5})
>>> options.do_sample, options.output_logits, seed
(False, True, None)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from diag.compat.moe_blocks import float64_copy
from diag.diagnose.beams import beam_divergence
from diag.diagnose.divergence import Divergence, find_divergence
from diag.generation.front import run_generation
from diag.generation.options import DecodingOptions, resolve_options
from diag.generation.result import GenerateResult
from diag.generation.steps import Steps, open_steps
from diag.helpers.torch_helper import single_torch_thread


def side_dtype(side: Steps) -> torch.dtype | None:
    """The float dtype ``side`` computes its logits in: a torch model's parameters', an
    ONNX session's ``logits`` output's; None when neither is known (a step backend)."""
    if side.model is not None:
        return next(side.model.parameters()).dtype
    session = getattr(side.backend, "session", None)
    outputs = session.get_outputs() if session is not None else []
    logits = [o for o in outputs if o.name == "logits"] or outputs[:1]
    if logits:
        from diag.helpers.dtypes import onnx_dtype_to_torch_dtype, ort_type_to_onnx_dtype

        try:
            return onnx_dtype_to_torch_dtype(ort_type_to_onnx_dtype(logits[0].type))
        except ValueError:
            return None
    return None


def narrowest_dtype(*sides: Steps) -> torch.dtype:
    """The float dtype of the least precise side (the largest eps; float32 when none is
    known): the dtype the rounding of a comparison is bounded by.

    >>> narrowest_dtype()
    torch.float32
    """
    dtypes = [d for d in map(side_dtype, sides) if d is not None and d.is_floating_point]
    return max(dtypes, key=lambda d: torch.finfo(d).eps, default=torch.float32)


def comparison_options(
    defaults: Any, max_new_tokens: int, decoding: dict[str, Any], who: str = "diag.testing"
) -> tuple[DecodingOptions, int | None]:
    """``(options, seed)`` both sides decode with: greedy unless ``do_sample`` is given
    (whatever the model's generation config says), raw logits kept; sampling needs a
    ``seed`` (popped from ``decoding``) so that both sides draw the same random
    numbers. ``who`` names the caller in the error messages."""
    decoding = dict(decoding)
    seed = decoding.pop("seed", None)
    for kept in ("output_logits", "output_scores"):
        if kept in decoding:
            raise ValueError(f"{who} keeps the logits itself; do not pass {kept}.")
    decoding.setdefault("do_sample", False)
    if decoding["do_sample"] and seed is None:
        raise ValueError(
            f"{who} with do_sample=True needs seed=<int>: both sides must draw the same "
            "random numbers for their tokens to be comparable."
        )
    options = resolve_options(
        defaults=defaults, max_new_tokens=max_new_tokens, output_logits=True, **decoding
    )
    if options.num_beams > 1:
        # a beam search is compared by its steps' decisions, scored with the processed
        # log-probabilities (diag.diagnose.beams)
        options = dataclasses.replace(options, output_scores=True)
    return options, seed


def generate_side(
    side: Steps,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    seed: int | None = None,
) -> GenerateResult:
    """The :class:`~diag.generation.result.GenerateResult` of one side (its sampling
    generator seeded with ``seed`` when given)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    # small [batch, vocab] torch ops between runtime calls: one thread on both sides,
    # so that both run the loop alike (see single_torch_thread)
    with torch.no_grad():
        return run_generation(
            side,
            input_ids,
            attention_mask,
            options,
            generator=generator,
            return_result=True,
            step_context=single_torch_thread,
        )


def compare_sides(
    reference: Steps,
    candidate: Steps,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    seed: int | None = None,
    *,
    reference_result: GenerateResult | None = None,
    names: tuple[str, str] | None = None,
    **report: Any,
) -> tuple[GenerateResult, GenerateResult, Divergence]:
    """Both sides' results on the same prompt, options and seed (their
    :meth:`~diag.generation.result.GenerateResult.generated` rows and logits) and the
    first :class:`~diag.diagnose.divergence.Divergence` of ``candidate`` from
    ``reference`` over every row (:func:`~diag.diagnose.divergence.find_divergence`, its
    verdict in the narrowest dtype of the two). ``reference_result``: the reference's
    run, made already with these; ``names`` (None: the sides' names) and ``report``
    (``tokenizer``, ``num_candidates``, ``quantized_bits``) go to the report.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> side = open_steps(get_untrained_model_with_inputs("llama")["model"])
    >>> options, seed = comparison_options(side.defaults, 2, {})
    >>> a, b, div = compare_sides(side, side, torch.tensor([[5, 6, 7]]), None, options, seed)
    >>> a.generated() == b.generated(), bool(div)
    (True, False)
    """
    dtype = narrowest_dtype(reference, candidate)
    a = reference_result or generate_side(reference, input_ids, attention_mask, options, seed)
    b = generate_side(candidate, input_ids, attention_mask, options, seed)
    names = names or (reference.name, candidate.name)
    divergence = compare_results(a, b, names=names, dtype=dtype, **report)
    return a, b, divergence


def compare_results(
    reference: GenerateResult,
    other: GenerateResult,
    *,
    names: tuple[str, str] = ("torch", "onnx"),
    dtype: torch.dtype | None = None,
    tokenizer: Any = None,
    num_candidates: int = 5,
    quantized_bits: int | None = None,
) -> Divergence:
    """The first :class:`~diag.diagnose.divergence.Divergence` of two generations
    already made of the same prompts: two beam searches that both kept their steps'
    decisions (diag's loop) by those decisions (:mod:`diag.diagnose.beams`), anything
    else by its tokens and, where both kept them, the logits each row read (a beam
    search's logits are the batch's rows, not its hypotheses': not read).

    >>> from diag.generation import generate
    >>> from diag.models import get_untrained_model_with_inputs
    >>> m = get_untrained_model_with_inputs("llama")["model"]
    >>> r = generate(m, torch.tensor([[5, 6, 7]]), max_new_tokens=2, num_beams=2,
    ...              do_sample=False, output_scores=True, return_result=True)
    >>> bool(compare_results(r, r))
    False
    """
    rows = reference.generated(), other.generated()
    if reference.beam_steps is not None and other.beam_steps is not None:
        return beam_divergence(
            reference, other, *rows, names=names, tokenizer=tokenizer, dtype=dtype,
            quantized_bits=quantized_bits,
        )  # fmt: skip
    beam = reference.beam_indices is not None or other.beam_indices is not None
    return find_divergence(
        *rows,
        None if beam else reference.logits,
        None if beam else other.logits,
        names=names,
        tokenizer=tokenizer,
        num_candidates=num_candidates,
        dtype=dtype,
        quantized_bits=quantized_bits,
    )


def float32_noise(
    side: Steps,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    result: GenerateResult,
    seed: int | None = None,
) -> float | None:
    """The largest logits difference between the torch model of ``side`` and a float64
    copy of it on the same prompts and options, over the steps where both read the
    same tokens (:attr:`~diag.diagnose.divergence.Divergence.largest_diff`); ``result``
    is the side's own run. None when ``side`` is no torch model.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> side = open_steps(get_untrained_model_with_inputs("llama")["model"])
    >>> options, seed = comparison_options(side.defaults, 2, {})
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> isinstance(float32_noise(side, ids, None, options, generate_side(side, ids, None, options)), float)
    True
    """
    if side.model is None or result.logits is None:
        return None
    *_, div = compare_sides(
        side, _float64_side(side), input_ids, attention_mask, options, seed,
        reference_result=result,
    )  # fmt: skip
    return div.largest_diff


def generate_with_noise(
    side: Steps,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    options: DecodingOptions,
    seed: int | None = None,
) -> tuple[GenerateResult, float | None]:
    """``(result, noise)``: the side's run (:func:`generate_side`) and its
    :func:`float32_noise` in one call, the run made once: a torch side's run is the
    reference of the comparison with its float64 copy; another side's noise is None.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> side = open_steps(get_untrained_model_with_inputs("llama")["model"])
    >>> options, seed = comparison_options(side.defaults, 2, {})
    >>> result, noise = generate_with_noise(side, torch.tensor([[5, 6, 7]]), None, options)
    >>> len(result.generated()[0]) <= 2, isinstance(noise, float)
    (True, True)
    """
    if side.model is None:
        return generate_side(side, input_ids, attention_mask, options, seed), None
    result, _, div = compare_sides(
        side, _float64_side(side), input_ids, attention_mask, options, seed
    )
    return result, div.largest_diff if result.logits is not None else None


def _float64_side(side: Steps) -> Steps:
    """A float64 copy of the torch model of ``side``, opened as a side."""
    return open_steps(float64_copy(side.model), what=f"{side.name} (float64)")


__all__ = [
    "compare_results",
    "compare_sides",
    "comparison_options",
    "float32_noise",
    "generate_side",
    "generate_with_noise",
    "narrowest_dtype",
    "side_dtype",
]
