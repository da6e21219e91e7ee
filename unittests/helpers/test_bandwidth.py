"""diag.helpers.bandwidth: the arithmetic of the bandwidth bound (a fake clock for the
measurement: no timing is asserted) and the weights a decode step reads."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diag.helpers.bandwidth import (
    MIN_MIB,
    bandwidth_bound_ms,
    decode_weight_bytes,
    measure_bandwidth,
    percent_of_bound,
)


def test_measure_bandwidth_is_bytes_over_the_median_time():
    # each timed sum "takes" 10 ms, 30 ms, 20 ms (the clock's ticks two by two): the
    # median, 20 ms, for 512 MiB read
    ticks = itertools.accumulate([0.0, 0.010, 1.0, 0.030, 1.0, 0.020])
    clock = iter(list(ticks))
    before = torch.get_num_threads()
    gbs = measure_bandwidth(MIN_MIB, repeat=3, threads=1, timer=lambda: next(clock))
    assert math.isclose(gbs, MIN_MIB * 2**20 / 0.020 / 1e9)
    assert torch.get_num_threads() == before  # the thread setting is restored


def test_measure_bandwidth_rejects_a_buffer_the_caches_hold():
    with pytest.raises(ValueError, match="at least 512"):
        measure_bandwidth(64)
    with pytest.raises(ValueError, match="repeat=0"):
        measure_bandwidth(repeat=0)


def test_bound_and_percent():
    # 1 GB at 25 GB/s: 40 ms; a step of 80 ms runs at half the bound
    assert math.isclose(bandwidth_bound_ms(1e9, 25.0), 40.0)
    assert math.isclose(percent_of_bound(40.0, 80.0), 50.0)
    assert math.isnan(percent_of_bound(40.0, 0.0))
    with pytest.raises(ValueError, match="gb_per_s=0"):
        bandwidth_bound_ms(1e9, 0)


class _LM(torch.nn.Module):
    def __init__(self, tied: bool):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.proj = torch.nn.Linear(4, 4, bias=True)
        self.head = torch.nn.Linear(4, 10, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        self.register_buffer("mask", torch.ones(100, 100))

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head


def test_decode_weight_bytes():
    proj = (4 * 4 + 4) * 4
    table = 10 * 4 * 4
    # tied: the table once (the head reads it); untied: the head, not the input table
    assert decode_weight_bytes(_LM(tied=True)) == proj + table
    assert decode_weight_bytes(_LM(tied=False)) == proj + table
    half = _LM(tied=False).to(torch.float16)
    assert decode_weight_bytes(half) == proj // 2 + table // 2
    # a module without embeddings: all its parameters
    assert decode_weight_bytes(torch.nn.Linear(3, 2)) == (3 * 2 + 2) * 4
