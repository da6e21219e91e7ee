"""Teacher forcing: both backends read the same tokens, step by step.

In a free-running generation, the first token on which torch and ONNX disagree changes
every later input, and the two runs stop being comparable. Teacher forcing feeds both
backends the *same* token at every step (the prompt as the prefill, then a fixed
continuation), each backend keeping its own cache, so that every step compares the two
models on identical inputs. A healthy export shows tiny, flat differences; a broken one
shows large differences from the first affected step on, and the table says which
step that is.

Example::

    df = compare_teacher_forced(model, "model.onnx", input_ids, max_new_tokens=20)
    df[["step", "max_abs_diff", "argmax_agree", "top5_overlap", "kl_div"]]
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from diag.diagnose.metrics import step_metrics, token_log_prob
from diag.generation.decoding import check_inputs, check_token_ids, prompt_position_ids
from diag.generation.steps import open_steps


def _forced_tokens(tokens: Any, batch: int, max_new_tokens: int | None) -> torch.Tensor | None:
    if tokens is None:
        return None
    if not isinstance(tokens, torch.Tensor):
        try:
            tokens = torch.tensor(tokens, dtype=torch.long)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"tokens must be a tensor or a list of token ids [steps] or [batch, steps], got {type(tokens).__name__}."
            ) from e
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must hold integer token ids, got dtype {tokens.dtype}.")
    if tokens.dim() == 1:
        tokens = tokens[None, :].expand(batch, -1)
    if tokens.dim() != 2 or tokens.shape[0] != batch:
        raise ValueError(
            f"tokens must be [steps] or [batch={batch}, steps], got shape {tuple(tokens.shape)}."
        )
    if tokens.shape[1] == 0:
        raise ValueError("tokens is empty: give at least one token to force, or tokens=None.")
    if max_new_tokens is not None:
        tokens = tokens[:, :max_new_tokens]
    return tokens.long()


def compare_teacher_forced(
    model: Any,
    onnx_model_or_session: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    tokens: Any = None,
    max_new_tokens: int | None = None,
    *,
    top_k: int = 5,
    tokenizer: Any = None,
    providers: Any = None,
) -> pd.DataFrame:
    """Feeds the same tokens to the torch model and the ONNX model, one step at a time,
    and compares their next-token logits at every step.

    :param model: the transformers causal LM (or a torch StepBackend)
    :param onnx_model_or_session: its export: a path, an ``onnx.ModelProto``, an
        ``onnxruntime.InferenceSession`` or an :class:`~diag.ort.backend.OrtBackend`;
        a folder or file another tool wrote (onnxruntime-genai's builder,
        transformers' exporter...: the layouts :mod:`diag.contract.detect` knows)
    :param input_ids: the prompt ``[batch, seq]`` (left-padded for batches)
    :param attention_mask: ``[batch, seq]``, 0 on the padding; all ones when None
    :param tokens: the continuation to force, ``[steps]`` or ``[batch, steps]``; None
        forces torch's own greedy continuation (at each step, the token torch's logits
        rank first)
    :param max_new_tokens: number of steps (default: the length of ``tokens``, or 20)
    :param top_k: size of the top-k sets compared
    :param tokenizer: when given, adds the text of the forced token (column ``text``)
    :param providers: ONNX Runtime providers when a path / ModelProto is given
    :return: a DataFrame with one row per step and batch row: ``step`` (0 = the
        prefill's logits), ``batch``, ``position`` (position of the predicted token),
        ``token`` (the token fed after this step), ``torch_argmax``, ``onnx_argmax``,
        ``argmax_agree``, ``max_abs_diff``, ``top{k}_overlap`` (fraction in [0, 1]),
        ``kl_div`` (KL(torch || onnx), nats), ``torch_margin`` (top-1 minus top-2 logit
        of torch), ``torch_logprob`` / ``onnx_logprob`` (log-probability of ``token``
        on each side: a perplexity); ``df.attrs`` holds ``top_k`` and ``prompt_length``

    Step ``i`` compares the logits predicting the ``i``-th new token, both models
    having read the prompt and the forced tokens ``0 .. i-1``.

    Example::

        df = compare_teacher_forced(model, "model.onnx", ids, max_new_tokens=10)
        df["max_abs_diff"].max(), df["argmax_agree"].all()
    """
    if max_new_tokens is not None and (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
    input_ids, attention_mask = check_inputs(input_ids, attention_mask)
    batch, prompt_length = input_ids.shape
    forced = _forced_tokens(tokens, batch, max_new_tokens)
    n_steps = forced.shape[1] if forced is not None else (max_new_tokens or 20)
    torch_backend = open_steps(model).backend
    ort_backend = open_steps(
        onnx_model_or_session, providers=providers, what="onnx_model_or_session"
    ).backend
    # checked once the backends say their vocabulary (the smaller one: both read the ids)
    sizes = [getattr(b, "vocab_size", None) for b in (torch_backend, ort_backend)]
    vocab_size = min((v for v in sizes if v is not None), default=None)
    check_token_ids(input_ids, vocab_size)
    if forced is not None:
        check_token_ids(forced, vocab_size, what="tokens")

    mask = attention_mask
    position_ids = prompt_position_ids(mask)
    next_ids = input_ids
    overlap_col = f"top{top_k}_overlap"
    rows: list[dict[str, Any]] = []
    for step in range(n_steps):
        # each backend keeps its own cache; both read exactly the same ids
        if step == 0:
            t_logits, torch_past = torch_backend.prefill(next_ids, mask, position_ids)
            o_logits, ort_past = ort_backend.prefill(next_ids, mask, position_ids)
        else:
            t_logits, torch_past = torch_backend.decode(next_ids, mask, position_ids, torch_past)
            o_logits, ort_past = ort_backend.decode(next_ids, mask, position_ids, ort_past)
        m = step_metrics(t_logits, o_logits, top_k=top_k)
        fed = forced[:, step] if forced is not None else m["torch_argmax"]
        log_probs = (token_log_prob(t_logits, fed), token_log_prob(o_logits, fed))
        texts = tokenizer.batch_decode(fed[:, None].tolist()) if tokenizer is not None else None
        for row in range(batch):
            record = {
                "step": step,
                "batch": row,
                "position": int(position_ids[row, -1]) + 1,
                "token": int(fed[row]),
            }
            if texts is not None:
                record["text"] = texts[row]
            record.update(
                torch_argmax=int(m["torch_argmax"][row]),
                onnx_argmax=int(m["onnx_argmax"][row]),
                argmax_agree=bool(m["argmax_agree"][row]),
                max_abs_diff=float(m["max_abs_diff"][row]),
                **{overlap_col: float(m["topk_overlap"][row])},
                kl_div=float(m["kl_div"][row]),
                torch_margin=float(m["torch_margin"][row]),
                torch_logprob=float(log_probs[0][row]),
                onnx_logprob=float(log_probs[1][row]),
            )
            rows.append(record)
        next_ids = fed[:, None]
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        position_ids = position_ids[:, -1:] + 1
    df = pd.DataFrame(rows)
    df.attrs.update(top_k=top_k, prompt_length=prompt_length)
    return df


__all__ = ["compare_teacher_forced"]
