"""``compare --dtype``: which dtype each side runs in, and what the model's dtype does
to the tokens on its own.

A checkpoint in bfloat16 or float16 is compared like with like: ``model.generate``,
``diag.generate`` and the export run in the export's dtype (:func:`compared_model`:
float32 for a bfloat16 model on the CPU, whose provider has no bfloat16 kernels), and
the parity verdict is the export's own fidelity. The dtype's own effect is a second
verdict (:func:`dtype_effect`): ``model.generate`` in the checkpoint's dtype against
``model.generate`` in float32 on the same prompts, where the reduced precision first
changes a token, with both margins there (:func:`diag.find_divergence`).

Example::

    compared = compared_model(model)            # float32 copy of a bfloat16 model
    for i, div in dtype_effect(model, compared, runs["hf"], singles, options, tok):
        print(i, div)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diag.diagnose.divergence import Divergence, find_divergence
from diag.export.plan.dtype import dtype_name, export_dtype, model_dtype, model_in_dtype


def compared_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in the dtype its export runs in (:func:`diag.export.plan.dtype.export_dtype`,
    which says so when it is another: a bfloat16 model on the CPU), for all three
    backends."""
    return model_in_dtype(model, export_dtype(model, None))


def dtype_effect(
    model: torch.nn.Module,
    compared: torch.nn.Module,
    compared_runs: Sequence[Any],
    singles: Sequence[tuple[torch.Tensor, torch.Tensor]],
    options: Any,
    tokenizer: Any = None,
    num_candidates: int = 5,
) -> list[tuple[int, Divergence]]:
    """``[(prompt index, Divergence)]`` of ``model.generate`` in ``model``'s dtype against
    float32, one per prompt (empty for a float32 model). ``compared_runs`` are the
    reference runs already made with ``compared`` (``(GenerateResult, seconds)``), reused
    for the side in its dtype."""
    from diag.cli.runners import HFRunner

    dtype = model_dtype(model)
    if dtype == torch.float32:
        return []

    def runs_of(m: torch.nn.Module) -> list[Any]:
        if model_dtype(m) == model_dtype(compared):
            return [result for result, _ in compared_runs]
        runner = HFRunner(m)
        return [runner(ids, mask, options)[0] for ids, mask in singles]

    reduced = runs_of(model)
    exact = runs_of(model_in_dtype(model, torch.float32))
    return [
        (
            i,
            find_divergence(
                a.generated(),
                b.generated(),
                a.logits,
                b.logits,
                names=("float32", dtype_name(dtype)),
                tokenizer=tokenizer,
                num_candidates=num_candidates,
                dtype=dtype,
            ),
        )
        for i, (a, b) in enumerate(zip(exact, reduced, strict=True))
    ]


def dtype_header(model: torch.nn.Module, compared: torch.nn.Module) -> str:
    """Which dtype the model was loaded in and which the backends run in.

    >>> from diag.models import get_untrained_model_with_inputs
    >>> m = get_untrained_model_with_inputs("llama")["model"]
    >>> dtype_header(m.to(torch.float16), m)
    'float16 (the three backends in float16)'
    """
    loaded, runs = dtype_name(model_dtype(model)), dtype_name(model_dtype(compared))
    if loaded == runs:
        return f"{loaded} (the three backends in {runs})"
    return (
        f"{loaded}, the three backends in {runs} (the export's dtype: ONNX Runtime's CPU "
        f"provider has no {loaded} kernels); {loaded} against float32 below"
    )


def dtype_lines(model: torch.nn.Module, effects: list[tuple[int, Divergence]]) -> list[str]:
    """The report of :func:`dtype_effect`, one block per prompt."""
    name = dtype_name(model_dtype(model))
    lines = [f"----- the model's dtype ({name}) against float32, model.generate -----"]
    for i, div in effects:
        if not div:
            lines.append(f"prompt {i + 1}: {name} generates float32's {div.num_steps} tokens")
        else:
            lines.append(f"prompt {i + 1}: {name} departs from float32: {div}")
    return lines


__all__ = ["compared_model", "dtype_effect", "dtype_header", "dtype_lines"]
