"""Interleaved step timing, shared by `shardwise bench` and the benchmark scripts.

[Note: interleaved timing]
On a shared machine the speed of the CPU drifts over seconds (other jobs, frequency scaling,
page cache). Timing variant A for a minute and then variant B for a minute folds that drift into
the comparison. Instead every round runs one step of each variant, back to back (A B C, then
B C A, ...: the starting variant rotates so none always runs right after the same neighbour),
and the comparison is between medians of many rounds. A barrier before each block makes every
rank start it together, so one rank's lag is not charged to the next variant's step. Only
ratios measured this way within one run are meaningful.

A round runs a block of `block` consecutive steps of each variant, not one: a user trains in
consecutive steps, and one step per round hides costs that only continuous training pays (or
pays less): a step that allocates fresh buffers finds pages another variant just freed, caches
warmed by the previous variant's step. `shardwise bench` also confirms every ratio with each
configuration in processes of its own, alternated (see [Note: peak RSS] in rss.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_timing(
    steps: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 0,
    barrier: Callable[[], object] | None = None,
    rotate: bool = True,
    on_step: Callable[[str], object] | None = None,
    block: int = 1,
) -> dict[str, list[float]]:
    """Run each callable `warmup` untimed times, then `repeats` timed times, interleaved in
    blocks of `block` consecutive steps per callable.

    Returns name -> list of `repeats` durations in seconds, in step order (so index i of every
    list comes from the same round; see `paired_ratios`). `barrier`, if given, is called before
    every block, outside the timed region; `on_step(name)`, if given, after every step, also
    outside it (a progress bar). See [Note: interleaved timing].
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must not be negative, got {warmup}")
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    names = list(steps)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    total = warmup + repeats
    for round_index in range(-(-total // block)):
        shift = round_index % len(names) if rotate else 0
        first = round_index * block
        for name in names[shift:] + names[:shift]:
            if barrier is not None:
                barrier()
            for index in range(first, min(first + block, total)):
                start = time.perf_counter()
                steps[name]()
                elapsed = time.perf_counter() - start
                if index >= warmup:
                    seconds[name].append(elapsed)
                if on_step is not None:
                    on_step(name)
    return seconds


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def median(values: list[float]) -> float:
    return statistics.median(values)


def iqr(values: list[float]) -> float:
    """Interquartile range Q3 - Q1: the spread of the middle half, robust to a few outliers."""
    q1, _, q3 = quartiles(values)
    return q3 - q1


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-round ratios numerator[i] / denominator[i]: both steps ran in the same round, so slow
    drift of the machine cancels in each ratio."""
    if len(numerator) != len(denominator):
        raise ValueError(f"lists differ in length: {len(numerator)} and {len(denominator)}")
    return [a / b for a, b in zip(numerator, denominator)]


def slowest_rank(per_rank: list[list[float]]) -> list[float]:
    """Element-wise max over ranks: a synchronous step takes as long as its slowest rank."""
    return [max(step_times) for step_times in zip(*per_rank)]


def summarize(values: list[float]) -> dict:
    """Median, quartiles and IQR of a list of seconds, in milliseconds, plus the raw values."""
    q1, q2, q3 = quartiles(values)
    return {
        "median_ms": q2 * 1e3,
        "q1_ms": q1 * 1e3,
        "q3_ms": q3 * 1e3,
        "iqr_ms": (q3 - q1) * 1e3,
        "n": len(values),
        "seconds": list(values),
    }


class PhaseClock:
    """Durations of the named phases inside each step (e.g. forward, backward, step): where a
    step's time goes, per step, for steps timed by `interleaved_timing`.

    Call `start()` at the top of a step and `lap(phase)` at the end of each phase; `last(n)`
    returns phase -> its durations in the last `n` steps (the timed ones, after warm-up). No
    barrier separates the phases, so communication overlapped with one phase and waited for in
    a later one is charged to the later one, as the training loop experiences it.
    """

    def __init__(self, phases: tuple[str, ...]):
        self.phases = tuple(phases)
        self.seconds: dict[str, list[float]] = {phase: [] for phase in self.phases}
        self._mark = 0.0

    def start(self) -> None:
        self._mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase].append(now - self._mark)
        self._mark = now

    def last(self, count: int) -> dict[str, list[float]]:
        return {phase: values[len(values) - count:] for phase, values in self.seconds.items()}
