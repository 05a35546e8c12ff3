"""What every strategy does at wrap, before its own set-up: agree on the model across ranks,
start every rank from rank 0's parameters, and resolve the user's optimizer."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..errors import ConfigError


def group_rank0(group=None) -> int:
    """Global rank of the group's first member (broadcast sources are global ranks)."""
    return dist.get_global_rank(group, 0) if group is not None else 0


def model_signature(module: nn.Module) -> list[tuple[str, tuple, str]]:
    """(name, shape, dtype) of every parameter and buffer: what ranks must agree on."""
    return [(name, tuple(t.shape), str(t.dtype)) for name, t in _named_state(module)]


def check_same_model(module: nn.Module, group=None) -> None:
    """Raise ConfigError naming the first parameter or buffer whose name or shape differs."""
    everyone = comm.all_gather_object(model_signature(module), group)
    for other_rank, entries in enumerate(everyone[1:], start=1):
        compare_signatures(everyone[0], entries, other_rank)


def compare_signatures(reference: list, theirs: list, other_rank: int) -> None:
    """Raise ConfigError naming the first difference between rank 0's signature and another's."""
    reference = dict((name, (tuple(shape), dtype)) for name, shape, dtype in reference)
    theirs = dict((name, (tuple(shape), dtype)) for name, shape, dtype in theirs)
    for name, (shape, dtype) in reference.items():
        if name not in theirs:
            raise ConfigError(f"model differs between ranks at wrap: '{name}' exists on rank 0 but not on rank {other_rank}")
        if theirs[name] != (shape, dtype):
            raise ConfigError(
                f"model differs between ranks at wrap: '{name}' is {_describe(shape, dtype)} on rank 0 "
                f"but {_describe(*theirs[name])} on rank {other_rank}"
            )
    for name in theirs:
        if name not in reference:
            raise ConfigError(f"model differs between ranks at wrap: '{name}' exists on rank {other_rank} but not on rank 0")


def broadcast_from_rank0(module: nn.Module, group=None) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all ranks start equal."""
    src = group_rank0(group)
    with torch.no_grad():
        for _, tensor in _named_state(module):
            comm.broadcast(tensor.data, src=src, group=group)


def resolve_optimizer(optimizer, module: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer if a factory was given, and check it suits a fresh wrap."""
    trainable = [p for p in unique_parameters(module) if p.requires_grad]
    if not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise ConfigError(f"optimizer must be a torch.optim.Optimizer or a callable params -> Optimizer, got {type(optimizer).__name__}")
        optimizer = optimizer(trainable)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError("the optimizer factory did not return a torch.optim.Optimizer")
    if any(len(s) for s in optimizer.state.values()):
        raise ConfigError("the optimizer has already taken a step; wrap it before training starts")
    own = {id(p) for p in unique_parameters(module)}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in own:
                raise ConfigError(f"the optimizer holds a tensor of shape {tuple(p.shape)} that is not a parameter of the model")
    return optimizer


def unique_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters in registration order, a tied parameter once."""
    return list(module.parameters())


def parameter_names(module: nn.Module) -> dict[int, str]:
    """id(param) -> its first name in the model (a tied parameter keeps its first name)."""
    names: dict[int, str] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), name)
    return names


def _named_state(module: nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def _describe(shape, dtype) -> str:
    return f"shape {tuple(shape)} {dtype.replace('torch.', '')}"
