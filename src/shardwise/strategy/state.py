"""What a wrapped model holds: its full state, and the bytes of its model states."""

from __future__ import annotations

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def full_state_dict(model: nn.Module) -> dict:
    """Full, unsharded parameters and buffers, keyed exactly as the unwrapped model's state_dict."""
    if hasattr(model, "full_state_dict"):
        return model.full_state_dict()
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes this rank holds for parameters, gradients and optimizer state, each storage once.

    A wrapper that keeps tensors the module does not show (flat buffers, shards) reports them
    through `model_state_tensors()`.
    """
    tensors = list(_model_tensors(model)) + list(_optimizer_tensors(optimizer))
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def _model_tensors(model: nn.Module):
    if hasattr(model, "model_state_tensors"):
        yield from model.model_state_tensors()
        return
    for p in model.parameters():
        yield p
        if p.grad is not None:
            yield p.grad


def _optimizer_tensors(optimizer):
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if torch.is_tensor(value) and value.numel() > 0 and value.untyped_storage().nbytes() > 0:
                yield value


def gathered(model: nn.Module):
    """`with sw.gathered(model):` the inner module holds its full parameters on every rank.

    A collective under ZeRO-3 (every rank enters and leaves it together); elsewhere parameters
    are already whole and it does nothing. Inside it, rank 0 alone may evaluate, sample or save
    the inner module (DeepSpeed's `GatheredParameters`, FSDP's `summon_full_params`).
    """
    if hasattr(model, "gathered"):
        return model.gathered()
    import contextlib

    return contextlib.nullcontext(model)
