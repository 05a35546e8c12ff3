"""Per-process progress that a launched rank reports to its launcher, so that a failure can be
reported with the step it happened at."""

from __future__ import annotations

_channel = None  # the launcher's queue, set in a launched rank
_rank = 0
_step: int | None = None


def attach(queue, rank: int) -> None:
    global _channel, _rank
    _channel, _rank = queue, rank


def report_step(step: int) -> None:
    """Record that this rank is at `step` (also tells the launcher, if any)."""
    global _step
    _step = step
    if _channel is not None:
        _channel.put((_rank, "step", step))


def current_step() -> int | None:
    return _step
