"""The attention kernels alone: how fast ONNX Runtime's CPU kernels read a long KV cache
at decode and compute a causal prefill, against the memory bandwidth and torch, on
SmolLM2's shapes (30 layers, 9 query heads, 3 key-value heads of 64), in one run.

Why (issue 15). Its targets, a decode at 2048 positions at least 0.85x as fast as at
128 and 1.2x onnxruntime-genai's, and a 1637-token prefill no slower than
``model.generate``'s, depend on what attention costs once the weights are read. This
bench isolates that cost: the whole model's attention (every layer, its own cache, no
weights) as one ONNX graph per kernel, so that what it prints is the kernel, not diag.

Decode (one new token, ``--past`` positions already written, buffers of
``--max-length`` positions, as diag's static export binds them):

* ``ort GroupQueryAttention``: ``com.microsoft.GroupQueryAttention`` on the shared
  past/present buffer (what ``export_causal_lm(cache="static", attention="gqa")`` and
  genai's fp32 build run), reading the ``past + 1`` written positions;
* ``ort Attention (opset 23)``: ONNX's ``Attention`` over the whole buffer, the
  unwritten positions masked (diag's ``cache="static"`` export);
* ``ort MatMul, grouped``: the attention written as two batched ``MatMul`` with the 3
  query heads of a key-value head as the rows of one product (each cache byte read
  once), over the whole buffer, the unwritten positions masked;
* ``torch matmul, grouped``: the same products in torch, over the written positions;
* ``stream``: the bandwidth of the machine (:func:`diag.helpers.bandwidth.measure_bandwidth`), the
  bound: ``cache MB / stream GB/s``.

Prefill (``--prompt`` tokens, causal, no cache): ``torch sdpa`` (torch's CPU flash
attention, what ``model.generate`` runs), ``ort GroupQueryAttention`` (first prompt),
``ort Attention`` (opset 23, ``is_causal=1``: diag's default export), and ``ort MatMul
chunks`` (blocks of 256 queries against the keys before them: the causal half skipped
by hand, plain kernels).

Contenders alternate, round after round; each figure is the median over ``--rounds``
of the median of ``--reps`` calls, with the spread ``(max - min) / median`` of the
rounds. Each contender's output is checked against torch's before timing.

Usage::

    python bench/bench_attention_kernels.py                  # past 128 and 2048, prompt 1637
    python bench/bench_attention_kernels.py --past 2048 --rounds 3

The machine may be shared: read the ratios (same run), not the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pandas
import torch
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diag.helpers.bandwidth import measure_bandwidth  # noqa: E402


@dataclass(frozen=True)
class Shapes:
    """The attention shapes of a decoder: SmolLM2-135M's by default."""

    layers: int = 30
    heads: int = 9
    kv_heads: int = 3
    head_dim: int = 64

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    def cache_bytes(self, positions: int, itemsize: int = 4) -> int:
        """Bytes of keys and values of every layer over ``positions`` positions (batch 1)."""
        return 2 * self.layers * self.kv_heads * positions * self.head_dim * itemsize


_F = TensorProto.FLOAT
_MS = helper.make_opsetid("com.microsoft", 1)


def _value(name: str, shape: list, elem: int = _F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the unused-initializer notices are not news
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _bound_call(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> Callable[[], np.ndarray]:
    """A call running ``session`` on ``feeds`` bound once (IO binding, as diag's driver
    binds a step), returning its first output."""
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    binding.bind_output(session.get_outputs()[0].name)

    def run() -> np.ndarray:
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    return run


# ------------------------------------------------------------------ decode graphs
def decode_gqa_model(s: Shapes, max_length: int) -> onnx.ModelProto:
    """Every layer's ``GroupQueryAttention`` on its own shared buffer; the layers
    chained through the query (``q`` of layer ``i + 1`` is layer ``i``'s output) so
    that ONNX Runtime runs them one after the other, as in the model."""
    nodes, inputs, outputs = [], [], []
    inputs += [_value("q", [1, 1, s.heads * s.head_dim]), _value("k_new", [1, 1, s.kv_heads * s.head_dim]),
               _value("v_new", [1, 1, s.kv_heads * s.head_dim]), _value("seqlens_k", [1], TensorProto.INT32), _value("total", [], TensorProto.INT32)]  # fmt: skip
    query = "q"
    for i in range(s.layers):
        buffer = [1, s.kv_heads, max_length, s.head_dim]
        inputs += [_value(f"past_key.{i}", buffer), _value(f"past_value.{i}", buffer)]
        outputs += [_value(f"present_key.{i}", buffer), _value(f"present_value.{i}", buffer)]
        nodes.append(helper.make_node(
            "GroupQueryAttention",
            [query, "k_new", "v_new", f"past_key.{i}", f"past_value.{i}", "seqlens_k", "total"],
            [f"y.{i}", f"present_key.{i}", f"present_value.{i}"],
            domain="com.microsoft", num_heads=s.heads, kv_num_heads=s.kv_heads, scale=1.0,
        ))  # fmt: skip
        query = f"y.{i}"
    outputs.insert(0, _value(query, [1, 1, s.heads * s.head_dim]))
    graph = helper.make_graph(nodes, "decode_gqa", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), _MS])


def decode_matmul_model(s: Shapes, max_length: int) -> onnx.ModelProto:
    """Every layer as ``Softmax(q @ K^T + mask) @ V`` with ``q`` of shape
    ``[1, kv_heads, group, head_dim]``: one product per key-value head whose rows are
    its query heads, so each byte of the cache is read once (ONNX Runtime folds the
    ``Transpose`` into its ``FusedMatMul``)."""
    nodes, inputs = [], []
    inputs += [_value("q", [1, s.kv_heads, s.group, s.head_dim]), _value("mask", [1, 1, 1, max_length])]
    query = "q"
    for i in range(s.layers):
        buffer = [1, s.kv_heads, max_length, s.head_dim]
        inputs += [_value(f"past_key.{i}", buffer), _value(f"past_value.{i}", buffer)]
        nodes += [
            helper.make_node("Transpose", [f"past_key.{i}"], [f"kt.{i}"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", [query, f"kt.{i}"], [f"scores.{i}"]),
            helper.make_node("Add", [f"scores.{i}", "mask"], [f"masked.{i}"]),
            helper.make_node("Softmax", [f"masked.{i}"], [f"probs.{i}"], axis=-1),
            helper.make_node("MatMul", [f"probs.{i}", f"past_value.{i}"], [f"y.{i}"]),
        ]
        query = f"y.{i}"
    graph = helper.make_graph(nodes, "decode_matmul", inputs, [_value(query, [1, s.kv_heads, s.group, s.head_dim])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def decode_attention_model(s: Shapes, max_length: int) -> onnx.ModelProto:
    """Every layer as opset-23 ``Attention`` over the whole buffer with an additive
    mask hiding the unwritten positions (diag's ``cache="static"`` export without
    ``attention="gqa"``); 4-D, the query ``[1, heads, 1, head_dim]``."""
    nodes, inputs = [], []
    inputs += [_value("q", [1, s.heads, 1, s.head_dim]), _value("mask", [1, 1, 1, max_length])]
    query = "q"
    for i in range(s.layers):
        buffer = [1, s.kv_heads, max_length, s.head_dim]
        inputs += [_value(f"past_key.{i}", buffer), _value(f"past_value.{i}", buffer)]
        nodes.append(helper.make_node(
            "Attention", [query, f"past_key.{i}", f"past_value.{i}", "mask"], [f"y.{i}"], scale=1.0
        ))  # fmt: skip
        query = f"y.{i}"
    graph = helper.make_graph(nodes, "decode_attention", inputs, [_value(query, [1, s.heads, 1, s.head_dim])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def decode_reference(q: torch.Tensor, keys: list, values: list, past: int) -> torch.Tensor:
    """torch's grouped decode over the ``past + 1`` written positions, layers chained:
    ``q`` is ``[kv_heads, group, head_dim]``, each cache ``[kv_heads, max_length, head_dim]``."""
    y = q
    for k, v in zip(keys, values, strict=True):
        scores = torch.matmul(y, k[:, : past + 1].transpose(1, 2))
        y = torch.matmul(torch.softmax(scores, -1), v[:, : past + 1])
    return y


def decode_contenders(s: Shapes, past: int, max_length: int, threads: int, seed: int = 0
                      ) -> dict[str, Callable[[], np.ndarray]]:  # fmt: skip
    """The decode contenders over one random cache (``past + 1`` positions written:
    the past and the new token), each a call returning its output as torch's layout
    ``[kv_heads, group, head_dim]``. Scores are not scaled (the same for all)."""
    if past + 1 > max_length:
        raise ValueError(f"past={past}: the buffers hold max_length={max_length} positions, pass more")
    rng = np.random.default_rng(seed)
    buffer = (1, s.kv_heads, max_length, s.head_dim)
    keys = [rng.standard_normal(buffer, dtype=np.float32) / 8 for _ in range(s.layers)]
    values = [rng.standard_normal(buffer, dtype=np.float32) for _ in range(s.layers)]
    q = rng.standard_normal((s.kv_heads, s.group, s.head_dim), dtype=np.float32)
    # GroupQueryAttention writes the new key and value at position `past` itself, the
    # same ones in every layer here: the other contenders find them already written
    k_new, v_new = keys[0][0, :, past].copy(), values[0][0, :, past].copy()
    for k, v in zip(keys, values, strict=True):
        k[0, :, past], v[0, :, past] = k_new, v_new
    tkeys = [torch.from_numpy(k[0]) for k in keys]
    tvalues = [torch.from_numpy(v[0]) for v in values]
    tq = torch.from_numpy(q)

    gqa = _session(decode_gqa_model(s, max_length), threads)
    binding = gqa.io_binding()
    binding.bind_output(gqa.get_outputs()[0].name)  # first: get_outputs() keeps this order
    ort_values = {}
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        for name, array in ((f"key.{i}", k), (f"value.{i}", v)):
            ort_values[name] = ort.OrtValue.ortvalue_from_numpy(array.copy())
            binding.bind_ortvalue_input(f"past_{name}", ort_values[name])
            binding.bind_ortvalue_output(f"present_{name}", ort_values[name])  # in place
    binding.bind_cpu_input("q", q.reshape(1, 1, -1))
    binding.bind_cpu_input("k_new", k_new.reshape(1, 1, -1))
    binding.bind_cpu_input("v_new", v_new.reshape(1, 1, -1))
    binding.bind_cpu_input("seqlens_k", np.array([past], np.int32))
    binding.bind_cpu_input("total", np.array(past + 1, np.int32))

    def run_gqa() -> np.ndarray:
        gqa.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy().reshape(s.kv_heads, s.group, s.head_dim)

    mask = np.zeros((1, 1, 1, max_length), np.float32)
    mask[..., past + 1 :] = -np.inf
    buffers = {}
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        buffers[f"past_key.{i}"], buffers[f"past_value.{i}"] = k, v
    run_matmul = _bound_call(
        _session(decode_matmul_model(s, max_length), threads), {**buffers, "q": q[None], "mask": mask}
    )
    run_attention = _bound_call(
        _session(decode_attention_model(s, max_length), threads),
        {**buffers, "q": q.reshape(1, s.heads, 1, s.head_dim), "mask": mask},
    )

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return decode_reference(tq, tkeys, tvalues, past).numpy()

    return {
        "ort GroupQueryAttention": run_gqa,
        "ort Attention (opset 23)": lambda: run_attention().reshape(s.kv_heads, s.group, s.head_dim),
        "ort MatMul, grouped": lambda: run_matmul()[0],
        "torch matmul, grouped": run_torch,
    }


# ------------------------------------------------------------------ prefill graphs
def prefill_gqa_model(s: Shapes, prompt: int) -> onnx.ModelProto:
    """One layer's ``GroupQueryAttention`` on a first prompt (no past)."""
    node = helper.make_node(
        "GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"], ["y", "pk", "pv"],
        domain="com.microsoft", num_heads=s.heads, kv_num_heads=s.kv_heads, scale=1.0,
    )  # fmt: skip
    inputs = [_value("q", [1, prompt, s.heads * s.head_dim]), _value("k", [1, prompt, s.kv_heads * s.head_dim]),
              _value("v", [1, prompt, s.kv_heads * s.head_dim]), _value("seqlens_k", [1], TensorProto.INT32),
              _value("total", [], TensorProto.INT32)]  # fmt: skip
    outputs = [_value("y", [1, prompt, s.heads * s.head_dim]), _value("pk", None), _value("pv", None)]
    graph = helper.make_graph([node], "prefill_gqa", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), _MS])


def prefill_attention_model(s: Shapes, prompt: int) -> onnx.ModelProto:
    """One layer's opset-23 ``Attention``, ``is_causal=1``, 4-D inputs."""
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1, scale=1.0)
    inputs = [_value("q", [1, s.heads, prompt, s.head_dim]), _value("k", [1, s.kv_heads, prompt, s.head_dim]),
              _value("v", [1, s.kv_heads, prompt, s.head_dim])]  # fmt: skip
    graph = helper.make_graph([node], "prefill_attention", inputs, [_value("y", [1, s.heads, prompt, s.head_dim])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def prefill_chunks_model(s: Shapes, prompt: int, chunk: int) -> onnx.ModelProto:
    """One layer as blocks of ``chunk`` queries, each ``Softmax(q @ K[:end]^T + causal)
    @ V[:end]`` over the keys up to its last query: the blocks above the diagonal are
    never computed. ``q`` is ``[1, kv_heads, group, prompt, head_dim]``, the keys
    transposed ``[1, kv_heads, 1, head_dim, prompt]``."""
    causal = np.triu(np.full((prompt, prompt), -np.inf, np.float32), 1)
    nodes, inits, blocks = [], [], []
    for i, start in enumerate(range(0, prompt, chunk)):
        end = min(start + chunk, prompt)
        inits += [
            helper.make_tensor(f"mask.{i}", _F, [end - start, end], causal[start:end, :end].ravel()),
            helper.make_tensor(f"start.{i}", TensorProto.INT64, [1], [start]),
            helper.make_tensor(f"end.{i}", TensorProto.INT64, [1], [end]),
        ]
        nodes += [
            helper.make_node("Slice", ["q", f"start.{i}", f"end.{i}", "axis3"], [f"q.{i}"]),
            helper.make_node("Slice", ["kt", "zero", f"end.{i}", "axis4"], [f"kt.{i}"]),
            helper.make_node("Slice", ["v", "zero", f"end.{i}", "axis3"], [f"v.{i}"]),
            helper.make_node("MatMul", [f"q.{i}", f"kt.{i}"], [f"scores.{i}"]),
            helper.make_node("Add", [f"scores.{i}", f"mask.{i}"], [f"masked.{i}"]),
            helper.make_node("Softmax", [f"masked.{i}"], [f"probs.{i}"], axis=-1),
            helper.make_node("MatMul", [f"probs.{i}", f"v.{i}"], [f"y.{i}"]),
        ]
        blocks.append(f"y.{i}")
    inits += [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("zero", 0), ("axis3", 3), ("axis4", 4))]
    nodes.append(helper.make_node("Concat", blocks, ["y"], axis=3))
    inputs = [_value("q", [1, s.kv_heads, s.group, prompt, s.head_dim]),
              _value("kt", [1, s.kv_heads, 1, s.head_dim, prompt]), _value("v", [1, s.kv_heads, 1, prompt, s.head_dim])]  # fmt: skip
    graph = helper.make_graph(nodes, "prefill_chunks", inputs, [_value("y", None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def prefill_contenders(s: Shapes, prompt: int, threads: int, chunk: int = 256, seed: int = 0
                       ) -> dict[str, Callable[[], np.ndarray]]:  # fmt: skip
    """The prefill contenders for one layer, each returning ``[heads, prompt, head_dim]``."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((s.heads, prompt, s.head_dim), dtype=np.float32) / 8
    k = rng.standard_normal((s.kv_heads, prompt, s.head_dim), dtype=np.float32)
    v = rng.standard_normal((s.kv_heads, prompt, s.head_dim), dtype=np.float32)
    tq, tk, tv = (torch.from_numpy(x)[None] for x in (q, k, v))

    def packed(x: np.ndarray) -> np.ndarray:  # [h, s, d] -> [1, s, h * d]
        return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(1, prompt, -1)

    def heads_first(y: np.ndarray) -> np.ndarray:  # [1, s, h * d] -> [h, s, d]
        return y.reshape(prompt, s.heads, s.head_dim).transpose(1, 0, 2)

    gqa = _session(prefill_gqa_model(s, prompt), threads)
    gqa_feeds = {"q": packed(q), "k": packed(k), "v": packed(v),
                 "seqlens_k": np.array([prompt - 1], np.int32), "total": np.array(prompt, np.int32)}  # fmt: skip
    attention = _session(prefill_attention_model(s, prompt), threads)
    attention_feeds = {"q": q[None], "k": k[None], "v": v[None]}
    chunks = _session(prefill_chunks_model(s, prompt, chunk), threads)
    chunk_feeds = {
        "q": q.reshape(1, s.kv_heads, s.group, prompt, s.head_dim),
        "kt": np.ascontiguousarray(k.transpose(0, 2, 1))[None, :, None],
        "v": v[None, :, None],
    }

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            y = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True, scale=1.0, enable_gqa=True)
        return y[0].numpy()

    return {
        "torch sdpa": run_torch,
        "ort GroupQueryAttention": lambda: heads_first(gqa.run(None, gqa_feeds)[0]),
        "ort Attention (opset 23)": lambda: attention.run(None, attention_feeds)[0][0],
        f"ort MatMul chunks of {chunk}": lambda: chunks.run(None, chunk_feeds)[0].reshape(s.heads, prompt, s.head_dim),
    }


# ------------------------------------------------------------------ timing
def check_same(contenders: dict[str, Callable[[], np.ndarray]], reference: str, atol: float = 1e-4) -> None:
    """Raises when a contender's output differs from ``reference``'s by more than
    ``atol``: a bench of kernels that compute different things measures nothing."""
    expected = contenders[reference]()
    for name, call in contenders.items():
        diff = float(np.abs(call() - expected).max())
        if not diff <= atol:
            raise AssertionError(f"{name} differs from {reference} by {diff:.3g} (atol {atol})")


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, reps: int) -> pandas.DataFrame:
    """``ms`` (median over rounds of each round's median of ``reps`` calls) and
    ``spread`` per contender, the contenders alternated within each round."""
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    for call in contenders.values():
        call()  # warm-up: the arenas, the thread pools
    for _ in range(rounds):
        for name, call in contenders.items():
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            per_round[name].append(1e3 * statistics.median(times))
    rows = {}
    for name, values in per_round.items():
        median = statistics.median(values)
        rows[name] = {"ms": median, "spread": (max(values) - min(values)) / median}
    return pandas.DataFrame(rows).T


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--past", type=int, nargs="*", default=[128, 2048])
    parser.add_argument("--max-length", type=int, default=2064, help="the static buffers' positions")
    parser.add_argument("--prompt", type=int, default=1637)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = Shapes()
    stream = measure_bandwidth(threads=args.threads)
    print(f"stream (torch sum over 512 MiB, {args.threads} threads): {stream:.1f} GB/s")
    pandas.set_option("display.width", 200)
    for past in args.past:
        contenders = decode_contenders(shapes, past, args.max_length, args.threads)
        check_same(contenders, "torch matmul, grouped")
        df = alternate(contenders, args.rounds, args.reps)
        written = shapes.cache_bytes(past + 1)
        read = {name: written for name in df.index}
        for whole in ("ort MatMul, grouped", "ort Attention (opset 23)"):  # the whole buffer
            read[whole] = shapes.cache_bytes(args.max_length)
        df["cache MB read"] = pandas.Series(read) / 1e6
        df["GB/s"] = df["cache MB read"] / df["ms"]
        df["% of stream"] = 100 * df["GB/s"] / stream
        bound = written / 1e6 / stream
        print(f"\ndecode, past {past} (buffers of {args.max_length}), {shapes.layers} layers, "
              f"{args.threads} threads: the bound reads {written / 1e6:.1f} MB in {bound:.2f} ms")  # fmt: skip
        print(df.to_string(float_format=lambda x: f"{x:.2f}"))
    contenders = prefill_contenders(shapes, args.prompt, args.threads)
    check_same(contenders, "torch sdpa")
    df = alternate(contenders, args.rounds, max(1, args.reps // 2))
    df["x torch"] = df["ms"] / df.loc["torch sdpa", "ms"]
    df["x30 layers ms"] = 30 * df["ms"]
    print(f"\nprefill of {args.prompt} tokens, causal, one layer, {args.threads} threads")
    print(df.to_string(float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
