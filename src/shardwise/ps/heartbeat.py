"""Liveness of asynchronous workers, through the job's key-value store.

A worker that dies sends nothing, and a server waiting for messages from any worker cannot tell
silence from death; so each async/ssp worker writes the time into the store every
`INTERVAL_S`, and a server drops a worker whose last beat is older than `dead_after_s`. The
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
    def __init__(self, dead_after_s: float):
        self.store = job_store()
        self.dead_after_s = dead_after_s

    def start_beating(self, worker: int) -> None:
        def beat() -> None:
            while True:
                try:
                    self.store.set(f"beat/{worker}", repr(time.time()))
                except Exception:
                    return
                time.sleep(INTERVAL_S)

        self.store.set(f"beat/{worker}", repr(time.time()))
        threading.Thread(target=beat, name="shardwise-heartbeat", daemon=True).start()

    def alive(self, worker: int) -> bool:
        key = f"beat/{worker}"
        if not self.store.check([key]):
            return True  # not started beating yet
        return time.time() - float(self.store.get(key).decode()) < self.dead_after_s


def publish_stats(server: int, stats: dict) -> None:
    job_store().set(f"stats/{server}", json.dumps(stats))


def read_stats(servers: int) -> list[dict]:
    """Every server's statistics; waits until each server has published them."""
    store = job_store()
    return [json.loads(store.get(f"stats/{s}").decode()) for s in range(servers)]
