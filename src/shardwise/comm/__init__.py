"""The communication layer: collectives with byte accounting."""

from .collectives import (all_gather, all_gather_object, all_reduce, barrier, broadcast, default_group, group_size,
                          irecv, irecv_any, isend, recv, reduce_scatter, send)
from .stats import comm_stats, reset_comm_stats

__all__ = [
    "all_gather", "all_gather_object", "all_reduce", "barrier", "broadcast", "default_group", "group_size", "irecv", "irecv_any", "isend",
    "recv", "reduce_scatter", "send",
    "comm_stats", "reset_comm_stats",
]
