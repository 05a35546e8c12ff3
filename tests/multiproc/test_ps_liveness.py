"""async parameter server: a worker the servers dropped is told so (one clear error, no wait until
the collective timeout), and the others finish."""

import functools
import time

import pytest
import torch
import torch.nn.functional as F

import shardwise as sw
from shardwise.models import MLP

QUIET = 2  # global rank of worker 1 (rank 0 is the server)


def _train_with_a_quiet_worker(steps):
    from shardwise.ps import heartbeat
    from shardwise.ps.worker import WorkerDropped

    if sw.rank() == QUIET:
        heartbeat.INTERVAL_S = 3600.0  # its heartbeat falls silent while the process lives on
    torch.manual_seed(0)
    model = MLP(d_in=8, width=16, depth=2, d_out=4)
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.05),
                               strategy=sw.ParameterServer(mode="async", dead_after_s=1.0))
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    started = time.monotonic()
    for step in range(steps):
        if sw.rank() == QUIET and step == 2:
            time.sleep(2.5)
        else:
            time.sleep(0.05)
        try:
            F.mse_loss(model(x), y).backward()
            optimizer.step()
        except WorkerDropped as exc:
            return {"dropped": str(exc), "after_s": time.monotonic() - started}
        optimizer.zero_grad()
    return {"steps": steps, "stats": optimizer.finish()}


@pytest.mark.timeout(120)
def test_a_dropped_worker_is_told():
    results = sw.launch(_train_with_a_quiet_worker, 3, args=(60,), timeout_s=100)
    assert results[0] is None
    quiet = results[QUIET]
    assert "was dropped by the parameter servers" in quiet["dropped"] and quiet["after_s"] < 30
    assert results[1]["steps"] == 60
    assert results[1]["stats"][0]["dropped_workers"] == [QUIET]
