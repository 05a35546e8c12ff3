"""Parameter server: a worker that starts late joins a running job with the current parameters."""

import datetime
import functools
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import shardwise as sw
from shardwise.models import MLP

def _joins_late(mode, servers, steps, late_after, staleness=1):
    """Workers 0 and 1 start at once; worker 2 wraps only after worker 0 has taken `late_after`
    steps. Each worker takes `steps` steps, and the first two at least `steps` after worker 2 came."""
    store = dist.PrefixStore("test-join/", dist.distributed_c10d._get_default_store())
    late = dist.get_rank() == servers + 2  # worker index 2
    if late:
        store.wait(["reached"], datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = MLP(d_in=8, width=16, depth=2, d_out=4)
    initial = [p.detach().clone() for p in model.parameters()]
    joined_at = time.time()
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.05),
                               strategy=sw.ParameterServer(servers=servers, mode=mode, staleness=staleness))
    client = optimizer._shardwise_client
    at_join = {"updates": optimizer.updates_applied(), "clock": client.clock, "time": joined_at,
               "moved": max((p.detach() - q).abs().max().item() for p, q in zip(model.parameters(), initial))}
    g = torch.Generator().manual_seed(sw.rank())
    x, y = torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)
    if late:
        store.set("joined", "1")
    sent, answered, losses = {}, {}, []
    step, since_join = 0, 0
    while step < steps or since_join < steps:
        if sw.rank() == 0 and step == late_after:
            store.set("reached", "1")
        since_join = since_join + 1 if late or since_join or store.check(["joined"]) else 0
        step += 1
        time.sleep(0.01)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        clock = client.clock + 1  # this push's clock at the server
        sent[clock] = time.time()
        optimizer.step()
        answered[clock] = time.time()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"worker": sw.rank(), "late": late, "at_join": at_join, "sent": sent, "answered": answered,
            "losses": losses, "stats": optimizer.finish()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode, servers", [("async", 1), ("ssp", 1), ("ssp", 2)])
def test_a_late_worker_joins_with_the_current_parameters(mode, servers):
    steps, late_after, staleness = 30, 10, 1
    results = sw.launch(_joins_late, servers + 3, args=(mode, servers, steps, late_after, staleness))
    assert results[:servers] == [None] * servers  # the servers
    workers = results[servers:]
    late = next(w for w in workers if w["late"])
    # The others did not wait for it (under ssp they would be stuck at step `staleness` otherwise) ...
    assert late["at_join"]["updates"] >= late_after
    # ... and it started from the parameters as they were then, not from its own initial ones.
    assert late["at_join"]["moved"] > 1e-4
    if mode == "ssp":
        # Its clock starts at the slowest joined worker's: worker 0 was at `late_after`, worker 1
        # at most `staleness` behind. (With two servers both count the clock server 0 chose.)
        assert late["at_join"]["clock"] >= late_after - staleness
        # From then on the bound holds for it as for the others: the answer to any push with clock
        # c comes only after every worker that had joined pushed its clock c - staleness.
        for w in workers:
            for v in workers:
                for c, answered_at in w["answered"].items():
                    if c - staleness in v["sent"]:
                        assert v["sent"][c - staleness] <= answered_at, (w["worker"], v["worker"], c)
    assert all(w["losses"][-1] < w["losses"][0] for w in workers)
    for stats in next(w["stats"] for w in workers if w["stats"]):  # every server saw every push
        assert stats["pushes"] == sum(len(w["losses"]) for w in workers) and stats["dropped_workers"] == []
