"""The user's optimizer rebuilt over other tensors: same class (or a subclass), defaults and
group options. ZeRO and the parameter server both rebuild it over the pieces of parameters a
rank owns (`optimizer_over_pieces`)."""

from __future__ import annotations

import torch
from torch import nn


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


def piece_parameter(values: torch.Tensor, grad: torch.Tensor) -> nn.Parameter:
    """A parameter over `values` (a view into a flat buffer) whose `.grad` is `grad` (another view)."""
    piece = nn.Parameter(values, requires_grad=True)
    piece.grad = grad
    return piece


def optimizer_over_pieces(optimizer: torch.optim.Optimizer, pieces_of: dict[int, list[nn.Parameter]],
                          cls: type | None = None, device=None) -> torch.optim.Optimizer:
    """The user's optimizer (as class `cls`, default its own) over the pieces `pieces_of[id(p)]`
    in place of each parameter p, group by group. A group of which this rank owns nothing keeps
    one empty placeholder, so the groups (and their options, which checkpoints save) stay the user's."""
    groups = []
    for group in optimizer.param_groups:
        pieces = [piece for p in group["params"] for piece in pieces_of.get(id(p), [])]
        if not pieces:
            pieces = [piece_parameter(torch.zeros(0, device=device), torch.zeros(0, device=device))]
        groups.append({**group_options(group), "params": pieces})
    return rebuild_optimizer(optimizer, cls or type(optimizer), groups)
