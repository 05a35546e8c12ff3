"""Splitting model-state bytes into parameters / gradients / optimizer state / other (no processes)."""

import torch
from torch import nn

from shardwise.bench.memory import claim_storages, split_model_states
from shardwise.strategy.module import StrategyModule


def test_each_storage_counts_once_in_the_first_category_that_claims_it():
    split = claim_storages({
        "params": [(1, 400), (1, 400), (2, 100)],
        "grads": [(2, 100), (3, 40)],  # 2 is already a parameter
        "optimizer": [(4, 800)],
        "other": [(1, 400), (5, 10), (6, 0)],  # empty storages count nothing
    })
    assert split == {"params": 500, "grads": 40, "optimizer": 800, "other": 10, "total": 1350}


def test_optimizer_state_wins_over_parameters():
    """A master copy the optimizer keeps in its state is optimizer state, even if a parameter views it."""
    split = claim_storages({"params": [(7, 64)], "optimizer": [(7, 64)]})
    assert split["optimizer"] == 64 and split["params"] == 0


def test_plain_model_with_adam_after_a_step():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    psi = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(3, 8)).square().mean().backward()
    optimizer.step()
    split = split_model_states(model, optimizer)
    assert split["params"] == split["grads"] == 4 * psi
    steps = sum(s["step"].untyped_storage().nbytes() for s in optimizer.state.values())  # per-tensor step counters
    assert split["optimizer"] == 8 * psi + steps
    assert split["other"] == 0
    assert split["total"] == 16 * psi + steps


def test_wrapper_tensors_nobody_else_reaches_are_other():
    class Wrapped(StrategyModule):
        def __init__(self):
            super().__init__(nn.Linear(4, 4))
            self.gather_buffer = torch.empty(100)  # 400 bytes

        def own_tensors(self):
            return [self.gather_buffer]

    model = Wrapped()
    split = split_model_states(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert split == {"params": 4 * 20, "grads": 0, "optimizer": 0, "other": 400, "total": 480}
