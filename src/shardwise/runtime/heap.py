"""When freed memory goes back to the operating system: kept for reuse during training steps,
returned every hundred steps or so.

[Note: freed memory and page faults]
A training step frees and re-allocates megabytes: activations, gradients after
`zero_grad()`, the optimizer's temporaries (Adam's denominators, as large as the parameters).
By default glibc hands a freed block of 128 KiB or more back to the system (munmap, or a trim
of the heap's top) and the next step's allocation of it faults every page in again, one minor
fault per 4 KiB. On the 8.4M-parameter MLP with Adam that is 5,000-8,000 faults a step and a
quarter of a single process's step time (80 ms against 55 ms on this machine; 20-30% at
widths 1024-2048 too). So every rank that `shardwise.init` sets up tells malloc to keep freed
memory for reuse (`keep_freed_memory`: mallopt's trim threshold 1 GiB, mmap threshold 32 MiB,
the largest glibc allows): steady-state steps then fault nothing in, and the peak resident
set does not change, since the memory was needed by the step anyway. Blocks above 32 MiB
still come and go by mmap. `SHARDWISE_MALLOC=system` keeps glibc's defaults.

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
import os


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
KEEP_TRIM_BYTES, KEEP_MMAP_BYTES = 1 << 30, 32 << 20  # 32 MiB: glibc's largest mmap threshold on 64-bit


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


@functools.cache
def keep_freed_memory() -> bool:
    """Make malloc keep freed memory for reuse (see [Note: freed memory and page faults]); once
    per process. False where malloc is not glibc's or SHARDWISE_MALLOC=system."""
    libc = _libc()
    if os.environ.get("SHARDWISE_MALLOC", "keep") == "system" or libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_BYTES)) and bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_BYTES))


def _malloc_trim():
    libc = _libc()
    return getattr(libc, "malloc_trim", None) if libc is not None else None  # None: not glibc


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
