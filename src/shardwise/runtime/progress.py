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


def on_finish(fn) -> None:
    """Run `fn` when this rank's work ends normally (a launched function returns, a script exits
    or destroys its process group): how a parameter-server worker tells the servers it is done.
    See [Note: shutdown hook]."""
    from . import shutdown

    shutdown.on_shutdown(fn)


def run_finishers() -> None:
    from . import shutdown

    shutdown.run_callbacks()


_keep_group = False


def keep_group_at_exit() -> None:
    """Skip destroying the process group at exit: a thread of this rank still waits in it."""
    global _keep_group
    _keep_group = True


def group_kept() -> bool:
    return _keep_group


def mark_expendable() -> None:
    """Tell the launcher this rank may die without ending the job (an asynchronous worker)."""
    if _channel is not None:
        _channel.put((_rank, "expendable", True))


class ServerFinished(SystemExit):
    """A server rank's part of the job is over: `launch` reports None for it, a script exits 0."""

    def __init__(self):
        super().__init__(0)


def current_step() -> int | None:
    return _step
