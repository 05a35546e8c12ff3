"""launch(): results in rank order, failures named by rank, no process left behind."""

import os
import signal
import time

import pytest
import torch
import torch.distributed as dist

import shardwise as sw


def _rank_and_sum():
    t = torch.tensor([float(sw.rank() + 1)])
    dist.all_reduce(t)
    return sw.rank(), sw.world_size(), t.item(), os.getpid()


def _rank1_raises():
    if sw.rank() == 1:
        raise ValueError("boom on purpose")
    dist.barrier()  # the others wait in a collective that can never finish
    return "unreachable"


def _rank2_killed():
    if sw.rank() == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    t = torch.ones(1)
    dist.all_reduce(t)
    return "unreachable"


def _sleeps():
    time.sleep(60)


def _pids():
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is already gone as far as a user is concerned.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [1, 3])
def test_results_in_rank_order(n):
    results = sw.launch(_rank_and_sum, n)
    assert [r[:3] for r in results] == [(r, n, n * (n + 1) / 2) for r in range(n)]
    assert not any(_alive(r[3]) for r in results)


@pytest.mark.timeout(60)
def test_raising_rank_is_named_and_nothing_outlives_the_call():
    started = time.monotonic()
    with pytest.raises(sw.WorkerError, match="rank 1 failed: ValueError: boom on purpose") as info:
        sw.launch(_rank1_raises, 3)
    assert time.monotonic() - started < 30
    assert isinstance(info.value.original, ValueError)
    assert info.value.rank == 1


@pytest.mark.timeout(60)
def test_killed_rank_is_named():
    with pytest.raises(sw.WorkerError, match=r"rank 2 died \(killed by signal SIGKILL\)"):
        sw.launch(_rank2_killed, 3)


@pytest.mark.timeout(60)
def test_timeout_stops_every_rank():
    started = time.monotonic()
    with pytest.raises(sw.WorkerError, match="timed out after 3s"):
        sw.launch(_sleeps, 2, timeout_s=3)
    assert time.monotonic() - started < 20
    assert not _rank_children()


def _rank_children() -> list[int]:
    """Live processes this test started that run a rank."""
    import os
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"shardwise.runtime.launch" in cmdline:
            found.append(int(entry.name))
    return found


def test_init_without_launcher_is_a_world_of_one():
    sw.init()
    sw.init()  # safe twice
    assert sw.rank() == 0 and sw.world_size() == 1
