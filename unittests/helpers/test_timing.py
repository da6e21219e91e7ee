"""diag.helpers.timing: the order of the calls, the rounds and the spread (a fake clock:
no timing is asserted)."""

from __future__ import annotations

import itertools

import pytest

from diag.helpers.timing import Run, Spread, alternate, spread_of


def test_alternate_rotates_the_order_and_warms_up_untimed():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name) or name) for name in "abc"}
    runs = alternate(contenders, rounds=3, warmup=1)
    # warm-up a, b, c; then round 0: a b c, round 1: b c a, round 2: c a b
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert {name: [r.result for r in rs] for name, rs in runs.items()} == {
        "a": ["a"] * 3,
        "b": ["b"] * 3,
        "c": ["c"] * 3,
    }


def test_alternate_times_each_call_with_the_clock():
    # every call reads the clock twice; each call "takes" 1, 2, 3... seconds
    ticks = itertools.accumulate(itertools.chain.from_iterable((10.0, k) for k in range(1, 7)))
    clock = iter(list(ticks))
    runs = alternate(
        {"x": lambda: None, "y": lambda: None}, rounds=3, warmup=0, timer=lambda: next(clock)
    )
    # round 0: x (1 s), y (2 s); round 1: y (3 s), x (4 s); round 2: x (5 s), y (6 s)
    assert [r.seconds for r in runs["x"]] == [1.0, 4.0, 5.0]
    assert [r.seconds for r in runs["y"]] == [2.0, 3.0, 6.0]


def test_alternate_rejects_no_round():
    with pytest.raises(ValueError, match="rounds=0"):
        alternate({"x": lambda: None}, rounds=0)
    with pytest.raises(ValueError, match="warmup=-1"):
        alternate({"x": lambda: None}, warmup=-1)


def test_spread_median_low_high_and_format():
    s = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert f"{s:.1f}" == "2.5 (1.0-10.0)"
    assert s.scaled(1e3) == Spread(2500.0, 1000.0, 10000.0, 4)
    # seconds for 10 tokens -> tokens per second: the slowest round gives the lowest rate
    rate = Spread.of([2.0, 4.0, 5.0]).inverse(10.0)
    assert (rate.median, rate.low, rate.high) == (2.5, 2.0, 5.0)
    with pytest.raises(ValueError, match="at least one value"):
        Spread.of([])


def test_spread_of_runs_by_key():
    runs = [Run({"decode": 0.5}, 2.0), Run({"decode": 0.25}, 1.0), Run({"decode": 1.0}, 3.0)]
    assert spread_of(runs).median == 2.0
    assert spread_of(runs, key=lambda r: r.result["decode"]) == Spread(0.5, 0.25, 1.0, 3)
