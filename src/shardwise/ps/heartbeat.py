"""Liveness of asynchronous workers, through the job's key-value store.

A worker that dies sends nothing, and a server waiting for messages from any worker cannot tell
silence from death; so each async/ssp worker bumps a counter in the store every `INTERVAL_S`,
and a server drops a worker whose counter has not moved for `dead_after_s` by the server's own
monotonic clock (no wall clocks compared across hosts). A beat that fails (the store busy or
briefly unreachable) is retried at the next interval; the thread never stops on its own. The
store is the job's own rendezvous store: only the job's processes reach it.
"""

from __future__ import annotations

import json
import threading
import time

import torch.distributed as dist

INTERVAL_S = 0.25


def job_store():
    return dist.PrefixStore("shardwise-ps/", dist.distributed_c10d._get_default_store())


class Heartbeats:
    def __init__(self, dead_after_s: float, clock=time.monotonic, store=None):
        self.store = job_store() if store is None else store
        self.dead_after_s = dead_after_s
        self.clock = clock
        self.seen: dict[int, tuple[bytes, float]] = {}  # worker -> (last counter, when it changed here)

    def start_beating(self, worker: int) -> None:
        count = 0

        def beat() -> None:
            nonlocal count
            while True:
                count += 1
                try:
                    self.store.set(f"beat/{worker}", str(count))
                except Exception:  # retried at the next interval
                    pass
                time.sleep(INTERVAL_S)

        self.store.set(f"beat/{worker}", "0")
        threading.Thread(target=beat, name="shardwise-heartbeat", daemon=True).start()

    def alive(self, worker: int) -> bool:
        key = f"beat/{worker}"
        now = self.clock()
        if not self.store.check([key]):
            return True  # not started beating yet
        value = self.store.get(key)
        last = self.seen.get(worker)
        if last is None or last[0] != value:
            self.seen[worker] = (value, now)
            return True
        return now - last[1] < self.dead_after_s


def publish_stats(server: int, stats: dict) -> None:
    job_store().set(f"stats/{server}", json.dumps(stats))


def read_stats(servers: int) -> list[dict]:
    """Every server's statistics; waits until each server has published them."""
    store = job_store()
    return [json.loads(store.get(f"stats/{s}").decode()) for s in range(servers)]
