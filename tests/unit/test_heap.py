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


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_trim_returns_freed_heap_pages_to_the_system():
    if heap._malloc_trim() is None:
        pytest.skip("malloc here is not glibc's: there is no malloc_trim to call")
    chunks = [bytearray(32 * 1024) for _ in range(3000)]  # ~98 MB of heap blocks below mmap's threshold
    for chunk in chunks:
        chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page
    keep = chunks[-1]  # a live block at the top of the heap: brk alone could not shrink past it
    del chunks
    freed = _rss_bytes()
    assert heap.trim()
    assert freed - _rss_bytes() > 50e6, "trim should hand most of the ~98 MB of freed blocks back"
    del keep


def test_ddp_rejects_a_negative_trim_period():
    with pytest.raises(sw.ConfigError, match="trim_every"):
        sw.DDP(trim_every=-1)
