"""Handing memory the process has freed back to the operating system.

[Note: heap retention under DDP]
glibc's malloc keeps freed memory in the process's heap for reuse. A training step frees
megabytes of activations, gradients and optimizer temporaries, and under DDP gloo also grows
small long-lived buffers of its own (about 2 MB over the first thousand all-reduces, then
flat); allocated among the holes the step's frees leave, they pin heap pages, so the resident
set creeps up by a few percent over thousands of steps while the memory in use does not (the
built-in GPT under DDP, steps 200-1,000: malloc's in-use bytes +2 MB, the freed bytes it keeps
44 -> 54 MB). `malloc_trim(0)` returns whole free pages inside the heap to the system, so
the resident set shows what is live. It costs a few milliseconds, plus page faults when the
pages are used again, so it runs every hundred steps or so, not every step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def trim() -> bool:
    """Return the heap's free pages to the system; False where malloc has no such call."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


class PeriodicTrim:
    """`tick()` once per step; every `every`-th tick trims the heap (0: never)."""

    def __init__(self, every: int):
        self.every, self.ticks = every, 0

    def tick(self) -> None:
        self.ticks += 1
        if self.every and self.ticks % self.every == 0:
            trim()
