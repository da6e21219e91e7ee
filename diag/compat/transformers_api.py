"""The parts of transformers' API that differ between the releases diag supports.

diag supports transformers 4.57.6 (the last 4.x) to the newest 5.x. What moved in
that range, and how it is found (by introspection, never by comparing versions where
the installed code can tell). "4.57" below was checked on 4.57.6, "5.x" on 5.23.0,
5.24.0 and 5.25.0:

* the forward's key/value cache argument: ``past_key_values`` up to 5.23,
  ``cache`` from 5.24 on (``past_key_values`` stays an alias until 5.40 that raises a
  ``FutureWarning``): :func:`cache_argument`, read from
  ``inspect.signature(model.forward)``;
* the output field holding the cache after the step: ``past_key_values`` up to
  5.23, ``cache`` from 5.24 on (``output.past_key_values``, ``output["past_key_values"]``,
  ``"past_key_values" in output`` and building an output with that name still work,
  each logging a deprecation through transformers' logger): :func:`output_cache` and
  :func:`output_cache_field`, read from the output's dataclass fields;
* the key of the cache in a dict of forward inputs (what :func:`diag.models.make_dummy_inputs`,
  :func:`diag.export.check.validation_inputs.make_step_inputs` and :func:`diag.diagnose.localize_layer`
  build or take): the forward's cache argument (builders take the model), readers
  accept either name (:func:`cache_input`);
* the config base class: ``PretrainedConfig`` up to 4.57, ``PreTrainedConfig`` from
  5.0 on (the old name stays an alias, without a warning up to 5.25):
  :data:`PreTrainedConfig`, whichever the installed module has, by ``hasattr``;
* the tokenizer class a saved folder names: 5.x saves ``"tokenizer_class":
  "TokenizersBackend"`` (its class for a ``tokenizer.json``), which 4.57 does not
  have (it calls the same backend ``PreTrainedTokenizerFast``): :func:`load_tokenizer`
  checks ``hasattr(transformers, name)`` and loads such a folder with the installed
  class for ``tokenizer.json``, so that one model cache serves every release;
* the rotary settings of a saved config: 5.x writes ``rope_parameters``, 4.57 reads
  ``rope_theta`` / ``rope_scaling`` and ignores the former (a folder converted by 5.x
  then loads with the default ``rope_theta``): :func:`load_config` copies them over
  where the config class takes no ``rope_parameters``, by its ``__init__``'s signature;
* the progress bar of ``from_pretrained``: 5.x shows a ``Loading weights`` bar for
  every checkpoint (from its module ``transformers.core_model_loading``), 4.57 only
  ``Loading checkpoint shards`` for sharded ones: :func:`shows_loading_weights_bar`,
  by whether that module exists;
* the defaults of ``GenerationConfig``: 5.x leaves every field None and keeps the
  defaults in ``GenerationConfig._get_default_generation_params()``, 4.57 stores them
  as the values of a fresh config (so ``max_length=20`` there means "unset", 20 new
  tokens): :func:`generation_defaults` and :func:`generation_config_values`, by
  ``hasattr``;
* ``RepetitionPenaltyLogitsProcessor(prompt_ignore_length=...)``: 5.x's generate
  passes the left-padding length of every row (a tensor), 4.57's takes an int only and
  its generate passes nothing: :func:`repetition_penalty_ignores_padding`, by
  building one with a tensor;
* ``DynamicCache(config=...)``: the config decides the layer classes (sliding
  window...) in every supported release; :func:`new_dynamic_cache` checks the
  constructor's signature and falls back to a plain cache where it has none;
* the attributes of the cache layers: 5.x static layers count their filled positions
  in a ``cumulative_length`` tensor (4.57: none on the full layer, an int on the
  sliding one), 5.x sliding layers also hold ``_sliding_window_tensor`` (4.57: no);
  :mod:`diag.export.make.cache_pytree` records per layer which of these it has and rebuilds
  only those (``vars(layer)``), and the tests check them only where they exist;
* the cache layers' methods: ``DynamicLayer.update(key, value, cache_kwargs=None)`` and
  ``get_mask_sizes(cache_position)`` in 4.57, ``update(key, value, *args, **kwargs)``
  and ``get_mask_sizes(query_length)`` in 5.x. diag never calls them itself; the export
  patch ``sliding_layer_traced_as_full`` swaps a sliding layer's methods for the full
  layer's only when both have the same parameters (:func:`same_parameters`);
* ``transformers.integrations.sdpa_attention.use_gqa_in_sdpa``: ``(attention_mask,
  key)`` in 4.57, ``(attention_mask, key, value)`` in 5.x; the export patch
  ``sdpa_gqa_without_repeat_kv`` builds its replacement for the original's parameters
  (:func:`parameter_names`);
* ``transformers.exporters`` (5.23 on): its exporter registers every ``Cache`` subclass
  as a pytree node with its own generic flattening (the layers' attributes as leaves),
  for the rest of the process; diag's export needs its own flattening of the same
  classes (:mod:`diag.export.make.cache_pytree`) and swaps the registration for the time of
  its export: :func:`registered_by_transformers_exporter` tells such a registration by
  the module of its flatten function.

The ONNX names of the export contract (``past_key_values.{i}.key``,
``present.{i}.key``) do not change with these: they are the names other tools use.

Every difference of transformers' API between releases goes through this module, a
short function per difference, so that a new release is read in one place.

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> model = get_untrained_model_with_inputs("llama")["model"]
    >>> cache_argument(model) in CACHE_ARGUMENTS
    True
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import transformers

#: the base class of configs: ``PreTrainedConfig`` from 5.0 on, ``PretrainedConfig`` in 4.x
PreTrainedConfig: type = (
    getattr(transformers, "PreTrainedConfig", None) or transformers.PretrainedConfig
)

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


def output_cache_field(output_or_class: Any) -> str | None:
    """The field of a model output (or output class) that holds the cache: ``"cache"``
    from 5.24 on, ``"past_key_values"`` before, None when it has none; to build an
    output (``CausalLMOutputWithPast(**{output_cache_field(cls): cache})``) without the
    deprecated name, which 5.24 maps with a logged warning.

    >>> from transformers.modeling_outputs import CausalLMOutputWithPast
    >>> output_cache_field(CausalLMOutputWithPast) in OUTPUT_CACHE_FIELDS
    True
    """
    fields = getattr(output_or_class, "__dataclass_fields__", None) or {}
    for name in OUTPUT_CACHE_FIELDS:
        if name in fields:
            return name
    return None


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


def cache_input_name(inputs: Mapping[str, Any]) -> str | None:
    """The key holding the cache in a dict of forward inputs, whichever of
    :data:`CACHE_ARGUMENTS` it uses (None when there is none); a ValueError when it
    uses both, which a forward would reject too.

    >>> cache_input_name({"input_ids": 0, "past_key_values": 1}), cache_input_name({})
    ('past_key_values', None)
    """
    found = [name for name in CACHE_ARGUMENTS if name in inputs]
    if len(found) > 1:
        raise ValueError(
            f"the inputs hold a cache under both {' and '.join(found)}: give it once, under "
            f"the name the model's forward takes (cache_argument(model))."
        )
    return found[0] if found else None


def cache_input(inputs: Mapping[str, Any]) -> Any:
    """The cache in a dict of forward inputs (under either name, see
    :func:`cache_input_name`), or None.

    >>> cache_input({"cache": "c"}), cache_input({"input_ids": 0})
    ('c', None)
    """
    name = cache_input_name(inputs)
    return None if name is None else inputs[name]


def parameter_names(function: Callable[..., Any]) -> list[str]:
    """The names of the named parameters of ``function`` in order (``self`` excluded,
    ``*args`` / ``**kwargs`` excluded), e.g. to build a replacement that takes what the
    installed release passes to the original.

    >>> parameter_names(lambda attention_mask, key, *args, **kwargs: None)
    ['attention_mask', 'key']
    """
    named = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if name != "self" and p.kind not in named
    ]


def same_parameters(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Whether two functions take the same parameters (names, kinds, defaults), so
    that one can stand in for the other.

    >>> same_parameters(lambda x, y=1: 0, lambda x, y=1: 1), same_parameters(lambda x: 0, lambda y: 0)
    (True, False)
    """

    def shape(f: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    return shape(a) == shape(b)


def new_dynamic_cache(config: Any = None) -> Any:
    """An empty :class:`transformers.DynamicCache` laid out for ``config`` (its text
    decoder's config): sliding-window and hybrid layers as the model would build them,
    where the installed constructor takes a config.

    >>> from transformers import AutoConfig
    >>> type(new_dynamic_cache(AutoConfig.for_model("llama"))).__name__
    'DynamicCache'
    """
    from transformers import DynamicCache

    if config is None or "config" not in inspect.signature(DynamicCache.__init__).parameters:
        return DynamicCache()
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    return DynamicCache(config=config)


def generation_defaults() -> dict[str, Any]:
    """The values ``model.generate`` uses for what nobody set (``max_length=20``,
    ``do_sample=False``, ...).

    >>> generation_defaults()["max_length"]
    20
    """
    from transformers import GenerationConfig

    getter = getattr(GenerationConfig, "_get_default_generation_params", None)
    if getter is not None:
        return dict(getter())
    # 4.57: the defaults are the attribute values of a fresh config
    return GenerationConfig().to_dict()


def generation_config_values(config: Any) -> dict[str, Any]:
    """The fields of a ``GenerationConfig`` that were set (the model's or the user's):
    every non-None value in 5.x, whose unset fields are None; in 4.57, where a fresh
    config holds the defaults as values, the values that differ from them
    (``to_diff_dict``), as its generate treats ``max_length=20`` as unset.

    >>> from transformers import GenerationConfig
    >>> generation_config_values(GenerationConfig(eos_token_id=2, max_length=20))["eos_token_id"]
    2
    """
    from transformers import GenerationConfig

    if hasattr(GenerationConfig, "_get_default_generation_params"):
        values = config.to_dict()
    else:
        values = config.to_diff_dict()
    return {k: v for k, v in values.items() if v is not None}


_REPETITION_IGNORES_PADDING: list[bool] = []


def repetition_penalty_ignores_padding() -> bool:
    """Whether ``RepetitionPenaltyLogitsProcessor`` takes the per-row left-padding
    lengths (5.x, whose generate passes them so that padding tokens are not penalised);
    4.57 takes an int only and its generate passes nothing.

    >>> isinstance(repetition_penalty_ignores_padding(), bool)
    True
    """
    if not _REPETITION_IGNORES_PADDING:
        import torch
        from transformers import RepetitionPenaltyLogitsProcessor

        try:
            RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=torch.tensor([0, 1]))
            takes = True
        except (TypeError, ValueError):
            takes = False
        _REPETITION_IGNORES_PADDING.append(takes)
    return _REPETITION_IGNORES_PADDING[0]


def shows_loading_weights_bar() -> bool:
    """Whether ``from_pretrained`` shows a ``Loading weights`` progress bar for a
    one-file checkpoint (5.x, its ``core_model_loading`` module), which
    :func:`diag.load_pretrained` hides with ``progress=False``; 4.57 shows none.

    >>> isinstance(shows_loading_weights_bar(), bool)
    True
    """
    return importlib.util.find_spec("transformers.core_model_loading") is not None


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """``AutoTokenizer.from_pretrained(folder)``, also for a folder saved by another
    release whose tokenizer class the installed transformers lacks (a folder written
    by 5.x names ``TokenizersBackend``, 4.57 loads its ``tokenizer.json`` with
    ``PreTrainedTokenizerFast``).

    Example::

        tokenizer = load_tokenizer("~/.cache/diag/models/smollm2-135m-instruct")
    """
    from transformers import AutoTokenizer

    folder = os.fspath(folder)
    saved_class = None
    config_file = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            saved_class = json.load(f).get("tokenizer_class")
    has_json = os.path.isfile(os.path.join(folder, "tokenizer.json"))
    if saved_class is None or hasattr(transformers, saved_class) or not has_json:
        return AutoTokenizer.from_pretrained(folder)
    # the class mismatch is what this call is for: its logged warning says nothing new
    logger = logging.getLogger("transformers.tokenization_utils_base")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        # the inputs 5.x's class gives (4.x's fast tokenizer adds token_type_ids, which
        # a causal LM's generate rejects)
        return transformers.PreTrainedTokenizerFast.from_pretrained(
            folder, model_input_names=["input_ids", "attention_mask"]
        )
    finally:
        logger.setLevel(level)


def load_config(folder: str | os.PathLike) -> Any:
    """``AutoConfig.from_pretrained(folder)``, also for a folder saved by another
    release: 5.x writes the rotary settings as ``"rope_parameters": {"rope_theta": ...,
    "rope_type": ...}``, which 4.57 does not read (its configs take ``rope_theta`` and
    ``rope_scaling``, and would silently fall back to their default ``rope_theta``,
    10000 instead of SmolLM2's 100000: another model). Where the loaded config has no
    ``rope_parameters`` parameter (its class's ``__init__`` takes none: unknown keys
    become plain attributes, so ``hasattr`` cannot tell), the saved ones are copied into
    the names it reads.

    Example::

        config = load_config("~/.cache/diag/models/smollm2-135m-instruct")
    """
    from transformers import AutoConfig

    folder = os.fspath(folder)
    config = AutoConfig.from_pretrained(folder)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        saved = json.load(f).get("rope_parameters")
    if not isinstance(saved, dict) or "rope_parameters" in parameter_names(type(config).__init__):
        return config
    if "rope_theta" in saved:
        config.rope_theta = saved["rope_theta"]
    if saved.get("rope_type", "default") != "default":
        config.rope_scaling = {k: v for k, v in saved.items() if k != "rope_theta"}
    return config


def registered_by_transformers_exporter(flatten_fn: Callable[..., Any]) -> bool:
    """Whether a pytree node's flatten function is one of transformers' own exporter
    (``transformers.exporters``, 5.23 on), which registers the cache classes for the
    rest of the process. Read from the function's module, so that it holds whatever the
    exporter calls its functions; a release without that package registers nothing.

    >>> registered_by_transformers_exporter(len)
    False
    """
    module = getattr(flatten_fn, "__module__", None) or ""
    return module == "transformers.exporters" or module.startswith("transformers.exporters.")


__all__ = [
    "CACHE_ARGUMENTS",
    "OUTPUT_CACHE_FIELDS",
    "PreTrainedConfig",
    "cache_argument",
    "cache_input",
    "cache_input_name",
    "forward_parameters",
    "generation_config_values",
    "generation_defaults",
    "load_config",
    "load_tokenizer",
    "new_dynamic_cache",
    "output_cache",
    "output_cache_field",
    "parameter_names",
    "registered_by_transformers_exporter",
    "repetition_penalty_ignores_padding",
    "require_cache_argument",
    "same_parameters",
    "shows_loading_weights_bar",
]

