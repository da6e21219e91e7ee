"""A GGUF model turned into a Hugging Face folder: transformers dequantises it to
float32 and builds the tokenizer with its chat template."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantises a GGUF model to float32 and saves it, with its tokenizer, as a
    Hugging Face folder in ``out_dir``."""
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a model loaded through a quantizer; the weights are plain
    # float32 tensors by now, so dropping the quantizer state makes it a normal model
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


__all__ = ["convert_gguf"]
