"""The module side of ZeRO: the wrapper users call, for every stage.

Casts floating inputs to the compute dtype and outputs back to fp32 (so the loss is computed in
fp32), applies the fp16 loss scale to the gradient entering the model, and, for stage 3,
drives the gathering schedule.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils._pytree import tree_map

from .engine import ZeroEngine
from .stage3 import Stage3Schedule


class ZeroModule(nn.Module):
    def __init__(self, module: nn.Module, config, group=None):
        super().__init__()
        self.module = module
        self.strategy_name = config.name
        self.engine = ZeroEngine(module, config, group)
        self.schedule = Stage3Schedule(self.engine) if config.stage == 3 else None

    def forward(self, *args, **kwargs):
        engine = self.engine
        low_precision = engine.param_dtype != torch.float32
        if low_precision:
            args, kwargs = tree_map(lambda t: _cast(t, engine.param_dtype), (args, kwargs))
        if self.schedule is not None:
            self.schedule.before_forward()
        output = self.module(*args, **kwargs)
        if self.schedule is not None:
            self.schedule.after_forward(output)
        if low_precision:
            output = tree_map(lambda t: _cast(t, torch.float32), output)
        if engine.scaler is not None and torch.is_grad_enabled():
            output = tree_map(self._scale_gradient, output)
        return output

    def _scale_gradient(self, t):
        if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point():
            t.register_hook(lambda grad: grad * self.engine.scaler.scale)
        return t

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients in the unit buffers without communication (full size, 4Ψ bytes)."""
        previous, self.engine.sync = self.engine.sync, False
        try:
            yield
        finally:
            self.engine.sync = previous

    def full_state_dict(self) -> dict:
        """Full fp32 parameters (gathered from the master shards) and buffers, the module's keys."""
        values = self.engine.full_parameters()
        state = {}
        named = dict(self.module.named_parameters(remove_duplicate=False))
        for key, value in self.module.state_dict(keep_vars=True).items():
            p = named.get(key)
            if p is not None and id(p) in values:
                state[key] = values[id(p)]
            else:
                state[key] = value.detach().clone()
        return state

    def model_state_tensors(self):
        yield from self.engine.state_tensors()


def _cast(t, dtype):
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    return t
