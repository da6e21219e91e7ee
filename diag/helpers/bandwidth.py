"""The memory-bandwidth bound of a decode step, as gpt-fast reports it: a decode step of
a small batch reads every weight and the whole cache once and does little arithmetic
per byte, so it cannot take less than those bytes divided by the machine's memory
bandwidth. "% of the bound" (bound / measured) says how much of the machine a decode
loop uses, whatever the machine.

Example::

    >>> bound = bandwidth_bound_ms(540_000_000 + 30_000_000, gb_per_s=20.0)  # 570 MB
    >>> round(bound, 1)
    28.5
    >>> round(percent_of_bound(bound, measured_ms=57.0))
    50

and on the machine: ``gb_per_s = measure_bandwidth(threads=2)`` (a few tenths of a
second), ``decode_weight_bytes(model)`` for the weights a step reads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

#: the smallest buffer :func:`measure_bandwidth` reads: smaller ones fit in the caches
#: of a server CPU (hundreds of MiB of L3 on some) and measure those instead of memory
MIN_MIB = 512


def measure_bandwidth(
    mib: int = MIN_MIB,
    repeat: int = 5,
    threads: int | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> float:
    """The memory bandwidth in GB/s (1e9 bytes per second) that torch reaches reading a
    float32 buffer of ``mib`` MiB (``torch.sum``, one warm-up then the median of
    ``repeat`` timings) with ``threads`` torch threads (None: the current setting,
    restored afterwards either way). A sum reads each byte once and adds one flop per
    4 bytes: the same regime as a decode step's matrix-vector products.

    ``timer`` is the clock (seconds); the tests give a fake one to check the arithmetic.

    :param mib: the buffer's size in MiB, larger than the CPU's caches
    :param repeat: the timings the median is taken of
    :param threads: torch threads while measuring (None: the current setting)
    :param timer: the clock, in seconds
    """
    if mib < MIN_MIB:
        raise ValueError(
            f"mib={mib}: pass at least {MIN_MIB} (a smaller buffer stays in the CPU's "
            "caches and measures them, not the memory)"
        )
    if repeat < 1:
        raise ValueError(f"repeat={repeat}: pass at least 1")
    nbytes = mib * 2**20
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        buffer = torch.ones(nbytes // 4, dtype=torch.float32)
        buffer.sum()  # first touch of the pages and the thread pool's start
        seconds = []
        for _ in range(repeat):
            begin = timer()
            buffer.sum()
            seconds.append(timer() - begin)
    finally:
        torch.set_num_threads(before)
    return nbytes / statistics.median(seconds) / 1e9


def decode_weight_bytes(model: torch.nn.Module) -> int:
    """The bytes of weights a decode step reads: every parameter of ``model`` once (a
    tied embedding counts once, as the output projection reads it whole), less the
    input embedding when it is not tied (a step gathers a few rows of it only). Buffers
    stay out: rotary frequencies are tiny, and some old models keep a causal mask of
    every position there that a step does not read whole.

    :param model: the torch causal LM
    """
    seen: set[int] = set()
    total = 0
    for tensor in model.parameters():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    get_input, get_output = (
        getattr(model, "get_input_embeddings", None),
        getattr(model, "get_output_embeddings", None),
    )
    inputs = get_input() if get_input else None
    outputs = get_output() if get_output else None
    if inputs is not None and getattr(inputs, "weight", None) is not None:
        tied = outputs is not None and outputs.weight.data_ptr() == inputs.weight.data_ptr()
        if not tied:
            total -= inputs.weight.numel() * inputs.weight.element_size()
    return total


def bandwidth_bound_ms(bytes_read: float, gb_per_s: float) -> float:
    """The shortest time in ms to read ``bytes_read`` bytes at ``gb_per_s`` GB/s.

    :param bytes_read: the bytes a step reads (:func:`decode_weight_bytes`)
    :param gb_per_s: the bandwidth (:func:`measure_bandwidth`)
    """
    if gb_per_s <= 0:
        raise ValueError(f"gb_per_s={gb_per_s}: a bandwidth is > 0 (measure_bandwidth())")
    return bytes_read / (gb_per_s * 1e9) * 1e3


def percent_of_bound(bound_ms: float, measured_ms: float) -> float:
    """``100 * bound / measured``: 100 when a step runs at the bandwidth bound.

    :param bound_ms: the step's bound (:func:`bandwidth_bound_ms`)
    :param measured_ms: the step's measured time (NaN returned when not > 0)
    """
    return 100.0 * bound_ms / measured_ms if measured_ms > 0 else float("nan")
