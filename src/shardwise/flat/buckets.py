"""Bucket assignment: which parameters communicate together (pure, no process group).

Parameters are taken in reverse registration order, which is roughly the order in which their
gradients become ready in backward, and cut into consecutive buckets of at most `bucket_bytes`.
The first bucket is smaller (`first_bucket_bytes`) so communication starts early in backward,
as PyTorch DDP does. A parameter larger than the cap gets a bucket of its own.
"""

from __future__ import annotations


def plan_buckets(sizes_bytes: list[int], bucket_bytes: int, first_bucket_bytes: int | None = None) -> list[list[int]]:
    """Split item indices 0..len-1 (already in backward order) into consecutive buckets.

    Returns a list of buckets, each a list of indices into `sizes_bytes`.
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes} bytes")
    first_cap = bucket_bytes if first_bucket_bytes is None else first_bucket_bytes
    buckets: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, size in enumerate(sizes_bytes):
        cap = first_cap if not buckets else bucket_bytes
        if current and current_bytes + size > cap:
            buckets.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        buckets.append(current)
    return buckets
