"""Returning freed heap memory to the system (runtime/heap.py)."""

import pytest

import shardwise as sw
from shardwise.runtime import heap


def test_periodic_trim_runs_every_nth_tick(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    trimmer = heap.PeriodicTrim(3)
    for _ in range(10):
        trimmer.tick()
    assert len(calls) == 3
    never = heap.PeriodicTrim(0)
    for _ in range(10):
        never.tick()
    assert len(calls) == 3


def test_trim_runs_on_this_machine():
    assert heap.trim() in (True, False)  # False only where malloc is not glibc's


def test_ddp_rejects_a_negative_trim_period():
    with pytest.raises(sw.ConfigError, match="trim_every"):
        sw.DDP(trim_every=-1)
