"""Ranges of elements: even splits, running offsets, the parts of items inside a range (pure).

The one home of the arithmetic every sharded structure shares: a checkpoint's ranges, a
solver's rows, a parameter server's key ranges, a flat buffer's offsets and pieces.
"""

from __future__ import annotations


def even_range(numel: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of `rank`'s share of `numel` elements split as evenly as possible: the first
    numel mod world_size ranks get one more than the others."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(numel, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def even_ranges(numel: int, world_size: int) -> list[tuple[int, int]]:
    """Every rank's `even_range`, in rank order (they tile [0, numel))."""
    return [even_range(numel, r, world_size) for r in range(world_size)]


def offsets(numels) -> list[int]:
    """Start of each item when the items are laid end to end."""
    starts, total = [], 0
    for n in numels:
        starts.append(total)
        total += n
    return starts


def parts_in_range(numels, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    """The parts of items laid end to end that fall in [lo, hi): (item index, start, end, where
    it starts in the range), with start/end counted inside the item, in item order."""
    out = []
    for index, (start, n) in enumerate(zip(offsets(numels), numels)):
        a, b = max(start, lo), min(start + n, hi)
        if a < b:
            out.append((index, a - start, b - start, a - lo))
    return out
