"""The parts of transformers' API that differ between the releases diag supports.

diag supports transformers 4.57.6 (the last 4.x) to the newest 5.x. What moved in
that range, and how it is found (by introspection, never by comparing versions where
the installed code can tell):

* the forward's key/value cache argument: ``past_key_values`` up to 5.23,
  ``cache`` from 5.24 on (``past_key_values`` stays a deprecated alias that warns):
  :func:`cache_argument`, read from ``inspect.signature(model.forward)``;
* the output field holding the cache after the step: ``past_key_values`` up to
  5.23, ``cache`` from 5.24 on (the old attribute warns): :func:`output_cache`, read
  from the output's dataclass fields;
* the global generation defaults (``top_k=50``, ``max_length=20``...): listed by
  ``GenerationConfig._get_default_generation_params`` from 5.0 on, the attributes of
  a fresh ``GenerationConfig()`` before: :func:`generation_global_defaults`, and the
  ``max_length`` that ``model.generate`` reads as "not set": :func:`unset_max_length`.

The ONNX names of the export contract (``past_key_values.{i}.key``,
``present.{i}.key``) do not change with these: they are the names other tools use.

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> cache_argument(model) in CACHE_ARGUMENTS
    True
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

#: the names a causal LM's forward has taken its key/value cache under, newest first
CACHE_ARGUMENTS: tuple[str, ...] = ("cache", "past_key_values")

#: the fields of a model output that have held the cache after the step, newest first
OUTPUT_CACHE_FIELDS: tuple[str, ...] = ("cache", "past_key_values")


def _forward_of(model_or_forward: Any) -> Callable[..., Any]:
    forward = getattr(model_or_forward, "forward", model_or_forward)
    if not callable(forward):
        raise TypeError(
            f"expected a model (with a forward) or its forward, got {type(model_or_forward).__name__}"
        )
    return forward


def forward_parameters(model_or_forward: Any) -> set[str]:
    """The names of the parameters of ``model.forward`` (``self`` excluded)."""
    params = inspect.signature(_forward_of(model_or_forward)).parameters
    return {name for name in params if name != "self"}


def cache_argument(model_or_forward: Any) -> str | None:
    """The name under which ``model.forward`` takes its key/value cache in the installed
    transformers (``"cache"`` from 5.24 on, ``"past_key_values"`` before), or None when
    the forward takes no cache.

    Only the newest name is returned when both exist (5.24 keeps ``past_key_values``
    as a deprecated alias in ``**kwargs``, not in the signature).
    """
    params = forward_parameters(model_or_forward)
    for name in CACHE_ARGUMENTS:
        if name in params:
            return name
    return None


def require_cache_argument(model: Any, what: str) -> str:
    """:func:`cache_argument`, or a TypeError saying that ``what`` needs a model whose
    forward takes a key/value cache."""
    name = cache_argument(model)
    if name is None:
        raise TypeError(
            f"{type(model).__name__}.forward takes no key/value cache (none of the "
            f"arguments {', '.join(CACHE_ARGUMENTS)}): {what} works on decoder-only causal "
            "LMs with a cache (AutoModelForCausalLM)."
        )
    return name


def output_cache(output: Any) -> Any:
    """The cache a forward returned (``output.cache`` from 5.24 on,
    ``output.past_key_values`` before), read without touching a deprecated alias;
    None when the output holds none."""
    fields = getattr(output, "__dataclass_fields__", None)
    for name in OUTPUT_CACHE_FIELDS:
        if fields is not None and name not in fields:
            continue
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


__all__ = [
    "CACHE_ARGUMENTS",
    "OUTPUT_CACHE_FIELDS",
    "cache_argument",
    "forward_parameters",
    "output_cache",
    "require_cache_argument",
]


def generation_global_defaults() -> dict[str, Any]:
    """transformers' global generation defaults, what ``model.generate`` takes for an
    option that neither the call nor the model sets (``top_k=50``, ``max_length=20``...).

    From 5.0 on they are ``GenerationConfig._get_default_generation_params()`` (a fresh
    config holds None and generate applies them); before, the attributes of a fresh
    ``GenerationConfig()``.
    """
    from transformers import GenerationConfig

    getter = getattr(GenerationConfig, "_get_default_generation_params", None)
    if getter is not None:
        return dict(getter())
    return GenerationConfig().to_dict()


@functools.cache
def unset_max_length() -> int | None:
    """The ``max_length`` of a configuration that ``model.generate`` reads as "not set",
    then generating 20 new tokens after the prompt: that of a fresh ``GenerationConfig()``.

    Up to 4.x every configuration holds ``max_length=20`` and 20 means "not set"; from
    5.0 on a fresh one holds None, and a configuration's 20 counts the prompt.
    """
    from transformers import GenerationConfig

    return GenerationConfig().max_length
