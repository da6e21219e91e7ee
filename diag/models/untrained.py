"""Tiny untrained causal LMs built from configs kept in the package (no hub needed).

Each architecture has a JSON config in ``diag/models/configs/<arch>.json``: 2 layers,
hidden size 128 (64 for gpt2 and gpt_neox), 8 attention heads over 4 key/value heads
where the architecture supports grouped-query attention (4 heads for gpt2, gpt_neox
and deepseek_v3), head size 16, a vocabulary of 49152 tokens (the size of SmolLM2's
tokenizer, so a tiny model can be paired with it) and 512 positions. ``bos=1``,
``eos=2``, ``pad=2`` like SmolLM2.

Three architectures cache other heads or head sizes than their config's attributes
say, which is why diag reads the cache's shapes from the model
(:func:`diag.models.cache_layout.cache_layout`):

* ``falcon`` (``multi_query=True``): one key/value head for its 8 query heads, while
  ``config.num_kv_heads`` says 8;
* ``deepseek_v3`` (multi-head latent attention): keys of 32 values (the compressed
  latent of ``kv_lora_rank=32`` and one head from transformers 5, ``qk_nope + qk_rope``
  per head in 4.57) and values of 16, while ``config.head_dim`` says 16;
* ``gpt_neox``: no key/value head attribute at all, every head cached.

The weights are random but deterministic (seeded). Their scale is raised above the
usual ``initializer_range=0.02`` (0.1, 0.2 for qwen3_moe and 0.3 for gpt2) so that greedy decoding picks
varied tokens with clear margins between the top logits: with the default scale some
seeds repeat one or a few tokens (gpt2 always does), and a model repeating one token
would make every parity test between two runtimes pass trivially. With these scales
30 greedy tokens hold 22 to 30 distinct ones over the seeds 0-5 for every architecture.

The mixture-of-experts architectures (qwen2_moe, qwen3_moe, olmoe, gpt_oss, granitemoe,
phimoe) have 4 experts of 32 (qwen2_moe adds a shared expert of 64), 2 chosen per
token, so that a batch of a few tokens routes to every expert.

gemma2 alternates a sliding-window layer and a full-attention layer; its window (512)
covers every position, so its sliding cache layer never drops tokens in the lengths
used here but still has the sliding layer class.

Variants (:data:`TINY_VARIANTS`) override a few fields of an architecture's config:
``mistral-sw8`` (every layer slides over 8 positions: mistral applies
``sliding_window`` to all its layers) and ``gemma2-sw8`` (window 8 on its sliding
layer), so that short tests go past the window and the sliding cache drops tokens.
They are not in :func:`list_tiny_models` (the suite runs every architecture of it).

Example::

    >>> from diag.models import get_untrained_model_with_inputs
    >>> data = get_untrained_model_with_inputs("llama")
    >>> from diag.compat.transformers_api import output_cache
    >>> out = data["model"](**data["inputs"])
    >>> tuple(out.logits.shape), output_cache(out).get_seq_length()
    ((2, 3, 49152), 8)
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from diag.compat.transformers_api import PreTrainedConfig
from diag.models.inputs import make_dummy_inputs

_CONFIG_PACKAGE = "diag.models.configs"

# name -> (architecture, fields overriding its config)
TINY_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mistral-sw8": ("mistral", {"sliding_window": 8}),
    "gemma2-sw8": ("gemma2", {"sliding_window": 8}),
}


def list_tiny_models() -> list[str]:
    """Names of the architectures of the tiny model zoo.

    >>> "llama" in list_tiny_models()
    True
    """
    folder = resources.files(_CONFIG_PACKAGE)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def get_tiny_config(name: str) -> PreTrainedConfig:
    """Returns the config of the tiny model ``name`` (a fresh object each call).

    ``name`` may also be a variant of :data:`TINY_VARIANTS`:

    >>> get_tiny_config("qwen2").num_hidden_layers
    2
    >>> get_tiny_config("mistral-sw8").sliding_window
    8
    """
    known = list_tiny_models()
    overrides: dict[str, Any] = {}
    if isinstance(name, str) and name in TINY_VARIANTS:
        name, overrides = TINY_VARIANTS[name]
    if not isinstance(name, str) or name not in known:
        raise ValueError(
            f"Unknown tiny model {name!r}; known architectures: {', '.join(known)}, "
            f"variants: {', '.join(TINY_VARIANTS)}. Use load_pretrained(...) for a real model."
        )
    text = resources.files(_CONFIG_PACKAGE).joinpath(f"{name}.json").read_text(encoding="utf-8")
    kwargs = {**json.loads(text), **overrides}
    model_type = kwargs.pop("model_type")
    return AutoConfig.for_model(model_type, **kwargs)


def weight_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """The floating torch dtype of weights given as a dtype or by transformers' name.

    >>> weight_dtype("bfloat16")
    torch.bfloat16
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"dtype={dtype!r}: give a floating torch.dtype for the weights "
            "(torch.float32, torch.float16 or torch.bfloat16)."
        )
    return dtype


def make_untrained_model(
    config: PreTrainedConfig, dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.nn.Module:
    """Builds a model with random weights from ``config``, deterministic for a seed,
    without touching the caller's global random state, in eval mode.

    >>> m = make_untrained_model(get_tiny_config("gpt2"))
    >>> type(m).__name__, m.training
    ('GPT2LMHeadModel', False)
    """
    dtype = weight_dtype(dtype)
    # fork_rng: the model init draws from the global RNG; restore it afterwards so that
    # building a model does not change what the caller's next random call returns
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def get_untrained_model_with_inputs(
    name: str,
    batch: int = 2,
    seq: int = 3,
    past: int = 5,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, Any]:
    """Returns a tiny untrained model of architecture ``name`` with dummy inputs.

    :param name: an architecture of :func:`list_tiny_models` (``"llama"``, ``"qwen2"``...)
    :param batch: batch size of the dummy inputs
    :param seq: number of new tokens of the dummy inputs
    :param past: length of the dummy key/value cache
    :param dtype: dtype of the weights and of the cache
    :param seed: seed of the weights and of the dummy inputs
    :return: a dict with ``model`` (eval mode), ``inputs`` (``input_ids``,
        ``attention_mask``, ``position_ids`` and, under the forward's cache argument
        (``cache`` from transformers 5.24 on, ``past_key_values`` before), a non-empty
        :class:`transformers.DynamicCache`), ``dynamic_shapes`` (see
        :func:`diag.models.make_dummy_inputs`), ``config`` and ``name``

    A forward pass appends to the cache it is given (transformers updates a
    :class:`~transformers.DynamicCache` in place): pass ``copy.deepcopy(inputs)`` to
    run the model more than once on the same inputs.

    >>> data = get_untrained_model_with_inputs("qwen3")
    >>> sorted(data)
    ['config', 'dynamic_shapes', 'inputs', 'model', 'name']
    """
    config = get_tiny_config(name)
    dtype = weight_dtype(dtype)
    model = make_untrained_model(config, dtype=dtype, seed=seed)
    inputs, dynamic_shapes = make_dummy_inputs(
        model, batch=batch, seq=seq, past=past, dtype=dtype, seed=seed
    )
    return {
        "model": model,
        "inputs": inputs,
        "dynamic_shapes": dynamic_shapes,
        "config": model.config,
        "name": name,
    }


__all__ = [
    "TINY_VARIANTS",
    "get_tiny_config",
    "get_untrained_model_with_inputs",
    "list_tiny_models",
    "make_untrained_model",
    "weight_dtype",
]
