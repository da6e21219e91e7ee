"""Generation: the door (:func:`open_steps`), the backend-neutral decoding loop and
its token choice strategies, the run both public functions share
(:func:`run_generation`), the torch backend, ``generate`` and ``onnx_generate``.

Example::

    from diag.generation import generate
    tokens = generate(model, input_ids, max_new_tokens=20)  # == model.generate(...)
"""

from diag.generation.backend import StepBackend
from diag.generation.decoding import StepEvent, decode, iter_decode, prompt_position_ids
from diag.generation.front import run_generation
from diag.generation.generate import generate, stream
from diag.generation.onnx_generate import onnx_generate
from diag.generation.options import UNSET, DecodingOptions, resolve_options
from diag.generation.prompt import prepare_prompt
from diag.generation.result import GenerateResult
from diag.generation.sampling import (
    TokenChoice,
    build_logits_processor,
    choose_tokens,
    token_choice,
)
from diag.generation.steps import Steps, open_steps
from diag.generation.streaming import GenerationStream, TextDeltas, stream_decode
from diag.generation.torch_backend import TorchBackend

__all__ = [
    "DecodingOptions",
    "GenerateResult",
    "GenerationStream",
    "StepBackend",
    "StepEvent",
    "Steps",
    "TextDeltas",
    "TokenChoice",
    "TorchBackend",
    "UNSET",
    "build_logits_processor",
    "choose_tokens",
    "decode",
    "generate",
    "iter_decode",
    "onnx_generate",
    "open_steps",
    "prepare_prompt",
    "prompt_position_ids",
    "resolve_options",
    "run_generation",
    "stream",
    "stream_decode",
    "token_choice",
]
