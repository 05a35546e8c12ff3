"""The registry of strategies, and `wrap`: from a name or strategy object to a wrapped model.

[Note: adding a strategy]
A strategy is one package beside ddp/, zero/ and ps/ holding a frozen dataclass of its options
that implements `Strategy` (strategy/base.py; inherit `StrategyDefaults` for the usual answers)
and a wrapper subclassing `StrategyModule` (strategy/module.py), plus one line in `REGISTRY`
below. `wrap`, checkpoints, `shardwise train` and `shardwise plan` then take it by name or
object, through the interface only (see [Note: strategy interface]).
"""

from __future__ import annotations

import dataclasses
import functools

from torch import nn

from .ddp import DDP, NaiveDDP
from .errors import ConfigError
from .localsgd import DiLoCo, LocalSGD
from .pipeline import Pipeline
from .tensor_parallel import TensorParallel
from .mesh import Mesh
from .ps import ParameterServer
from .runtime import env
from .strategy.base import Strategy
from .strategy.prepare import broadcast_from_rank0, check_same_model, resolve_optimizer
from .zero import ZeRO

REGISTRY = {
    "ddp": DDP,
    "ddp-naive": NaiveDDP,
    "zero1": functools.partial(ZeRO, stage=1),
    "zero2": functools.partial(ZeRO, stage=2),
    "zero3": functools.partial(ZeRO, stage=3),
    "ps": ParameterServer,
    "local-sgd": LocalSGD,
    "diloco": DiLoCo,
    "pipeline": Pipeline,
    "tensor-parallel": TensorParallel,
    "mesh": Mesh,
}
"""Strategy name -> factory of its default object (keyword options override the defaults)."""


def strategy_names() -> list[str]:
    return list(REGISTRY)


def resolve_strategy(strategy) -> Strategy:
    """A strategy object from a name or an object (returned as is)."""
    if isinstance(strategy, str):
        try:
            return REGISTRY[strategy]()
        except KeyError:
            raise ConfigError(f"unknown strategy '{strategy}'; choose from {', '.join(REGISTRY)}") from None
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy must be a name or a strategy object, got {type(strategy).__name__}")
    return strategy


def build_strategy(name: str, precision: str = "fp32", **options) -> Strategy:
    """The strategy `name` with the given option fields (None: the default) at `precision`.
    An option the strategy does not have is ignored at its default value (`offload="none"`) and
    is otherwise a ConfigError naming the strategies that have it."""
    strategy = resolve_strategy(name)
    fields = {f.name for f in dataclasses.fields(strategy)}
    given = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in fields:
            given[key] = value
            continue
        defaults = {n: value_of[key] for n, value_of in _option_defaults().items() if key in value_of}
        if any(value != default for default in defaults.values()) or not defaults:  # the default asks nothing
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} applies to {', '.join(defaults) or 'no strategy'}, not '{name}'")
    return (strategy.with_options(**given) if given else strategy).with_precision(precision)


def _option_defaults() -> dict[str, dict]:
    """Strategy name -> its default object's options, field by field."""
    return {n: {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} for n, obj in
            ((n, factory()) for n, factory in REGISTRY.items())}


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
    if strategy.wraps_together:  # else the strategy agrees on the model itself
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
