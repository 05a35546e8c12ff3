"""Interleaved timing and its statistics (no processes)."""

import pytest

from shardwise.bench.timing import PhaseClock, interleaved_timing, iqr, paired_ratios, quartiles, slowest_rank, summarize


def test_rounds_interleave_and_rotate_their_starting_configuration():
    order, barriers = [], []
    steps = {name: (lambda name=name: order.append(name)) for name in "ABC"}
    seconds = interleaved_timing(steps, repeats=2, warmup=1, barrier=lambda: barriers.append(1), on_step=order.append)
    assert order[::2] == list("ABC" "BCA" "CAB") and order[1::2] == order[::2]  # on_step after each step
    assert len(barriers) == 9
    assert {name: len(values) for name, values in seconds.items()} == {"A": 2, "B": 2, "C": 2}


def test_blocks_run_consecutive_steps_of_one_configuration():
    order, barriers = [], []
    steps = {name: (lambda name=name: order.append(name)) for name in "AB"}
    seconds = interleaved_timing(steps, repeats=4, warmup=1, barrier=lambda: barriers.append(1), block=2)
    assert "".join(order) == "AA" "BB" "BB" "AA" "A" "B"  # 5 steps each: blocks of 2, rotating; the last short
    assert len(barriers) == 6  # one per block, not per step
    assert {name: len(values) for name, values in seconds.items()} == {"A": 4, "B": 4}
    with pytest.raises(ValueError):
        interleaved_timing(steps, repeats=1, block=0)


def test_bad_repeats_and_warmup_are_refused():
    with pytest.raises(ValueError):
        interleaved_timing({"A": lambda: None}, repeats=0)
    with pytest.raises(ValueError):
        interleaved_timing({"A": lambda: None}, repeats=1, warmup=-1)


def test_statistics():
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert quartiles([7.0]) == (7.0, 7.0, 7.0)
    assert iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == 2.0
    assert slowest_rank([[1.0, 5.0], [2.0, 3.0]]) == [2.0, 5.0]
    assert paired_ratios([2.0, 6.0], [1.0, 3.0]) == [2.0, 2.0]
    assert summarize([0.001, 0.002, 0.003])["median_ms"] == pytest.approx(2.0)


def test_phase_clock_keeps_the_last_steps():
    clock = PhaseClock(("forward", "backward"))
    for _ in range(3):
        clock.start()
        clock.lap("forward")
        clock.lap("backward")
    assert {phase: len(values) for phase, values in clock.last(2).items()} == {"forward": 2, "backward": 2}
