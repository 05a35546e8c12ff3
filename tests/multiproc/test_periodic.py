"""Local SGD and DiLoCo: equal to DDP where the algebra says so, fewer bytes, and a checkpoint
that resumes their own state."""

import pytest
import torch

import shardwise as sw
from shardwise.compress.powersgd import PowerSGD
from shardwise.testing.parity import ATOL, RTOL, Run, check_parity
from shardwise.testing.slices import train_slices


@pytest.mark.timeout(180)
def test_periodic_strategies_equal_ddp_where_exact():
    # SGD (with momentum: linear too): averaging parameters after every step is averaging gradients;
    # a warm-up longer than the run is DDP itself, for any optimizer; DiLoCo with one inner step,
    # outer lr 1 and no outer momentum applies the mean inner update.
    runs = [Run("frozen_sgd", sw.LocalSGD(period=1), 1), Run("frozen_sgd", sw.LocalSGD(period=1), 2),
            Run("gpt_tied", sw.LocalSGD(period=4, warmup_steps=100), 2),
            Run("frozen_sgd", sw.DiLoCo(inner_steps=1, outer_lr=1.0, outer_momentum=0.0), 1)]
    assert check_parity(runs, 2) == []
    assert check_parity(runs[:1], 3) == []


def _train(strategy, steps: int, save=None, load=None):
    sw.reset_comm_stats()
    model, _, _ = train_slices("frozen_sgd", strategy, steps, save, load)
    bytes_ = sw.comm_stats()["total"]  # runs that save are not measured for bytes
    return sw.full_state_dict(model), bytes_, model.extra_state()


def _train_each(strategies, steps: int):
    return [_train(strategy, steps) for strategy in strategies]


@pytest.mark.timeout(180)
def test_fewer_bytes_and_resume_of_the_outer_state(tmp_path):
    (_, ddp_bytes, _), (_, local_bytes, _) = sw.launch(_train_each, 2, args=([sw.DDP(), sw.LocalSGD(period=4)], 24))[0]
    # 6 averages of the parameters against 24 gradient all-reduces, plus wrap's broadcast in both
    assert local_bytes < ddp_bytes / 3
    # The strategy's own state (DiLoCo's global parameters and outer momentum, the step count;
    # PowerSGD's residuals and Q) comes back from a checkpoint, at another world size too.
    for strategy in (sw.DiLoCo(inner_steps=2, outer_lr=0.7, outer_momentum=0.9),
                     sw.DDP(compress=PowerSGD(rank=1, warmup_steps=1, min_compression_rate=0))):
        folder = str(tmp_path / strategy.name)
        saved = sw.launch(_train, 2, args=(strategy, 5, folder))[0][2]
        loaded = sw.launch(_train, 3, args=(strategy, 0, None, folder))[0][2]
        assert saved.keys() == loaded.keys() and len(saved) >= 3
        assert all(torch.allclose(loaded[k].float(), saved[k].float(), rtol=RTOL, atol=ATOL) for k in saved), strategy.name
    assert int(loaded["compress.bucket0.steps"]) == 5
