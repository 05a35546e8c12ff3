"""A strategy added as one package plus one registry line goes through wrap, model-state bytes,
checkpoints (saved under it, resumed under ZeRO, and the reverse) without any other change:
the path DDP, ZeRO and the parameter server take."""

from dataclasses import dataclass

import pytest
import torch

import shardwise as sw
from shardwise import api, comm
from shardwise.strategy.base import StrategyDefaults
from shardwise.strategy.module import StrategyModule
from shardwise.testing.parity import ATOL, RTOL
from shardwise.testing.slices import train_slices


class AllReduceAtStep(StrategyModule):
    """A toy data parallel: gradients averaged by one all-reduce each, when the optimizer steps."""

    strategy_name = "toy"

    def average_gradients(self) -> None:
        if not self.require_backward_grad_sync:
            return
        for p in self.module.parameters():
            if p.grad is not None:
                p.grad.div_(sw.world_size())
                comm.all_reduce(p.grad)


class AveragingOptimizer(torch.optim.Adam):
    wrapper: AllReduceAtStep

    def step(self, closure=None):
        self.wrapper.average_gradients()
        return super().step(closure)


@dataclass(frozen=True)
class Toy(StrategyDefaults):
    name = "toy"

    def wrap(self, module, optimizer, group=None):
        wrapped = AllReduceAtStep(module)
        rebuilt = AveragingOptimizer(optimizer.param_groups, **optimizer.defaults)
        rebuilt.wrapper = wrapped
        return wrapped, rebuilt


def _train(strategy, steps, save=None, load=None):
    api.REGISTRY.setdefault("toy", Toy)  # the one registry line, in each rank's process
    model, optimizer, _ = train_slices("gpt_tied", strategy, steps, save, load,
                                       optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
    return sw.full_state_dict(model), sw.model_state_bytes(model, optimizer), sw.strategy_names()


def _close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in b)


@pytest.mark.timeout(150)
def test_a_registered_strategy_trains_saves_and_reshards_like_the_others(tmp_path):
    straight, _, _ = sw.launch(_train, 1, args=("ddp", 4))[0]
    # 2 steps under the toy strategy at 2 ranks, saved; 1 under zero2 at 3 ranks, saved; the last
    # under the toy strategy again: the same parameters as 4 steps in one process.
    state, state_bytes, names = sw.launch(_train, 2, args=("toy", 2, str(tmp_path / "a")))[0]
    assert "toy" in names and state_bytes > 0
    sw.launch(_train, 3, args=("zero2", 1, str(tmp_path / "b"), str(tmp_path / "a")))
    resumed = sw.launch(_train, 2, args=("toy", 1, None, str(tmp_path / "b")))[0][0]
    assert _close(resumed, straight)
