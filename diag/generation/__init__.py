"""Generation: the backend-neutral decoding loop, the front both public functions
share (:func:`run_generation`), the torch backend and ``generate``.

Example::

    from diag.generation import generate
    tokens = generate(model, input_ids, max_new_tokens=20)  # == model.generate(...)
"""

from diag.generation.backend import StepBackend
from diag.generation.decoding import StepEvent, decode, iter_decode, prompt_position_ids
from diag.generation.front import generation_front, run_generation
from diag.generation.generate import generate, stream
from diag.generation.options import UNSET, DecodingOptions, resolve_options
from diag.generation.prompt import prepare_prompt
from diag.generation.result import GenerateResult
from diag.generation.sampling import build_logits_processor, choose_tokens
from diag.generation.streaming import GenerationStream, TextDeltas, stream_decode
from diag.generation.torch_backend import TorchBackend

__all__ = [
    "DecodingOptions",
    "GenerateResult",
    "GenerationStream",
    "StepBackend",
    "StepEvent",
    "TextDeltas",
    "TorchBackend",
    "UNSET",
    "build_logits_processor",
    "choose_tokens",
    "decode",
    "generate",
    "generation_front",
    "iter_decode",
    "prepare_prompt",
    "prompt_position_ids",
    "resolve_options",
    "run_generation",
    "stream",
    "stream_decode",
]
