"""Heartbeats: timed by the server's own monotonic clock (no wall clocks compared across hosts),
and a beat that fails once does not stop the beating."""

import time

import torch.distributed as dist

from shardwise.ps import heartbeat
from shardwise.ps.heartbeat import Heartbeats


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_silence_is_measured_on_the_servers_clock():
    store, clock = dist.HashStore(), FakeClock()
    server = Heartbeats(2.0, clock=clock, store=store)
    assert server.alive(1)  # not beating yet
    store.set("beat/1", "1")
    assert server.alive(1)
    clock.now += 1.5
    assert server.alive(1)
    store.set("beat/1", "2")  # a beat: the silence restarts, whatever the worker's wall clock says
    clock.now += 1.5
    assert server.alive(1)  # seen to change 0 s ago by the server's clock
    clock.now += 1.9
    assert server.alive(1)
    clock.now += 0.2
    assert not server.alive(1)


class FlakyStore:
    """Fails the first few writes, as a busy or briefly unreachable store would."""

    def __init__(self, failures):
        self.inner, self.failures = dist.HashStore(), failures

    def set(self, key, value):
        if self.failures and value != "0":
            self.failures -= 1
            raise RuntimeError("store busy")
        self.inner.set(key, value)

    def get(self, key):
        return self.inner.get(key)

    def check(self, keys):
        return self.inner.check(keys)


def test_beating_survives_failed_beats(monkeypatch):
    monkeypatch.setattr(heartbeat, "INTERVAL_S", 0.01)
    store = FlakyStore(failures=3)
    Heartbeats(1.0, store=store).start_beating(7)
    deadline = time.monotonic() + 5
    while int(store.get("beat/7")) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert int(store.get("beat/7")) >= 5
