"""Put a full, by-name training state into a wrapped model and its optimizer, any strategy."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..strategy.prepare import parameter_names
from ..strategy.state import unwrap
from ..zero import state as zero_state


def check_same_model(model, shapes: dict[str, tuple], path: str) -> None:
    """The checkpoint's trainable parameters are exactly the model's, with the same shapes."""
    model_shapes = trainable_shapes(model)
    for name, shape in shapes.items():
        if name not in model_shapes:
            raise ConfigError(f"checkpoint {path} is of a different model: it has parameter '{name}', the model does not")
        if tuple(shape) != model_shapes[name]:
            raise ConfigError(f"checkpoint {path} is of a different model: '{name}' has shape {tuple(shape)} "
                              f"in the checkpoint but {model_shapes[name]} in the model")
    for name in model_shapes:
        if name not in shapes:
            raise ConfigError(f"checkpoint {path} is of a different model: it lacks parameter '{name}'")


def trainable_shapes(model) -> dict[str, tuple]:
    """Shapes of the trainable parameters as the user defined them (stage 3 holds them empty)."""
    engine = getattr(model, "engine", None)
    logical = {id(p): tuple(shape) for u in engine.units for p, shape in zip(u.params, u.shapes)} if engine else {}
    return {name: logical.get(id(p), tuple(p.shape)) for name, p in _named_trainable(unwrap(model))}


def _named_trainable(module):
    for name, p in module.named_parameters():
        if p.requires_grad:
            yield name, p


def load_full_state(model, optimizer, params: dict, optim: dict, whole: dict, groups: list[dict]) -> None:
    module = unwrap(model)
    by_name = dict(module.named_parameters())
    engine = getattr(model, "engine", None)
    with torch.no_grad():
        if engine is not None:
            engine.load_full_parameters({id(by_name[name]): value for name, value in params.items()})
        else:
            for name, value in params.items():
                by_name[name].copy_(value)
        tensors = {**dict(module.named_buffers()), **by_name}
        for name, value in whole.items():
            if name in tensors:
                tensors[name].copy_(value)
    if len(groups) != len(optimizer.param_groups):
        raise ConfigError(f"checkpoint has {len(groups)} optimizer parameter groups, the optimizer has {len(optimizer.param_groups)}")
    for group, saved in zip(optimizer.param_groups, groups):
        group.update(saved)
    if hasattr(optimizer, "_shardwise_client"):
        return  # a parameter server's optimizer state lives on the servers, which load it themselves
    if hasattr(optimizer, "_shardwise_engine"):
        zero_state.scatter_full_state(optimizer, parameter_names(module), optim)
        return
    for name, state in optim.items():
        param = by_name[name]
        optimizer.state[param] = {k: (v.to(param.device, param.dtype if v.is_floating_point() and v.ndim else v.dtype).clone()
                                      if torch.is_tensor(v) else v) for k, v in state.items()}
