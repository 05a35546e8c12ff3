"""`wrap`: the one entry point from a plain model and optimizer to a distributed one."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..errors import ConfigError
from ..runtime import env
from .prepare import broadcast_from_rank0, check_same_model, resolve_optimizer
from .registry import resolve_strategy


def wrap(model: nn.Module, optimizer, strategy="ddp", group=None, *, find_unused_parameters: bool | None = None,
         broadcast_buffers: bool | None = None):
    """Return (model, optimizer) ready for distributed training under `strategy`.

    Every rank starts from rank 0's parameters and buffers; the optimizer keeps its class, its
    defaults and its parameter groups. `group` defaults to the whole job.
    `find_unused_parameters` and `broadcast_buffers` mean what they mean to PyTorch DDP; given
    here, they override the strategy object's fields of the same names (None: keep them).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"wrap needs a torch.nn.Module, got {type(model).__name__}")
    strategy = _with_switches(resolve_strategy(strategy), find_unused_parameters=find_unused_parameters,
                              broadcast_buffers=broadcast_buffers)
    env.init()
    optimizer = resolve_optimizer(optimizer, model)
    if getattr(strategy, "collective_wrap", True):  # else the strategy agrees on the model itself
        check_same_model(model, group)
        broadcast_from_rank0(model, group)
    return strategy.wrap(model, optimizer, group)


def _with_switches(strategy, **switches):
    """The strategy object with the given DDP switches set (those passed as None left alone)."""
    given = {name: bool(value) for name, value in switches.items() if value is not None}
    if not given:
        return strategy
    fields = {f.name for f in dataclasses.fields(strategy)} if dataclasses.is_dataclass(strategy) else set()
    unknown = [name for name in given if name not in fields]
    if unknown:
        raise ConfigError(f"strategy {strategy} has no switch {unknown[0]}")
    return dataclasses.replace(strategy, **given)
