"""Reused flat buffers, so that a step allocates nothing large (per-engine state).

[Note: buffer reuse]
Each step gathers every stage-3 unit twice and reduce-scatters every unit's gradient. Fresh
buffers for each of those cost page faults (on CPU, about one per 4 KiB touched: a ZeRO-2 step
on the 8.4M-parameter MLP took about 7,600 minor faults, 30 MB of fresh pages, when stage 2
allocated its gradient buckets anew each backward) and leave memory that glibc keeps after
`free` without any tensor holding it, which inflates the resident size. So stage 3 gathers
into a few fixed slots, each the size of the largest unit, and at every stage gradient
buffers and receive scratch come from small pools (max_inflight + 1 buffers each, counted as
"other" model-state memory).

Slots: module unit k always uses slot k mod S, S = max(2, prefetch + 1), so the unit computing and
the ones prefetched after it (before it, in backward) never share a slot. In backward the unit
after the current one may still be gathered while its last gradients arrive; a prefetch that
finds its slot taken gives way and the unit is gathered when needed. The root unit has a
buffer of its own. A unit always returns to its slot, which matters because autograd keeps
views of a unit's parameters (Linear saves weight.t()) from its forward to its backward: the
gather before the unit's backward refills exactly the memory those views point at. A module
called twice in one forward is gathered into the same slot for each call; how it shares the
slot with its neighbours until its last gradient arrives is in [Note: stage 3 schedule].
`gathered()` (every unit whole at once) gathers into buffers of its own, freed on exit.
"""

from __future__ import annotations

import torch


class BufferPool:
    """Buffers of one size, dtype and device; `release` keeps at most `keep` for reuse."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device, keep: int):
        self.numel, self.dtype, self.device, self.keep = numel, dtype, device, keep
        self._free: list[torch.Tensor] = []

    def acquire(self) -> torch.Tensor:
        if self._free:
            return self._free.pop()
        return torch.empty(self.numel, dtype=self.dtype, device=self.device)

    def release(self, buffer: torch.Tensor) -> None:
        if len(self._free) < self.keep:
            self._free.append(buffer)

    def held(self):
        yield from self._free


class GatherSlots:
    """S persistent gather buffers of `numel` elements; unit k uses slot k mod S."""

    def __init__(self, count: int, numel: int, dtype: torch.dtype, device: torch.device):
        self.buffers = [torch.empty(numel, dtype=dtype, device=device) for _ in range(count)]
        self.occupant: list[object] = [None] * count

    def slot_of(self, position: int) -> int:
        return position % len(self.buffers)
