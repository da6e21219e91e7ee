"""``onnx_generate``: :func:`diag.generate` for an exported ONNX model.

The tokens are chosen by the same loop as :func:`diag.generate`
(:mod:`diag.generation.decoding`); only the step runs in ONNX Runtime, through the
:class:`~diag.ort.backend.OrtBackend` that :func:`~diag.generation.steps.open_steps`
opens. Whenever the ONNX logits agree with the torch logits, the tokens are the same,
for greedy search, seeded sampling, batches with left padding, eos and streaming alike.

Example::

    tokens, session, feeds = onnx_generate("model.onnx", ids, max_new_tokens=2,
                                           return_session=True)
    tokens = onnx_generate(session, ids, eos_token_id=2, max_new_tokens=100)  # reuses it
"""

from __future__ import annotations

from typing import Any

import torch

from diag.generation.front import run_keywords
from diag.generation.options import UNSET
from diag.generation.parameter_docs import with_parameter_docs
from diag.generation.steps import open_steps


@with_parameter_docs
def onnx_generate(
    model_or_session: Any,
    input_ids: Any,
    attention_mask: torch.Tensor | None = None,
    *,
    return_session: bool = False,
    providers: Any = None,
    session_options: Any = None,
    vocab_size: int | None = None,
    layout: Any = None,
    max_new_tokens: int | None = UNSET,
    eos_token_id: int | list[int] | None = UNSET,
    pad_token_id: int | None = UNSET,
    do_sample: bool | None = UNSET,
    temperature: float | None = UNSET,
    top_k: int | None = UNSET,
    top_p: float | None = UNSET,
    repetition_penalty: float | None = UNSET,
    num_return_sequences: int = UNSET,
    num_beams: int = UNSET,
    length_penalty: float = UNSET,
    early_stopping: bool | str = UNSET,
    output_scores: bool | None = UNSET,
    output_logits: bool | None = UNSET,
    generator: torch.Generator | None = None,
    streamer: Any = None,
    generation_config: Any = None,
    tokenizer: Any = None,
    return_result: bool = False,
    stream: bool = False,
    **kwargs: Any,
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
    ``GenerationConfig`` names, and mean the same: one left to :data:`diag.generation.UNSET` (the
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

    :param model_or_session: the ONNX model, or the session of an earlier call
    :param input_ids: as in :func:`diag.generate`
    :param attention_mask: as in :func:`diag.generate`
    :param return_session: also returns the session and the last step's feeds
    :param providers: ONNX Runtime's execution providers of a new session (None: CPU)
    :param session_options: the ``onnxruntime.SessionOptions`` of a new session
    :param vocab_size: the vocabulary size when the graph's logits do not fix it
    :param layout: the layout of the file's names, a :class:`~diag.contract.Layout` or
        fields overriding the detected one (None: detected)
    .. decoding parameters

    Example (an export takes a few seconds even for a tiny model)::

        _, session, _ = onnx_generate("model.onnx", ids, max_new_tokens=2, return_session=True)
        tokens = onnx_generate(session, ids, eos_token_id=tok.eos_token_id, max_new_tokens=100)
        res = onnx_generate(session, "def f(x):", tokenizer=tok, do_sample=True, top_p=0.9,
                            generator=torch.Generator().manual_seed(0), return_result=True)
    """
    if isinstance(model_or_session, torch.nn.Module):
        raise TypeError(
            "onnx_generate runs an ONNX model; for a torch model use diag.generate, or export "
            "it first with diag.export_causal_lm(model, 'model.onnx')."
        )
    steps = open_steps(
        model_or_session,
        providers=providers,
        session_options=session_options,
        vocab_size=vocab_size,
        layout=layout,
        what="model_or_session",
    )
    if return_session and stream:
        raise ValueError(
            "return_session=True needs the generation to finish; with stream=True keep "
            "the steps with diag.generation.open_steps(...) and pass them to onnx_generate "
            "instead."
        )
    output = run_keywords(steps, locals())
    if return_session:
        return output, steps.backend, steps.backend.feeds_as_numpy()
    return output


__all__ = ["onnx_generate"]
