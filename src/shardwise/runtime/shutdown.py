"""Work a rank must do while its process group still exists, however the script ends.

A script may end by returning (interpreter exit) or by calling
`torch.distributed.destroy_process_group()` itself, as most DDP scripts do, often through a name
imported before shardwise was. Callbacks registered with `on_shutdown` (a parameter-server worker
telling its servers it is done) run exactly once, newest first, at whichever comes first: at
the start of destroying the default group, or at interpreter exit while it still exists.

[Note: shutdown hook]
`destroy_process_group()` on the default group first calls `finalize()` on every entry of the
c10d world's list of communicators, before any process group is shut down. A small object in
that list is therefore called however the function was imported; torch is pinned, and the
import-time check below fails loudly if that list ever goes away.
"""

from __future__ import annotations

import atexit

import torch.distributed.distributed_c10d as c10d

_callbacks: list = []


class _BeforeDestroy:
    """Sits in c10d's communicator list; `finalize()` runs when the default group is destroyed."""

    def finalize(self) -> None:
        run_callbacks()


_sentinel = _BeforeDestroy()
if not isinstance(getattr(c10d._world, "comms", None), list):  # see [Note: shutdown hook]
    raise ImportError("shardwise needs torch==2.13.0: torch.distributed's world has no communicator list")
atexit.register(lambda: run_callbacks())


def on_shutdown(callback) -> None:
    """Run `callback()` once, before the default process group goes away (or at exit)."""
    _callbacks.append(callback)
    if not any(entry is _sentinel for entry in c10d._world.comms):
        c10d._world.comms.append(_sentinel)


def run_callbacks() -> None:
    while _callbacks:
        _callbacks.pop()()
