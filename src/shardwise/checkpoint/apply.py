"""Put a full, by-name training state into a wrapped model and its optimizer, any strategy."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..strategy.module import ShardedState, unwrap


def check_same_model(shapes_now: dict[str, tuple], shapes: dict[str, tuple], path: str) -> None:
    """The checkpoint's trainable parameters (`shapes`) are exactly the model's, with the same shapes."""
    for name, shape in shapes.items():
        if name not in shapes_now:
            raise ConfigError(f"checkpoint {path} is of a different model: it has parameter '{name}', the model does not")
        if tuple(shape) != tuple(shapes_now[name]):
            raise ConfigError(f"checkpoint {path} is of a different model: '{name}' has shape {tuple(shape)} "
                              f"in the checkpoint but {tuple(shapes_now[name])} in the model")
    for name in shapes_now:
        if name not in shapes:
            raise ConfigError(f"checkpoint {path} is of a different model: it lacks parameter '{name}'")


def load_full_state(model, optimizer, state: ShardedState, params: dict, optim: dict, whole: dict,
                    groups: list[dict]) -> None:
    """Parameters and optimizer state through the strategy's state; buffers and frozen
    parameters (`whole`) into the inner module; the optimizer's group options as saved."""
    if len(groups) != len(optimizer.param_groups):
        raise ConfigError(f"checkpoint has {len(groups)} optimizer parameter groups, the optimizer has {len(optimizer.param_groups)}")
    state.load(params, optim)
    module = unwrap(model)
    with torch.no_grad():
        tensors = {**dict(module.named_buffers()), **dict(module.named_parameters())}
        for name, value in whole.items():
            if name in tensors:
                tensors[name].copy_(value)
    for group, saved in zip(optimizer.param_groups, groups):
        group.update(saved)
