"""The wrapped model of tensor parallelism: Linear layers split in place, the optimizer rebuilt
over the slices, full tensors put back together on request."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..errors import ConfigError
from ..strategy.module import StrategyModule
from ..strategy.optim_rebuild import optimizer_over_pieces
from ..strategy.parts_state import PartsState, Slice
from ..strategy.prepare import parameter_names
from ..strategy.slices import gather_full
from .apply import resolve_plan, split_linears


def split_model(module: nn.Module, config, group) -> tuple[dict, dict, dict[str, tuple]]:
    """Split `module` in place over `group` as the TensorParallel `config` says; ({id(old): new},
    {id(new): Slice}, full shapes by name)."""
    group = comm.default_group(group)
    size, rank = comm.group_size(group), dist.get_rank(group)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters() if p.requires_grad}
    plan = resolve_plan(module, config.plan, config.vocab, config.split_logits)
    replaced, slices = split_linears(module, plan, group, size, rank)
    return replaced, slices, shapes


def full_local_state(module: nn.Module, slices: dict[int, Slice], group) -> dict:
    """This rank's state_dict with every split parameter put back together (a collective)."""
    out = {}
    for key, value in module.state_dict(keep_vars=True).items():
        cut = slices.get(id(value))
        out[key] = gather_full(value, cut, group) if cut is not None else value.detach().cpu().clone()
    return out


def wrap_tensor_parallel(config, module: nn.Module, optimizer, group=None, dp_group=None):
    group = comm.default_group(group)
    if comm.group_size(group) != config.size:
        raise ConfigError(f"TensorParallel(size={config.size}) needs {config.size} ranks in its group, got "
                          f"{comm.group_size(group)}: launch {config.size} processes, or use sw.Mesh with tp={config.size}")
    replaced, slices, shapes = split_model(module, config, group)
    optimizer = optimizer_over_pieces(optimizer, {id(p): [replaced.get(id(p), p)] for g in optimizer.param_groups
                                                  for p in g["params"]})
    return TensorParallelModule(module, group, slices, shapes, dp_group), optimizer


class TensorParallelModule(StrategyModule):
    """Forward and backward as usual (the split layers communicate); `train_step` as a mesh's."""

    strategy_name = "tensor-parallel"

    def __init__(self, module, group, slices: dict[int, Slice], shapes: dict[str, tuple], dp_group=None):
        super().__init__(module)
        self.group, self.slices, self.shapes, self.dp_group = group, slices, shapes, dp_group
        self.tp_rank = dist.get_rank(group)

    @property
    def tp_group(self):
        """The tensor-parallel group (for a loss over split logits, `vocab_parallel_cross_entropy`)."""
        return self.group

    def train_step(self, inputs, targets, loss_fn) -> torch.Tensor:
        loss = loss_fn(self(inputs), targets)
        loss.backward()
        return loss.detach()

    def eval_step(self, inputs, targets, loss_fn) -> torch.Tensor:
        with torch.no_grad():
            return loss_fn(self(inputs), targets).detach()

    def full_state_dict(self) -> dict:
        return full_local_state(self.module, self.slices, self.group)

    def state(self, optimizer):
        local = list(self.module.parameters())
        return PartsState(optimizer, local, parameter_names(self.module), self.shapes, self._saves, self.slices)

    def _saves(self, p) -> bool:
        """Every rank its slices; tensor-parallel rank 0 what is whole."""
        return id(p) in self.slices or self.tp_rank == 0
