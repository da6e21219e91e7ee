"""Offline model zoo: tiny untrained models of common architectures with export-ready
dummy inputs, and the real SmolLM2-135M-Instruct fetched from PyPI.

>>> from diag.models import get_untrained_model_with_inputs, list_tiny_models
>>> data = get_untrained_model_with_inputs(list_tiny_models()[0])
>>> from diag.compat.transformers_api import cache_argument
>>> name = cache_argument(data["model"])  # "cache" from transformers 5.24 on, else "past_key_values"
>>> sorted(k for k in data["inputs"] if k != name), type(data["inputs"][name]).__name__
(['attention_mask', 'input_ids', 'position_ids'], 'DynamicCache')
"""

from diag.models.cache_layout import CacheLayout, cache_layout
from diag.models.inputs import make_dummy_inputs
from diag.models.pretrained import load_pretrained
from diag.models.untrained import get_untrained_model_with_inputs, list_tiny_models

__all__ = [
    "CacheLayout",
    "cache_layout",
    "get_untrained_model_with_inputs",
    "list_tiny_models",
    "load_pretrained",
    "make_dummy_inputs",
]
