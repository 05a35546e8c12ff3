"""Which server owns which elements of the flat parameter vector (pure).

The trainable parameters, flattened end to end, are cut into `servers` contiguous key ranges of
nearly equal length; a parameter may straddle two servers. For each server, `pieces` lists the
parts of parameters in its range, as (parameter index, start, end) in the flattened parameter.
"""

from __future__ import annotations


def key_ranges(total: int, servers: int) -> list[tuple[int, int]]:
    base, extra = divmod(total, servers)
    ranges, start = [], 0
    for s in range(servers):
        end = start + base + (1 if s < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


def pieces(numels: list[int], lo: int, hi: int) -> list[tuple[int, int, int]]:
    out, offset = [], 0
    for index, n in enumerate(numels):
        a, b = max(offset, lo), min(offset + n, hi)
        if a < b:
            out.append((index, a - offset, b - offset))
        offset += n
    return out
