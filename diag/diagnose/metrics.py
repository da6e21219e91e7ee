"""What two logits of the same step say about each other: the numbers both diagnosis
tools (:mod:`~diag.diagnose.teacher_forced`, :mod:`~diag.diagnose.divergence`) report.

Example::

    m = step_metrics(torch_logits, onnx_logits, top_k=5)   # [batch] tensors
    m["max_abs_diff"], m["argmax_agree"], m["kl_div"]
"""

from __future__ import annotations

import torch


def max_abs_diff(expected: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    """The largest absolute difference along the last dimension (the vocabulary), in
    float64; a NaN on either side makes it infinite.

    >>> a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    >>> max_abs_diff(a, torch.tensor([[1.5, 2.0], [0.0, float("nan")]])).tolist()
    [0.5, inf]
    """
    diff = (expected.detach().double() - got.detach().double()).abs()
    # a NaN anywhere is a difference, not something max() may hide
    return torch.where(diff.isnan().any(-1), torch.inf, diff.nan_to_num(0).amax(-1))


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Best minus second best logit along the last dimension: how far the model was
    from choosing another token (0 for a one-token vocabulary).

    >>> margin(torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, 0.0]])).tolist()
    [0.5, 4.0]
    """
    top2 = logits.detach().topk(min(2, logits.shape[-1]), dim=-1).values
    return top2[..., 0] - top2[..., -1]


def token_log_prob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability (natural log, float64) of ``tokens`` ``[batch]`` under the
    softmax of ``logits`` ``[batch, vocab]``; ``exp(-mean)`` over a text is its
    perplexity (:func:`perplexity`).

    >>> token_log_prob(torch.tensor([[0.0, 0.0], [0.0, 1e9]]), torch.tensor([1, 0])).tolist()
    [-0.6931471805599453, -1000000000.0]
    """
    log_p = torch.log_softmax(logits.detach().double(), -1)
    return log_p.gather(-1, tokens.long().reshape(-1, 1).to(log_p.device)).reshape(-1)


def perplexity(log_probs: torch.Tensor | list[float]) -> float:
    """``exp(-mean(log_probs))``: the perplexity of a text from the log-probabilities of
    its tokens (:func:`token_log_prob`).

    >>> round(perplexity([-0.6931471805599453] * 3), 6)
    2.0
    """
    values = torch.as_tensor(log_probs, dtype=torch.float64)
    if values.numel() == 0:
        raise ValueError("perplexity of no token: the text needs at least two tokens.")
    return float(torch.exp(-values.mean()))


def step_metrics(
    expected: torch.Tensor, got: torch.Tensor, top_k: int = 5
) -> dict[str, torch.Tensor]:
    """Compares two ``[batch, vocab]`` logits tensors row by row.

    Returns ``[batch]`` tensors: ``max_abs_diff``, ``torch_argmax``, ``onnx_argmax``,
    ``argmax_agree``, ``topk_overlap`` (fraction of the ``top_k`` best tokens of
    ``expected`` that are also among the ``top_k`` best of ``got``), ``kl_div``
    (KL(expected || got) of the softmax distributions, in nats) and ``torch_margin``
    (gap between the best and second best logit of ``expected``).

    >>> a = torch.tensor([[2.0, 1.0, 0.0]])
    >>> m = step_metrics(a, a + torch.tensor([[0.0, 1.5, 0.0]]), top_k=2)
    >>> bool(m["argmax_agree"][0]), float(m["max_abs_diff"][0]), float(m["topk_overlap"][0])
    (False, 1.5, 1.0)
    """
    if expected.shape != got.shape or expected.dim() != 2:
        raise ValueError(
            f"both logits must be [batch, vocab] with the same shape, got {tuple(expected.shape)} "
            f"and {tuple(got.shape)}; do the torch model and the ONNX file have the same vocabulary?"
        )
    a = expected.detach().to(torch.float64)
    b = got.detach().to(torch.float64)
    k = min(top_k, a.shape[-1])
    top_a = a.topk(k, dim=-1).indices
    top_b = b.topk(k, dim=-1).indices
    overlap = (top_a[:, :, None] == top_b[:, None, :]).any(-1).sum(-1).double() / k
    log_pa = torch.log_softmax(a, -1)
    log_pb = torch.log_softmax(b, -1)
    # KL(p || q) = sum p (log p - log q); zero-probability terms of p contribute nothing
    kl = torch.where(log_pa.isinf(), 0.0, log_pa.exp() * (log_pa - log_pb)).sum(-1).clamp(min=0)
    return {
        "max_abs_diff": max_abs_diff(a, b),
        "torch_argmax": top_a[:, 0],
        "onnx_argmax": top_b[:, 0],
        "argmax_agree": top_a[:, 0] == top_b[:, 0],
        "topk_overlap": overlap,
        "kl_div": kl,
        "torch_margin": margin(a),
    }


__all__ = ["margin", "max_abs_diff", "perplexity", "step_metrics", "token_log_prob"]
