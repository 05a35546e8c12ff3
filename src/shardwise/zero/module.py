"""The module side of ZeRO: the wrapper users call, for every stage.

Casts floating inputs to the compute dtype and outputs back to fp32 (so the loss is computed in
fp32), applies the fp16 loss scale to the gradient entering the model, and, for stage 3,
drives the gathering schedule.

[Note: ZeRO state dicts]
The wrapped model's `state_dict()` is PyTorch DDP's: the inner module's full state under the
`module.` prefix, fp32 parameters. Where this rank does not hold that state (stage 3's sharded
parameters, or fp32 masters sharded under low-precision compute) it is gathered: a collective,
every rank calls it. Under stage 3 the inner module's own `state_dict()` would see empty
parameters, so it raises one line naming the alternatives, except inside `gathered()`, where the
parameters are whole and rank 0 alone may read or save them (nanoGPT's
`torch.save(raw_model.state_dict())`). `load_state_dict` takes either key form.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys
from torch.utils._pytree import tree_map

from ..comm.collectives import CollectiveError
from ..errors import ConfigError
from ..strategy.module import StrategyModule
from .engine import ZeroEngine
from .stage3 import Stage3Schedule
from .state import ZeroState


class ZeroModule(StrategyModule):
    def __init__(self, module: nn.Module, config, group=None):
        super().__init__(module)
        self.strategy_name = config.name
        self.engine = ZeroEngine(module, config, group)
        self.schedule = Stage3Schedule(self.engine) if config.stage == 3 else None
        self._gathered_depth = 0  # inside gathered(): forwards communicate nothing
        self._reading_inner = 0  # the wrapper itself reads the inner module's state
        if self.schedule is not None:  # see [Note: ZeRO state dicts]
            sharded = {id(p) for unit in self.engine.units for p in unit.params}
            for m in module.modules():
                if any(id(p) in sharded for p in m.parameters(recurse=False)) or m is module:
                    m.register_state_dict_pre_hook(self._refuse_sharded_state_dict)

    def forward(self, *args, **kwargs):
        engine = self.engine
        if not self._gathered_depth:  # inside gathered() some ranks may run a forward alone
            if self.schedule is not None:  # a failed broadcast there means ranks' forwards differ
                self.schedule.in_forward_collective(engine.before_forward)
            else:
                engine.before_forward()  # drop last step's .grad views; broadcast buffers as DDP does
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

    def sync_changed(self, sync: bool) -> None:
        """Without sync (`no_sync()`), gradients accumulate in the unit buffers without
        communication (full size, 4Ψ bytes)."""
        self.engine.sync = sync

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradient shards too (nn.Module's would only drop the `.grad` views)."""
        self.engine.zero_grad()
        super().zero_grad(set_to_none)

    @contextlib.contextmanager
    def gathered(self):
        """Every rank holds the inner module's full parameters for the duration (a collective under
        stage 3: every rank enters and leaves together; stages 1-2 hold them already).

        Inside it a rank may run the model alone (`model(x)` or `model.module(x)` under
        torch.no_grad()), sample, or read and save `model.module.state_dict()`: no forward
        inside it communicates. Read-only: parameters are the compute-dtype values gathered on
        entry and are dropped on exit, so in-place changes made inside are NOT kept (unlike
        DeepSpeed's GatheredParameters(modifier_rank=0)); change parameters with
        `model.load_state_dict(...)` on every rank instead.
        """
        self._gathered_depth += 1
        try:
            if self.schedule is None:
                yield self.module
            else:
                with self.schedule.summon_full():
                    yield self.module
        finally:
            self._gathered_depth -= 1

    def _refuse_sharded_state_dict(self, module, prefix, keep_vars) -> None:
        if self._reading_inner or self.schedule.summoned:
            return
        raise ConfigError("under zero3 the inner module's parameters are sharded, so its state_dict() would hold empty "
                          "tensors: call the wrapped model's state_dict() or sw.full_state_dict(model) on every rank, or "
                          "read it inside `with sw.gathered(model):` (entered by every rank)")

    @contextlib.contextmanager
    def _inner_access(self):
        self._reading_inner += 1
        try:
            yield self.module
        finally:
            self._reading_inner -= 1

    def _state_is_local(self) -> bool:
        """Whether this rank holds the full fp32 state (else reading it is a collective)."""
        if self.schedule is not None:
            return self.schedule.summoned and self.engine.param_dtype == torch.float32
        return self.engine.param_dtype == torch.float32

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """PyTorch DDP's form (see [Note: ZeRO state dicts]); a collective under stage 3."""
        if self._state_is_local():
            with self._inner_access():
                return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if destination is None:
            destination = OrderedDict()
        for key, value in self.full_state_dict().items():
            destination[f"{prefix}module.{key}"] = value
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a full state, keyed as `state_dict()` gives it (`module.` prefix) or as the inner
        module's; every rank calls it with the same values. No communication, unless `strict`
        is False and some parameter is missing (its current value is then gathered)."""
        if assign:
            raise ConfigError("ZeRO keeps parameters in flat shards: load_state_dict(assign=True) is not supported")
        prefixed = bool(state_dict) and all(k.startswith("module.") for k in state_dict)
        given = {k[len("module."):] if prefixed else k: v for k, v in state_dict.items()}
        with self._inner_access():
            expected = list(self.module.state_dict(keep_vars=True))
        missing = [k for k in expected if k not in given]
        unexpected = [k for k in given if k not in set(expected)]
        if strict and (missing or unexpected):
            raise ConfigError(f"state dict does not match the model: missing keys {missing[:5]}, unexpected keys "
                              f"{unexpected[:5]}")
        named = dict(self.module.named_parameters(remove_duplicate=False))
        shapes = {id(p): shape for unit in self.engine.units for p, shape in zip(unit.params, unit.shapes)}
        values = {}
        for key, p in named.items():
            if id(p) in shapes and key in given:
                if tuple(given[key].shape) != tuple(shapes[id(p)]):
                    raise ConfigError(f"state dict entry '{key}' has shape {tuple(given[key].shape)}, the model's is "
                                      f"{tuple(shapes[id(p)])}")
                values[id(p)] = given[key].detach().float()
        if len(values) < len(shapes):
            current = self.engine.full_parameters()
            values = {**current, **values}
        self.engine.load_full_parameters(values)
        with torch.no_grad(), self._inner_access():
            whole = {**dict(self.module.named_buffers()), **{k: p for k, p in named.items() if id(p) not in shapes}}
            for key, tensor in whole.items():
                if key in given:
                    tensor.copy_(given[key])
        if prefixed:
            missing, unexpected = [f"module.{k}" for k in missing], [f"module.{k}" for k in unexpected]
        return _IncompatibleKeys(missing, unexpected)

    def full_state_dict(self) -> dict:
        """Full fp32 parameters (gathered from the master shards) and buffers, the module's keys.
        A collective: a rank that asks alone fails after the collective timeout, saying so."""
        try:
            values = self.engine.full_parameters()
        except CollectiveError as exc:
            raise ConfigError(f"{self.strategy_name}: the full state is gathered from every rank's shard, so every rank "
                              "must call model.state_dict() / sw.full_state_dict(model) together; to save from rank 0 "
                              f"alone, do it inside `with sw.gathered(model):` ({str(exc).splitlines()[0]})") from exc
        state = {}
        named = dict(self.module.named_parameters(remove_duplicate=False))
        with self._inner_access():
            inner_state = self.module.state_dict(keep_vars=True)
        for key, value in inner_state.items():
            p = named.get(key)
            if p is not None and id(p) in values:
                state[key] = values[id(p)]
            else:
                state[key] = value.detach().clone()
        return state

    def state(self, optimizer) -> ZeroState:
        return ZeroState(self.engine, self.module, optimizer)

    def skipped_steps_in_a_row(self) -> int:
        scaler = self.engine.scaler
        return 0 if scaler is None else scaler.skipped_in_a_row

    def buffer_bytes(self) -> int:
        return self.engine.buffer_bytes()


def _cast(t, dtype):
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    return t
