"""Byte accounting for every collective shardwise issues.

Counted as the wire volume of the ring algorithm on N ranks, per rank (docs/api.md):
all_reduce of S bytes moves 2(N-1)/N·S; reduce_scatter or all_gather of a full tensor of S bytes
moves (N-1)/N·S; broadcast, send and recv move S.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "send", "recv")


def ring_bytes(kind: str, full_bytes: int, world_size: int) -> float:
    """Wire bytes one rank moves for one collective over a tensor of `full_bytes` (pure)."""
    n = world_size
    if kind == "all_reduce":
        return 2 * (n - 1) / n * full_bytes
    if kind in ("reduce_scatter", "all_gather"):
        return (n - 1) / n * full_bytes
    if kind in ("broadcast", "send", "recv"):
        return float(full_bytes) if n > 1 or kind != "broadcast" else 0.0
    raise ValueError(f"unknown collective kind {kind!r}")


@dataclass
class CommStats:
    """Bytes and calls per collective kind since the last reset, for this process."""

    bytes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def record(self, kind: str, full_bytes: int, world_size: int) -> None:
        self.bytes[kind] += ring_bytes(kind, full_bytes, world_size)
        self.calls[kind] += 1

    def reset(self) -> None:
        for kind in KINDS:
            self.bytes[kind] = 0.0
            self.calls[kind] = 0

    def snapshot(self) -> dict:
        out = {kind: int(round(b)) for kind, b in self.bytes.items()}
        out["total"] = sum(out.values())
        return out


# One counter per process: collectives are counted where they are issued, whatever the group.
PROCESS_STATS = CommStats()


def comm_stats() -> dict:
    """Bytes this rank has moved through collectives since the last reset, by kind, plus total."""
    return PROCESS_STATS.snapshot()


def reset_comm_stats() -> None:
    PROCESS_STATS.reset()
