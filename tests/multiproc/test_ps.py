"""Parameter server: sync parity, the ssp staleness bound, async training through a dead worker."""

import functools
import os
import time

import pytest
import torch
import torch.nn.functional as F

import shardwise as sw
from shardwise.models import MLP
from shardwise.testing.parity import Run, check_parity


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world_size", [3, 4])
def test_sync_mode_matches_single_process_with_one_and_two_servers(world_size):
    runs = [Run(case, sw.ParameterServer(servers=k), accumulation)
            for case in ("mlp_groups", "gpt_tied") for k in (1, 2) for accumulation in (1, 2)]
    assert check_parity(runs, world_size) == []


def _train(strategy, steps, slow_worker=None, die_at=None, dying_worker=None, sleep_s=0.04, start_together=False):
    torch.manual_seed(0)
    model = MLP(d_in=8, width=16, depth=2, d_out=4)
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.05), strategy=strategy)
    if start_together:  # async/ssp workers join one by one; this test wants all clocks to start at 0
        sw.comm.barrier()
    g = torch.Generator().manual_seed(sw.rank())
    x, y = torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)
    sent, answered, losses = [], [], []
    for step in range(steps):
        if step == die_at and sw.rank() == dying_worker:
            os._exit(1)  # a worker dies mid-training
        if sw.rank() == slow_worker:
            time.sleep(sleep_s)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        sent.append(time.time())
        optimizer.step()
        answered.append(time.time())
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"worker": sw.rank(), "sent": sent, "answered": answered, "losses": losses, "stats": optimizer.finish()}


def _ssp(staleness, steps):
    return _train(sw.ParameterServer(mode="ssp", staleness=staleness), steps, slow_worker=0, start_together=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("staleness", [0, 2])
def test_ssp_no_worker_runs_more_than_staleness_steps_ahead(staleness):
    steps = 12
    workers = [r for r in sw.launch(_ssp, 4, args=(staleness, steps)) if r is not None]
    assert len(workers) == 3
    ran_ahead = 0
    for w in workers:
        for v in workers:
            for k in range(steps):
                # The answer to w's push k (its clock k+1) comes only after every other worker has
                # pushed its step k - staleness.
                if k - staleness >= 0:
                    assert v["sent"][k - staleness] <= w["answered"][k], (w["worker"], v["worker"], k)
                if v["sent"][k] > w["answered"][k]:  # w got its answer before v had pushed step k
                    ran_ahead += 1
    if staleness > 0:
        assert ran_ahead > 0  # the fast workers did use their slack
    stats = next(w["stats"] for w in workers if w["stats"])
    histogram = {int(k): v for k, v in stats[0]["staleness_histogram"].items()}
    assert sum(histogram.values()) == 3 * steps
    assert max(histogram) <= (staleness + 1) * 2  # bounded by the clocks, not by the run's length


def _async_with_a_death(steps):
    return _train(sw.ParameterServer(mode="async", dead_after_s=1.5), steps, die_at=4, dying_worker=1)


@pytest.mark.timeout(120)
def test_async_training_finishes_when_a_worker_dies():
    results = sw.launch(_async_with_a_death, 4, args=(25,))
    assert results[0] is None and results[2] is None  # the server, and the worker that died
    survivors = [r for r in results if r is not None]
    assert len(survivors) == 2 and all(len(r["losses"]) == 25 for r in survivors)
    stats = next(r["stats"] for r in survivors if r["stats"])
    assert stats[0]["dropped_workers"] == [2]  # global rank of worker 1
    assert all(r["losses"][-1] < r["losses"][0] for r in survivors)


def test_too_few_processes_for_the_servers_is_a_clear_error():
    with pytest.raises(sw.ConfigError, match="needs at least 2 processes"):
        sw.wrap(MLP(d_in=2, width=2, depth=1, d_out=2), functools.partial(torch.optim.SGD, lr=0.1),
                strategy=sw.ParameterServer(servers=1))
    with pytest.raises(sw.ConfigError, match="mode must be one of sync, async, ssp"):
        sw.ParameterServer(mode="gossip")


def _case_train(strategy, steps, save=None, load=None):
    from shardwise.data.sampler import rank_slice
    from shardwise.testing.cases import CASES, GLOBAL_BATCH

    case = CASES["mlp_groups"]
    torch.manual_seed(0)
    model = case.build()
    model, optimizer = sw.wrap(model, case.optimizer(model), strategy=strategy)
    start = sw.load_checkpoint(load, model, optimizer)["step"] if load else 0
    for step in range(start, start + steps):
        x, y = case.batch(step)
        mine = rank_slice(GLOBAL_BATCH, sw.rank(), sw.world_size())
        case.loss(model, x[mine], y[mine]).backward()
        optimizer.step()
        optimizer.zero_grad()
    if save:
        sw.save_checkpoint(save, model, optimizer, extra={"step": start + steps})
    return sw.full_state_dict(model)


@pytest.mark.timeout(180)
def test_servers_save_and_restore_their_shards_across_strategies(tmp_path):
    """Saved under 2 servers + 2 workers, resumed under 1 server + 1 worker and under zero2:
    both continue like an uninterrupted single process (optimizer state included)."""
    straight = sw.launch(_case_train, 1, args=("ddp", 8))[0]
    ps = sw.ParameterServer(servers=2)
    sw.launch(_case_train, 4, args=(ps, 4, str(tmp_path / "a")))
    resumed_ps = [r for r in sw.launch(_case_train, 2, args=(sw.ParameterServer(servers=1), 4, None, str(tmp_path / "a"))) if r]
    resumed_zero = sw.launch(_case_train, 2, args=("zero2", 4, None, str(tmp_path / "a")))
    for state in resumed_ps + resumed_zero:
        for key, value in straight.items():
            assert torch.allclose(state[key], value, rtol=1e-5, atol=1e-6), key
    # and the other way: saved under zero3, resumed by a parameter server
    sw.launch(_case_train, 2, args=("zero3", 4, str(tmp_path / "b")))
    for state in [r for r in sw.launch(_case_train, 3, args=(sw.ParameterServer(), 4, None, str(tmp_path / "b"))) if r]:
        for key, value in straight.items():
            assert torch.allclose(state[key], value, rtol=1e-5, atol=1e-6), key


def _server_dies():
    import threading

    if sw.rank() == 0:  # the server: gone two seconds in
        threading.Timer(2.0, lambda: os._exit(7)).start()
    return _train(sw.ParameterServer(mode="async"), 10_000)


@pytest.mark.timeout(90)
def test_server_death_ends_the_job_with_a_message():
    started = time.monotonic()
    with pytest.raises(sw.WorkerError, match=r"rank 0 died \(exit code 7"):
        sw.launch(_server_dies, 3, timeout_s=80)
    assert time.monotonic() - started < 60
