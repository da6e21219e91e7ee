"""Timings that hold on a shared machine: contenders called in turn, round after round,
so that a burst of load from another process falls on all of them, and each figure the
median of the rounds with its spread (the lowest and the highest round), not one run.

Example::

    >>> runs = alternate({"a": lambda: 1, "b": lambda: 2}, rounds=3)
    >>> [run.result for run in runs["a"]], len(runs["b"])
    ([1, 1, 1], 3)
    >>> spread = Spread.of([0.30, 0.10, 0.20])
    >>> spread.median, f"{spread:.2f}"
    (0.2, '0.20 (0.10-0.30)')
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Run(Generic[T]):
    """What one call of a contender returned and the seconds it took."""

    result: T
    seconds: float


@dataclass(frozen=True)
class Spread:
    """The median of a few measurements with the lowest and the highest of them.

    Formatting applies the format to the three numbers: ``f"{s:.1f}"`` gives
    ``"12.3 (11.9-14.0)"``.

    >>> f"{Spread.of([4.0, 1.0, 2.0]).scaled(10):.0f}"
    '20 (10-40)'
    """

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of ``values`` (at least one)."""
        values = list(values)
        if not values:
            raise ValueError("Spread.of needs at least one value; run at least one round.")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Spread:
        """The same spread multiplied by ``factor`` (seconds to ms, a count per second);
        a negative factor swaps low and high."""
        low, high = sorted((self.low * factor, self.high * factor))
        return Spread(self.median * factor, low, high, self.n)

    def inverse(self, numerator: float = 1.0) -> Spread:
        """``numerator / value`` of each (seconds to a rate): the low becomes the high."""
        return Spread(numerator / self.median, numerator / self.high, numerator / self.low, self.n)

    def __format__(self, spec: str) -> str:
        return f"{self.median:{spec}} ({self.low:{spec}}-{self.high:{spec}})"


def alternate(
    contenders: Mapping[str, Callable[[], T]],
    rounds: int = 3,
    warmup: int = 1,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, list[Run[T]]]:
    """Calls every contender ``warmup`` times untimed, then ``rounds`` rounds in which
    each is called once, in turn; the order rotates by one each round so that no
    contender always follows the same one. Returns each contender's runs, in order.

    ``timer`` is the clock (seconds); the tests give a fake one.

    >>> runs = alternate({"x": lambda: "done"}, rounds=2, warmup=0)
    >>> [r.result for r in runs["x"]]
    ['done', 'done']
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: pass at least 1 (each figure is a median of rounds)")
    if warmup < 0:
        raise ValueError(f"warmup={warmup}: pass 0 or more")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    runs: dict[str, list[Run[T]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            begin = timer()
            result = contenders[name]()
            runs[name].append(Run(result, timer() - begin))
    return runs


def spread_of(runs: Iterable[Run], key: Callable[[Run], float] = lambda run: run.seconds) -> Spread:
    """The :class:`Spread` of ``key(run)`` over ``runs`` (by default their seconds).

    >>> spread_of([Run(None, 2.0), Run(None, 1.0), Run(None, 3.0)]).median
    2.0
    """
    return Spread.of(key(run) for run in runs)


__all__ = ["Run", "Spread", "alternate", "spread_of"]
