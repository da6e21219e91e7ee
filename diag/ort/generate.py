"""``onnx_generate``: ``diag.generate`` for an exported ONNX model.

The tokens are chosen by the same loop as :func:`diag.generate`
(:mod:`diag.generation.decoding`); only the step runs in ONNX Runtime, through an
:class:`~diag.ort.backend.OrtBackend`. Whenever the ONNX logits agree with the torch
logits, the tokens are the same, for greedy search, seeded sampling, batches with left
padding, eos and streaming alike.

Example::

    tokens, session, feeds = onnx_generate("model.onnx", ids, max_new_tokens=2,
                                           return_session=True)
    tokens = onnx_generate(session, ids, eos_token_id=2, max_new_tokens=100)  # reuses it
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import onnx
import onnxruntime as ort
import torch

from diag.generation.front import generation_front, run_generation
from diag.ort.backend import OrtBackend
from diag.ort.open import open_backend
from diag.ort.session import Providers


def get_backend(
    model_or_session: Any,
    providers: Providers = None,
    *,
    session_options: ort.SessionOptions | None = None,
    vocab_size: int | None = None,
    layout: Any = None,
) -> OrtBackend:
    """An :class:`OrtBackend` over a folder or a path, a ModelProto, an ``onnx_ir.Model``,
    an ``InferenceSession`` or an existing backend (returned as it is); ``layout``
    overrides the detected layout (:func:`diag.ort.open.open_backend`).

    Example::

        backend = get_backend("model.onnx")
        backend is get_backend(backend)  # True
    """
    if isinstance(model_or_session, OrtBackend):
        if providers is not None:
            wanted = [p[0] if isinstance(p, tuple) else p for p in _as_list(providers)]
            if wanted[0] != model_or_session.session.get_providers()[0]:
                raise ValueError(
                    f"providers={providers!r} but the session given runs on "
                    f"{model_or_session.session.get_providers()}; create a new one from the "
                    "model file to change providers."
                )
        return model_or_session
    if isinstance(model_or_session, ort.InferenceSession) or is_onnx_model(model_or_session):
        # the layout (diag's, onnxruntime-genai's, transformers'...) found by diag.ort.open
        return open_backend(
            model_or_session,
            providers,
            layout=layout,
            session_options=session_options,
            vocab_size=vocab_size,
        )
    if isinstance(model_or_session, torch.nn.Module):
        raise TypeError(
            "onnx_generate runs an ONNX model; for a torch model use diag.generate, or export "
            "it first with diag.export_causal_lm(model, 'model.onnx')."
        )
    raise TypeError(
        "model_or_session must be a path to an .onnx file, an onnx.ModelProto, an "
        "onnx_ir.Model, an onnxruntime.InferenceSession or the session returned by "
        f"onnx_generate(..., return_session=True); got {type(model_or_session).__name__}."
    )


def is_onnx_model(obj: Any) -> bool:
    """True for what :func:`get_backend` creates a session from: a path, an
    ``onnx.ModelProto`` or an ``onnx_ir.Model``.

    >>> is_onnx_model("model.onnx"), is_onnx_model(42)
    (True, False)
    """
    return isinstance(obj, (str, os.PathLike, onnx.ModelProto)) or type(obj).__module__.startswith(
        "onnx_ir"
    )


def _as_list(providers: Providers) -> list:
    return [providers] if isinstance(providers, str) else list(providers or [])


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Runs the block with one torch intra-op thread, then restores the setting.

    Between two ONNX Runtime steps the loop runs small torch ops on ``[batch, vocab]``
    logits (processors, argmax, eos checks). With several torch threads, OpenMP's
    workers spin-wait after each op and take cores from ONNX Runtime's own threads,
    which slows the decode down (measure it with ``bench/bench_onnx_generate.py``). The
    torch ops themselves are too small to gain from threads.

    Example::

        with single_torch_thread():
            result = decode(backend, ids, mask, options)
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@generation_front
def onnx_generate(
    model_or_session: Any,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    *,
    return_session: bool = False,
    providers: Providers = None,
    session_options: ort.SessionOptions | None = None,
    vocab_size: int | None = None,
    layout: Any = None,
    **options: Any,
) -> Any:
    """Generates with an exported causal LM in ONNX Runtime, like :func:`diag.generate`.

    ``model_or_session`` is a path to an ``.onnx`` file following the export contract
    (:func:`diag.export_causal_lm` writes them) or another known layout (a folder of
    onnxruntime-genai's builder or of transformers' exporter, see
    :mod:`diag.contract.detect`; ``layout=`` overrides it), an ``onnx.ModelProto`` / ``onnx_ir.Model``,
    an ``onnxruntime.InferenceSession``, or the session returned by an earlier call with
    ``return_session=True`` (which skips the session creation, the slow part).
    ``providers`` picks the execution providers of a new session
    (``["CUDAExecutionProvider"]`` keeps the cache and every step on the GPU).

    The decoding options are :func:`diag.generate`'s, with transformers'
    ``GenerationConfig`` names, and mean the same: one left to :data:`diag.UNSET` (the
    default) is not given and comes from ``generation_config``, then from a
    ``generation_config`` JSON entry in the model's metadata when there is one (the
    model's generation config, written by :func:`diag.export_causal_lm`), then from
    transformers (20 new tokens); any value given, ``None`` included, means what it
    means to ``model.generate`` (``eos_token_id=None``: no eos, ``top_k=None``: no
    top-k...). There is no torch model here: the metadata stands for
    ``model.generation_config``, or pass ``generation_config=model.generation_config``.
    ``input_ids`` may be text, chat messages or lists of them with a ``tokenizer``
    (left-padded).

    Returns the ``[batch * num_return_sequences, prompt + new]`` LongTensor, the
    :class:`~diag.generation.result.GenerateResult` with ``return_result=True``, a
    :class:`~diag.generation.streaming.GenerationStream` with ``stream=True``; with
    ``return_session=True``, the tuple ``(that, session, feeds)`` where ``feeds`` holds
    the inputs of the last step as numpy arrays (``session.session.run(None, feeds)``
    replays it).

    Example (an export takes a few seconds even for a tiny model)::

        _, session, _ = onnx_generate("model.onnx", ids, max_new_tokens=2, return_session=True)
        tokens = onnx_generate(session, ids, eos_token_id=tok.eos_token_id, max_new_tokens=100)
        res = onnx_generate(session, "def f(x):", tokenizer=tok, do_sample=True, top_p=0.9,
                            generator=torch.Generator().manual_seed(0), return_result=True)
    """
    backend = get_backend(
        model_or_session,
        providers,
        session_options=session_options,
        vocab_size=vocab_size,
        layout=layout,
    )
    if return_session and options.get("stream"):
        raise ValueError(
            "return_session=True needs the generation to finish; with stream=True keep "
            "the session with get_backend(...) and pass it to onnx_generate instead."
        )
    output = run_generation(
        backend,
        input_ids,
        attention_mask,
        backend.generation_defaults,
        single_torch_thread,
        **options,
    )
    if return_session:
        return output, backend, backend.feeds_as_numpy()
    return output
