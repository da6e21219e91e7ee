"""``assert_same_tokens``: two sides generate from the same prompts; a test fails with
the reason, not only the fact.

Both sides (a torch model, an exported ONNX model, in any pairing) generate with the
same decoding loop and options, greedy, seeded sampling or a beam search
(``num_beams``: one report per prompt, its rows share one search), the prompts in one
left-padded batch. When a prompt's tokens differ, the :class:`AssertionError` says, for
each such prompt, what :mod:`diag.diagnose` says: the first divergent step, both sides'
top candidates with their margins, whether rounding explains it (the near-tie verdict
of :func:`~diag.diagnose.divergence.near_tie_verdict`) and, when one side is a torch
model and the other an ONNX file, the first decoder layer beyond tolerance on the
tokens read before that step (:func:`~diag.diagnose.layers.localize_layer`).

Example::

    assert_same_tokens(model, "model.onnx", ["def f(x):", "Hello"], tokenizer=tok,
                       max_new_tokens=20)
"""

from __future__ import annotations

from typing import Any

import torch

from diag.diagnose.divergence import Divergence
from diag.diagnose.sides import compare_sides, comparison_options
from diag.generation.steps import Steps, open_steps
from diag.helpers.wrap import wrap_report
from diag.testing.prompts import encode_prompts
from diag.testing.prompts import prompt_rows as _prompt_rows


def describe_prompt(index: int, ids: list[int], tokenizer: Any = None, width: int = 60) -> str:
    """``prompt 0 'its text'`` (with a tokenizer, cut at ``width`` characters) or
    ``prompt 0 [5, 6, ...]`` (its first ids).

    >>> describe_prompt(1, list(range(30)))
    'prompt 1 [0, 1, 2, 3, 4, 5, ...] (30 tokens)'
    """
    if tokenizer is not None:
        text = repr(tokenizer.decode(ids, skip_special_tokens=True))
        text = text if len(text) <= width else text[:width] + "..."
    else:
        shown = ids if len(ids) <= 8 else ids[:6]
        text = "[" + ", ".join(map(str, shown)) + (", ...]" if len(ids) > 8 else "]")
    return f"prompt {index} {text} ({len(ids)} tokens)"


def describe_options(options: Any, seed: int | None) -> str:
    """One line: greedy or sampling (with its seed), beam search, the length, the eos."""
    how = (
        f"sampling (seed={seed}, temperature={options.temperature}, top_k={options.top_k}, "
        f"top_p={options.top_p})"
        if options.do_sample
        else "greedy"
    )
    if options.num_beams > 1:
        how = f"beam search of {options.num_beams} hypotheses, " + (
            how if options.do_sample else f"length_penalty={options.length_penalty}"
        )
    return f"{how}, max_new_tokens={options.max_new_tokens}, eos_token_id={options.eos_token_id}"


def localize(reference: Steps, candidate: Steps, read: list[int], tol: float | None) -> str:
    """One line: the first stage beyond ``tol`` on the tokens ``read`` (localize_layer),
    or why the two sides cannot be compared layer by layer."""
    torch_side = next((s for s in (reference, candidate) if s.kind == "torch"), None)
    onnx_side = next((s for s in (reference, candidate) if s.kind == "onnx"), None)
    if torch_side is None or onnx_side is None:
        return "layer by layer: not compared (it needs a torch model on one side, an ONNX file on the other)"
    if onnx_side.onnx_model is None:
        return (
            "layer by layer: not compared (the ONNX side is a session whose file is unknown; "
            "pass the .onnx file to compare layer by layer)"
        )
    from diag.diagnose.layers import localize_layer

    try:
        report = localize_layer(
            torch_side.model, onnx_side.onnx_model, torch.tensor([read]), tol=tol
        )
    except (TypeError, ValueError, RuntimeError) as e:
        return f"layer by layer: not compared ({type(e).__name__}: {str(e).splitlines()[0]})"
    head = str(report).splitlines()[0]
    return f"layer by layer, on the {len(read)} tokens read before this step: {head}"


def assert_same_tokens(
    reference: Any,
    candidate: Any,
    prompts: Any,
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 20,
    num_candidates: int = 5,
    layer_tol: float | None = None,
    localize_layers: bool = True,
    providers: Any = None,
    **decoding_options: Any,
) -> list[list[int]]:
    """Asserts that ``candidate`` generates the tokens ``reference`` generates.

    :param reference: a transformers causal LM, an ONNX file or folder, an
        ``onnx.ModelProto`` or an ``onnxruntime.InferenceSession``
    :param candidate: the same kinds
    :param prompts: text(s) (with ``tokenizer``), lists of token ids, a ``[batch, seq]``
        tensor or a tokenizer output; several prompts run as one left-padded batch
    :param tokenizer: tokenizes text prompts and adds the tokens' text to the message
    :param max_new_tokens: length of the generations
    :param num_candidates: candidates shown per side at a divergence
    :param layer_tol: tolerance of :func:`~diag.diagnose.layers.localize_layer` (None:
        its default for the torch model's dtype)
    :param localize_layers: False skips the layer-by-layer comparison of a failure
    :param providers: ONNX Runtime providers of a session created here
    :param decoding_options: ``GenerationConfig`` names (``do_sample``, ``temperature``,
        ``top_k``, ``eos_token_id``...) and ``seed`` (needed to sample); greedy unless
        ``do_sample=True``
    :return: the reference's new tokens, one list per row
    :raises AssertionError: with, per failing prompt, the first divergent step, both
        sides' top candidates and margins, the verdict, and the first layer beyond
        tolerance

    >>> import diag.testing
    >>> from diag.models import get_untrained_model_with_inputs
    >>> m = get_untrained_model_with_inputs("llama")["model"]
    >>> diag.testing.assert_same_tokens(m, m, [[5, 6, 7]], max_new_tokens=3) != []
    True
    """
    ref = open_steps(reference, providers=providers, what="reference")
    cand = open_steps(candidate, providers=providers, what="candidate")
    defaults = ref.defaults if ref.defaults is not None else cand.defaults
    options, seed = comparison_options(defaults, max_new_tokens, decoding_options)
    pad = options.pad_token_id if isinstance(options.pad_token_id, int) else 0
    input_ids, attention_mask = encode_prompts(prompts, tokenizer, pad)
    a, b, divergence = compare_sides(
        ref, cand, input_ids, attention_mask, options, seed,
        tokenizer=tokenizer, num_candidates=num_candidates,
    )  # fmt: skip
    rows_a, rows_b = a.generated(), b.generated()
    failing = [r for r in range(len(rows_a)) if rows_a[r] != rows_b[r]]
    if not failing:
        return rows_a
    prompts_read = _prompt_rows(input_ids, attention_mask)
    per_prompt = len(rows_a) // len(prompts_read)  # num_return_sequences rows per prompt
    lines = [
        f"{len(failing)} of {len(rows_a)} generations differ between the reference "
        f"({ref.label}) and the candidate ({cand.label}); {describe_options(options, seed)}"
    ]
    beams = options.num_beams > 1
    # the report of each row that differs (of each prompt: a beam search's rows of a
    # prompt share one search)
    reports = {d.batch_index: d for d in divergence.row_divergences}
    for r in sorted({r // per_prompt for r in failing}) if beams else failing:
        row = r * per_prompt if beams else r
        div: Divergence = reports[r]
        prompt = prompts_read[row // per_prompt]
        sequence = f", sequence {row % per_prompt}" if per_prompt > 1 and not beams else ""
        lines.append(f"--- {describe_prompt(row // per_prompt, prompt, tokenizer)}{sequence}:")
        lines.append(str(div))
        if localize_layers:
            lines.append("  " + localize(ref, cand, prompt + div.common_prefix, layer_tol))
    raise AssertionError(wrap_report("\n".join(lines)))


__all__ = ["assert_same_tokens", "describe_options", "describe_prompt"]
