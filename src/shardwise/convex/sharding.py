"""Which rows each rank holds: contiguous, as even as possible (pure, no process group)."""

from __future__ import annotations


def row_range(n_rows: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s rows: the first n mod N ranks get one row more than the others."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    base, extra = divmod(n_rows, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
