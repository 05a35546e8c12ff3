"""`wrap`: the one entry point from a plain model and optimizer to a distributed one."""

from __future__ import annotations

from torch import nn

from ..runtime import env
from .prepare import broadcast_from_rank0, check_same_model, resolve_optimizer
from .registry import resolve_strategy


def wrap(model: nn.Module, optimizer, strategy="ddp", group=None):
    """Return (model, optimizer) ready for distributed training under `strategy`.

    Every rank starts from rank 0's parameters and buffers; the optimizer keeps its class, its
    defaults and its parameter groups. `group` defaults to the whole job.
    """
    strategy = resolve_strategy(strategy)
    env.init()
    optimizer = resolve_optimizer(optimizer, model)
    if getattr(strategy, "collective_wrap", True):  # else the strategy agrees on the model itself
        check_same_model(model, group)
        broadcast_from_rank0(model, group)
    return strategy.wrap(model, optimizer, group)
