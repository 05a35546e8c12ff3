"""What a wrapped model holds: its full state, its parameters gathered, the bytes of its model states."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .module import state_of, strategy_module, unwrap


def full_state_dict(model: nn.Module) -> dict:
    """Full, unsharded parameters and buffers, keyed exactly as the unwrapped model's state_dict."""
    wrapped = strategy_module(model)
    if wrapped is not None:
        return wrapped.full_state_dict()
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes this rank holds for parameters, gradients and optimizer state, each storage once."""
    seen: dict[int, int] = {}
    for t in state_of(model, optimizer).tensors():
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def gathered(model: nn.Module):
    """`with sw.gathered(model):` the inner module holds its full parameters on every rank.

    A collective under ZeRO-3 (every rank enters and leaves it together); elsewhere parameters
    are already whole and it does nothing. Inside it, rank 0 alone may evaluate, sample or save
    the inner module (DeepSpeed's `GatheredParameters`, FSDP's `summon_full_params`).
    """
    wrapped = strategy_module(model)
    return wrapped.gathered() if wrapped is not None else contextlib.nullcontext(model)
