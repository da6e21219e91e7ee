"""Decoding options: transformers' ``GenerationConfig`` names, resolved the way
``model.generate`` resolves them, then checked.

``model.generate`` builds its configuration in layers: the keyword arguments win, then
the ``generation_config`` argument, then the model's own ``generation_config`` (its
``generation_config.json``), then transformers' global defaults (``top_k=50``,
``max_length=20``, ...). :func:`resolve_options` applies the same layers so that
``diag.generate(model, ids, max_new_tokens=N)`` chooses the tokens
``model.generate(ids, max_new_tokens=N)`` chooses.

A keyword left to :data:`UNSET` is not given; any other value, ``None`` included, is
given and means what it means to ``model.generate``, which sets the keywords it gets
on its configuration, ``None`` too: ``top_k=None`` disables top-k (where leaving it
unset samples with transformers' ``top_k=50``), ``eos_token_id=None`` generates past
the model's eos, ``max_new_tokens=None`` falls back on ``max_length``,
``pad_token_id=None`` on the first eos; ``num_return_sequences``, ``num_beams`` and
``max_length`` (without ``max_new_tokens``) reject ``None``, here with a clear error.

Example::

    opts = resolve_options(model.generation_config, max_new_tokens=20, do_sample=True)
    opts.top_k  # 50, transformers' default when sampling
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig

from diag.compat.transformers_api import generation_config_values, generation_defaults


class _Unset(enum.Enum):
    """``UNSET``, the default of every decoding keyword of :func:`diag.generate`,
    :func:`diag.onnx_generate` and :func:`~diag.generation.resolve_options`: "not
    given", the value then comes from ``generation_config``, the model's generation
    config or transformers' defaults. ``None`` is a value like any other, taken as
    ``model.generate`` takes it.

    Example::

        diag.generate(model, ids, top_k=diag.generation.UNSET)  # same as leaving top_k out
    """

    # an enum member: one object, kept by copy, deepcopy and pickle, so `is UNSET` holds
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    __str__ = __repr__


#: "not given" (see :class:`_Unset`); typed ``Any`` so that the annotation of a
#: parameter defaulting to it says which values a caller passes
UNSET: Any = _Unset.UNSET


@dataclass
class DecodingOptions:
    """What the decoding loop needs to know, named as in ``GenerationConfig``.

    The values are resolved (:func:`resolve_options` turns keywords into them): the
    defaults are transformers' global defaults, and ``None`` means what it means to
    ``model.generate``: the processor it configures is off (``top_k``, ``temperature``,
    ``repetition_penalty``, ``min_new_tokens``...), ``do_sample=None`` is greedy,
    ``eos_token_id=None`` has no eos. ``max_new_tokens`` wins over ``max_length``
    (prompt + new tokens, like transformers); with both None, 20 new tokens.
    ``eos_token_id`` may be an int or a list of ints. When ``pad_token_id`` is None and
    an eos is known, the first eos pads finished rows, as in transformers.

    Example::

        DecodingOptions(max_new_tokens=50, do_sample=True, top_p=0.9, temperature=0.7)
    """

    max_new_tokens: int | None = None
    max_length: int | None = None
    min_new_tokens: int | None = None
    min_length: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    do_sample: bool | None = False
    temperature: float | None = 1.0
    top_k: int | None = 50
    top_p: float | None = 1.0
    min_p: float | None = None
    typical_p: float | None = 1.0
    epsilon_cutoff: float | None = 0.0
    eta_cutoff: float | None = 0.0
    repetition_penalty: float | None = 1.0
    no_repeat_ngram_size: int | None = 0
    num_return_sequences: int = 1
    #: beam search (:mod:`diag.generation.beam_search`) when > 1
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    output_scores: bool | None = False
    output_logits: bool | None = False
    #: the fields the caller did not set by keyword (they came from a configuration or
    #: from transformers' defaults): kept to explain what came from where
    defaults_used: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        unset = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is UNSET]
        if unset:
            raise TypeError(
                f"DecodingOptions holds resolved values, not UNSET ({unset}); build it with "
                "resolve_options(...), which replaces UNSET by the default, or leave the "
                "field out."
            )

    def given(self) -> dict[str, Any]:
        """The options set by keyword, with their values: what to pass to another
        generate function (``model.generate``...) so that it takes the others from its
        own defaults, as this one did.

        >>> resolve_options({"top_k": 7}, max_new_tokens=5, do_sample=True).given()
        {'max_new_tokens': 5, 'do_sample': True}
        """
        return {name: getattr(self, name) for name in _FIELDS if name not in self.defaults_used}

    @property
    def eos_token_ids(self) -> list[int]:
        """The eos ids as a list (empty when there is none)."""
        if self.eos_token_id is None:
            return []
        if isinstance(self.eos_token_id, (list, tuple)):
            return [int(i) for i in self.eos_token_id]
        if isinstance(self.eos_token_id, torch.Tensor):
            return [int(i) for i in self.eos_token_id.reshape(-1).tolist()]
        return [int(self.eos_token_id)]

    @property
    def effective_pad_token_id(self) -> int | None:
        """``pad_token_id``, else the first eos (transformers' rule), else None."""
        if self.pad_token_id is not None:
            return int(self.pad_token_id)
        eos = self.eos_token_ids
        return eos[0] if eos else None

    def num_new_tokens(self, prompt_length: int) -> int:
        """How many tokens to generate after a prompt of ``prompt_length`` tokens."""
        if self.max_new_tokens is not None:
            return int(self.max_new_tokens)
        if self.max_length is not None:
            n = int(self.max_length) - prompt_length
            if n < 0:
                raise ValueError(
                    f"max_length={self.max_length} is shorter than the prompt ({prompt_length} "
                    "tokens); set max_new_tokens instead (it counts only the new tokens)."
                )
            return n
        return 20  # transformers' default (max_length=20 new tokens when unset)

    def validate(self, vocab_size: int | None = None) -> None:
        """Raises ValueError/TypeError with a clear message for any bad value."""
        for name in ("max_new_tokens", "max_length", "min_new_tokens", "min_length"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r}).")
            if value < 0:
                raise ValueError(
                    f"{name} must be >= 0, got {value}; pass a positive number of tokens."
                )
        if not isinstance(self.num_return_sequences, int) or self.num_return_sequences < 1:
            raise ValueError(
                f"num_return_sequences must be an int >= 1, got {self.num_return_sequences!r}."
            )
        self._validate_beams()
        if self.num_return_sequences > 1 and not self.do_sample and self.num_beams == 1:
            # model.generate raises too: greedy would return the same sequence every time
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs do_sample=True or "
                "num_beams >= num_return_sequences: greedy decoding returns the same "
                "sequence every time."
            )
        if self.do_sample:
            if self.temperature is not None and not self.temperature > 0:
                raise ValueError(
                    f"temperature must be > 0 when do_sample=True, got {self.temperature}; "
                    "use do_sample=False for greedy decoding instead of temperature=0."
                )
            if self.top_p is not None and not 0 < self.top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
            if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
                raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {self.top_k!r}.")
            if self.min_p is not None and not 0 <= self.min_p <= 1:
                raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
            if self.typical_p is not None and not 0 < self.typical_p <= 1:
                raise ValueError(f"typical_p must be in (0, 1], got {self.typical_p}.")
        elif self.top_p is not None and not 0 < self.top_p <= 1:
            # meaningless without sampling, but a value out of range is still a mistake
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1.0 means no penalty), got {self.repetition_penalty}."
            )
        eos = self.eos_token_ids
        if vocab_size is not None:
            bad = [i for i in eos if not 0 <= i < vocab_size]
            if bad:
                raise ValueError(
                    f"eos_token_id {bad} is outside the vocabulary [0, {vocab_size}); "
                    "check the tokenizer's eos_token_id or pass the right one."
                )
        pad = self.pad_token_id
        if pad is not None and pad < 0:
            raise ValueError(f"pad_token_id must be >= 0, got {pad}.")

    def _validate_beams(self) -> None:
        """The beam search options: how many hypotheses, how many returned, when to stop."""
        if isinstance(self.num_beams, bool) or not isinstance(self.num_beams, int):
            raise TypeError(f"num_beams must be an int >= 1, not {self.num_beams!r}.")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1 (1: no beam search), got {self.num_beams}.")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} is more than "
                f"num_beams={self.num_beams}: beam search returns its best hypotheses, at "
                "most num_beams of them; raise num_beams or lower num_return_sequences."
            )
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(
                f"early_stopping must be True, False or 'never', got {self.early_stopping!r}."
            )
        penalty = self.length_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)):
            raise TypeError(f"length_penalty must be a float, not {self.length_penalty!r}.")


#: ``GenerationConfig`` attributes the loop does not implement, with their neutral value;
#: a different value raises instead of being silently ignored (None is neutral too,
#: except where :data:`_NONE_REJECTED` says that ``model.generate`` fails on it).
_UNSUPPORTED: dict[str, Any] = {
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "guidance_scale": None,
    "bad_words_ids": None,
    "force_words_ids": None,
    "constraints": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "top_h": None,
    "watermarking_config": None,
    "dola_layers": None,
    "prompt_lookup_num_tokens": None,
    "token_healing": False,
    "stop_strings": None,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
}

#: keywords ``model.generate`` fails on when they are given as None (it compares them
#: with numbers), with the value to pass instead; ``max_length`` fails only when
#: ``max_new_tokens`` is None as well
_NONE_REJECTED: dict[str, Any] = {"num_return_sequences": 1, "num_beams": 1, "max_length": 20}

#: the decoding options, in the order of the dataclass
_FIELDS = tuple(f.name for f in dataclasses.fields(DecodingOptions) if f.name != "defaults_used")


def option_fields() -> tuple[str, ...]:
    """The names of the decoding options (the :class:`DecodingOptions` fields): every
    other list of option names derives from it.

    >>> option_fields()[:3]
    ('max_new_tokens', 'max_length', 'min_new_tokens')
    """
    return _FIELDS


def named_options(scope: dict[str, Any]) -> dict[str, Any]:
    """The decoding options among the names of ``scope`` (a function's ``locals()``):
    the keywords :func:`diag.generate` and :func:`diag.onnx_generate` write out, picked
    by the :class:`DecodingOptions` field names.

    >>> named_options({"model": None, "top_k": 5, "max_new_tokens": UNSET})
    {'max_new_tokens': UNSET, 'top_k': 5}
    """
    return {name: scope[name] for name in _FIELDS if name in scope}


def _as_dict(config: GenerationConfig | dict | None, what: str) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, GenerationConfig):
        return generation_config_values(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(
        f"{what} must be a transformers GenerationConfig or a dict, not {type(config).__name__}."
    )


def _set_values(config: GenerationConfig | dict | None, what: str) -> dict[str, Any]:
    """The values a configuration layer sets: None there means "not set" (transformers
    fills a None attribute of the ``generation_config`` argument from the model's)."""
    # (a GenerationConfig of 4.57 also holds the global defaults as values, max_length=20
    # meaning "not set": generation_config_values keeps only what differs from them)
    return {k: v for k, v in _as_dict(config, what).items() if v is not None}


def resolve_options(
    generation_config: GenerationConfig | dict | None = None,
    defaults: GenerationConfig | dict | None = None,
    **kwargs: Any,
) -> DecodingOptions:
    """Merges the layers the way ``model.generate`` does and returns checked options.

    Priority: ``kwargs`` > ``generation_config`` > ``defaults`` (typically
    ``model.generation_config``) > transformers' global defaults. A keyword set to
    :data:`UNSET` is not given; every other value, None included, wins as it does in
    ``model.generate`` (see the module's docstring). In the two configurations, None
    means "not set".

    >>> opts = resolve_options({"do_sample": True}, GenerationConfig(top_k=7), top_p=0.9)
    >>> opts.do_sample, opts.top_k, opts.top_p
    (True, 7, 0.9)
    >>> print(resolve_options(GenerationConfig(top_k=7), do_sample=True, top_k=None).top_k)
    None
    """
    explicit = {k: v for k, v in kwargs.items() if v is not UNSET}
    unknown = sorted(k for k in explicit if k not in _FIELDS and k not in _UNSUPPORTED)
    if unknown:
        known = GenerationConfig().to_dict()
        not_gen = [k for k in unknown if k not in known]
        if not_gen:
            raise TypeError(
                f"unknown decoding option(s) {not_gen}; use transformers GenerationConfig names "
                f"(supported: {sorted(_FIELDS)})."
            )
    layers = [
        explicit,
        _set_values(generation_config, "generation_config"),
        _set_values(defaults, "defaults"),
    ]
    merged: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            merged.setdefault(k, v)
    # max_length counts only when someone set it; the global default (20) means
    # "20 new tokens", handled by DecodingOptions.num_new_tokens
    for k, v in generation_defaults().items():
        if k != "max_length":
            merged.setdefault(k, v)

    for name, instead in _NONE_REJECTED.items():
        if name in explicit and explicit[name] is None:
            if name == "max_length" and merged.get("max_new_tokens") is not None:
                continue  # max_new_tokens decides the length, max_length is not read
            raise ValueError(
                f"{name}=None is rejected by model.generate too; leave {name} out to take "
                f"the default (generation_config, the model's, transformers'), or pass a "
                f"value such as {instead!r}."
            )

    for name, neutral in _UNSUPPORTED.items():
        value = merged.get(name)
        if value is not None and value != neutral:
            raise ValueError(
                f"{name}={value!r} is not supported by diag's decoding loop (greedy, "
                "multinomial sampling, beam search and beam sampling only); leave it unset "
                f"or use {neutral!r}."
            )
    values = {k: merged[k] for k in _FIELDS if k in merged}
    values["defaults_used"] = tuple(k for k in _FIELDS if k not in explicit)
    return DecodingOptions(**values)
