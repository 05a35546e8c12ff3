"""Rebuild a user's optimizer over other tensors: same class, defaults and group options."""

from __future__ import annotations

import torch


def rebuild_optimizer(optimizer: torch.optim.Optimizer, cls: type, groups: list[dict]) -> torch.optim.Optimizer:
    """An instance of `cls` (the user's class or a subclass of it) over `groups`, built with
    the user's defaults; for an optimizer whose defaults are not all constructor arguments,
    the base initialiser with the user's other attributes copied over."""
    try:
        return cls(groups, **optimizer.defaults)
    except TypeError:
        rebuilt = cls.__new__(cls)
        rebuilt.__dict__.update({k: v for k, v in optimizer.__dict__.items() if k not in ("state", "param_groups")})
        torch.optim.Optimizer.__init__(rebuilt, groups, optimizer.defaults)
        return rebuilt


def group_options(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "params"}
