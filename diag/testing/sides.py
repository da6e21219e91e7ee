"""The two sides of a regression test: a torch model or an exported ONNX model, each
turned into a step backend and run by the generation front of
:func:`diag.generate` and :func:`diag.onnx_generate`
(:func:`~diag.generation.front.run_generation`).

:mod:`diag.testing` takes either side as a transformers causal LM, an ``.onnx`` file, a
folder holding one (what :func:`diag.export_causal_lm` writes), an ``onnx.ModelProto``
or an ``onnxruntime.InferenceSession``; :func:`as_side` wraps each one once, keeping
what the diagnosis needs besides the backend: the torch module (float64 noise, layer
localisation) and the file of an ONNX model (layer localisation reads the file).

Example::

    side = as_side("exported/", "candidate")
    result = side.generate(ids, mask, options, seed=None)   # a GenerateResult
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import onnx
import torch

from diag.generation.front import run_generation
from diag.generation.options import DecodingOptions, resolve_options
from diag.generation.prompt import prepare_prompt
from diag.ort.generate import single_torch_thread
from diag.ort.step_backend import as_step_backend


@dataclass
class Side:
    """One side of a comparison."""

    #: ``reference`` or ``candidate`` (or what the caller names it)
    name: str
    #: ``torch`` or ``onnx``
    kind: str
    #: what the side is, for messages: ``torch LlamaForCausalLM``, ``onnx model.onnx``
    label: str
    #: the :class:`~diag.generation.backend.StepBackend`
    backend: Any
    #: the torch model (kind ``torch``)
    model: torch.nn.Module | None = None
    #: the ONNX file when known (kind ``onnx``): a path, or a ModelProto
    onnx_model: Any = None

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        options: DecodingOptions,
        seed: int | None = None,
    ) -> Any:
        """The :class:`~diag.generation.result.GenerateResult` of this side (one
        sampling generator seeded with ``seed`` when given)."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        # the front diag.generate and diag.onnx_generate share; the options are resolved
        # already (both sides decode with the same ones): every field goes as a keyword,
        # so resolving them again gives them back. Small [batch, vocab] torch ops between
        # runtime calls: one thread (see single_torch_thread), as in onnx_generate.
        with torch.no_grad():
            return run_generation(
                self.backend,
                input_ids,
                attention_mask,
                step_context=single_torch_thread,
                generator=generator,
                return_result=True,
                **resolved_values(options),
            )

    def generation_defaults(self) -> Any:
        """What ``model.generate`` falls back on: the torch model's generation config,
        the one stored in the ONNX metadata, or None."""
        if self.model is not None:
            return getattr(self.model, "generation_config", None)
        from diag.contract import metadata_generation_config

        return metadata_generation_config(self.backend.session)


def onnx_file_of(path: str | os.PathLike) -> str:
    """The ``.onnx`` file a path designates: the path itself, or the single ``.onnx``
    file of a folder (``model.onnx`` when there are several).

    >>> onnx_file_of("model.onnx")
    'model.onnx'
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    files = sorted(f for f in os.listdir(path) if f.endswith(".onnx"))
    if "model.onnx" in files:
        return os.path.join(path, "model.onnx")
    if len(files) != 1:
        raise ValueError(
            f"the folder {path!r} holds {len(files)} .onnx files ({', '.join(files) or 'none'}); "
            "give the file itself."
        )
    return os.path.join(path, files[0])


def as_side(obj: Any, name: str, providers: Any = None) -> Side:
    """A :class:`Side` over a torch model, an ONNX path / folder / ModelProto, an
    ``InferenceSession`` or an :class:`~diag.ort.backend.OrtBackend`."""
    if isinstance(obj, Side):
        return obj
    if isinstance(obj, torch.nn.Module):
        return Side(name, "torch", f"torch {type(obj).__name__}", as_step_backend(obj), model=obj)
    if isinstance(obj, (str, os.PathLike)):
        path = onnx_file_of(obj)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: no ONNX file at {path!r}.")
        backend = as_step_backend(path, providers, what=name)
        return Side(name, "onnx", f"onnx {path}", backend, onnx_model=path)
    backend = as_step_backend(obj, providers, what=name)
    if isinstance(obj, onnx.ModelProto):
        return Side(name, "onnx", f"onnx {obj.graph.name or 'ModelProto'}", backend, onnx_model=obj)
    # a session created from a file remembers it (a private attribute of onnxruntime's
    # Python class, hence getattr): layer localisation and the weights hash read it
    path = getattr(getattr(backend, "session", None), "_model_path", None)
    if isinstance(path, str) and os.path.exists(path):
        return Side(name, "onnx", f"onnx {path}", backend, onnx_model=path)
    return Side(name, "onnx", f"onnx {type(obj).__name__}", backend)


def encode_prompts(
    prompts: Any, tokenizer: Any = None, pad_token_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of prompts given as text(s) (with a tokenizer,
    left-padded), a ``[batch, seq]`` tensor, a dict / BatchEncoding or lists of token
    ids (left-padded here with ``pad_token_id``).

    >>> ids, mask = encode_prompts([[5, 6, 7], [8]])
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    if isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], int):
        prompts = [prompts]
    if (
        isinstance(prompts, (list, tuple))
        and prompts
        and all(isinstance(p, (list, tuple)) and all(isinstance(t, int) for t in p) for p in prompts)
    ):
        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt is empty: give at least one token per prompt.")
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids, mask
    ids, mask = prepare_prompt(prompts, None, tokenizer)
    if ids.dim() == 1:
        ids = ids[None]
    if mask is None:
        mask = torch.ones_like(ids)
    return ids.long(), mask.long()


def prompt_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """The token ids of every prompt without its padding.

    >>> prompt_rows(torch.tensor([[0, 5, 6]]), torch.tensor([[0, 1, 1]]))
    [[5, 6]]
    """
    return [
        [int(t) for t, m in zip(row.tolist(), keep.tolist(), strict=True) if m]
        for row, keep in zip(input_ids, attention_mask, strict=True)
    ]


def resolve_decoding(
    defaults: Any, max_new_tokens: int, decoding: dict[str, Any]
) -> tuple[DecodingOptions, int | None]:
    """``(options, seed)``: greedy unless ``do_sample`` is given (whatever the model's
    generation config says), raw logits kept; sampling needs a ``seed`` so that both
    sides draw the same random numbers."""
    decoding = dict(decoding)
    seed = decoding.pop("seed", None)
    for kept in ("output_logits", "output_scores"):
        if kept in decoding:
            raise ValueError(f"diag.testing keeps the logits itself; do not pass {kept}.")
    decoding.setdefault("do_sample", False)
    if decoding["do_sample"] and seed is None:
        raise ValueError(
            "do_sample=True needs seed=<int>: both sides must draw the same random numbers "
            "for their tokens to be comparable."
        )
    options = resolve_options(
        defaults=defaults, max_new_tokens=max_new_tokens, output_logits=True, **decoding
    )
    return options, seed


def resolved_values(options: DecodingOptions) -> dict[str, Any]:
    """Every field of resolved options, as keywords that resolve to the same options.

    >>> options = resolve_options(max_new_tokens=3, top_k=None)
    >>> resolve_options(**resolved_values(options)) == options
    True
    """
    data = dataclasses.asdict(options)
    data.pop("defaults_used", None)
    return data


def options_as_dict(options: DecodingOptions) -> dict[str, Any]:
    """The resolved options as plain data (what a record stores), without the output
    switches."""
    data = resolved_values(options)
    for name in ("output_logits", "output_scores"):
        data.pop(name, None)
    return data


__all__ = [
    "Side",
    "as_side",
    "resolve_decoding",
    "encode_prompts",
    "onnx_file_of",
    "options_as_dict",
    "prompt_rows",
    "resolved_values",
]
