"""Strategy names of the public API and the default object each stands for."""

from __future__ import annotations

import functools

from ..ddp.config import DDP, NaiveDDP
from ..errors import ConfigError
from ..ps.config import ParameterServer
from ..zero.config import ZeRO

_BY_NAME = {
    "ddp": DDP,
    "ddp-naive": NaiveDDP,
    "zero1": functools.partial(ZeRO, stage=1),
    "zero2": functools.partial(ZeRO, stage=2),
    "zero3": functools.partial(ZeRO, stage=3),
    "ps": ParameterServer,
}


def strategy_names() -> list[str]:
    return list(_BY_NAME)


def resolve_strategy(strategy):
    """A strategy object from a name or an object (returned as is)."""
    if isinstance(strategy, str):
        try:
            return _BY_NAME[strategy]()
        except KeyError:
            raise ConfigError(f"unknown strategy '{strategy}'; choose from {', '.join(_BY_NAME)}") from None
    if not hasattr(strategy, "wrap"):
        raise ConfigError(f"strategy must be a name or a strategy object, got {type(strategy).__name__}")
    return strategy
