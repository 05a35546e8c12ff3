"""The wrapped model of a pipeline: this rank's stages, its optimizer, its share of the state.

Every rank builds the whole model (the same seed gives the same parameters); `wrap` keeps the
layers of this rank's stages and frees the storage of every other parameter, so a rank holds
about 1/P of the parameters, gradients and optimizer state. The optimizer is rebuilt over the
parameters this rank keeps (same class, options and groups). A parameter shared by stages on
several ranks (tied embeddings) is kept by each, and its gradients are summed over them every
step; the lowest of those ranks saves it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..errors import ConfigError
from ..strategy.module import StrategyModule
from ..strategy.optim_rebuild import optimizer_over_pieces
from ..strategy.parts_state import PartsState
from ..strategy.prepare import parameter_names
from .layers import layer_weights, pipeline_layers
from .runner import PipelineRunner, Stage
from .schedules import make_schedule
from .split import balanced_bounds, bounds_at


def group_ranks(group) -> list[int]:
    group = comm.default_group(group)
    return list(dist.get_process_group_ranks(group))


def wrap_pipeline(config, module: nn.Module, optimizer, group=None, dp_group=None):
    ranks = group_ranks(group)
    if len(ranks) != config.stages:
        raise ConfigError(f"Pipeline(stages={config.stages}) needs {config.stages} ranks in its group, got "
                          f"{len(ranks)}: launch {config.stages} processes, or use sw.Mesh to add data or tensor "
                          f"parallelism")
    schedule = make_schedule(config.schedule, config.stages, config.microbatches, config.virtual)
    layers = pipeline_layers(module)
    names = [name for name, _ in layers]
    if config.split is None:
        bounds = balanced_bounds(layer_weights(layers), schedule.stages)
    elif config.split == "auto":
        raise ConfigError("split='auto' is not available yet: pass split=None (balanced parameter counts) or the "
                          "names of the layers that start each stage")
    else:
        bounds = bounds_at(names, list(config.split), schedule.stages)
    me = ranks.index(dist.get_rank())
    stages = {s: Stage([layers[i][1] for i in range(*bounds[s])]) for s in schedule.stages_of(me)}

    holders: dict[int, set[int]] = {}
    for s, (start, end) in enumerate(bounds):
        for i in range(start, end):
            for p in layers[i][1].parameters():
                holders.setdefault(id(p), set()).add(schedule.rank_of(s))
    param_names = parameter_names(module)
    shapes = {param_names[id(p)]: tuple(p.shape) for p in module.parameters() if p.requires_grad}
    local = [p for p in module.parameters() if me in holders.get(id(p), ())]
    local_ids = {id(p) for p in local}
    tied = [(p, sorted(ranks[r] for r in holders[id(p)])) for p in local if len(holders[id(p)]) > 1]
    owned = {id(p) for p in local if min(holders[id(p)]) == me}
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in local_ids and p.requires_grad:
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)  # another rank's: storage freed
                p.grad = None
    optimizer = optimizer_over_pieces(optimizer, {id(p): [p] for p in local})
    runner = PipelineRunner(schedule, stages, ranks, comm.default_group(group), tied)
    wrapped = PipelineModule(module, runner, local, owned, shapes, param_names, bounds, names, dp_group)
    return wrapped, optimizer


class PipelineModule(StrategyModule):
    """Trains with `train_step(inputs, targets, loss_fn)`; evaluates with `eval_step`."""

    strategy_name = "pipeline"

    def __init__(self, module, runner: PipelineRunner, local, owned, shapes, param_names, bounds, layer_names,
                 dp_group=None):
        super().__init__(module)
        self.runner, self.local, self.owned, self.shapes = runner, local, owned, shapes
        self.param_names = param_names
        self.stage_layers = {s: layer_names[a:b] for s, (a, b) in enumerate(bounds)}
        self.dp_group = dp_group

    def forward(self, *args, **kwargs):
        raise ConfigError("a pipeline-parallel model runs whole batches through its stages: train with "
                          "model.train_step(inputs, targets, loss_fn) and evaluate with model.eval_step(inputs, "
                          "targets, loss_fn)")

    def train_step(self, inputs, targets, loss_fn) -> torch.Tensor:
        """Forward and backward of the whole batch through the pipeline; `.grad` then holds the
        gradient of the mean loss (averaged over data-parallel replicas if any). Returns the mean
        loss on every rank."""
        loss = self.runner.train_step(inputs, targets, loss_fn)
        if self.dp_group is not None and self._sync:
            self._average_over_replicas()
            loss = loss / comm.group_size(self.dp_group)
            comm.all_reduce(loss, group=self.dp_group)
        return loss

    def eval_step(self, inputs, targets, loss_fn) -> torch.Tensor:
        loss = self.runner.eval_step(inputs, targets, loss_fn)
        if self.dp_group is not None:
            loss = loss / comm.group_size(self.dp_group)
            comm.all_reduce(loss, group=self.dp_group)
        return loss

    def _average_over_replicas(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.local]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]).div_(comm.group_size(self.dp_group))
        comm.all_reduce(flat, group=self.dp_group)
        at = 0
        for p in self.local:
            n = p.numel()
            p.grad = flat[at:at + n].view_as(p).clone()
            at += n

    @contextlib.contextmanager
    def gathered(self):
        raise ConfigError("a pipeline's parameters live on their stages' ranks: use model.full_state_dict()")
        yield  # pragma: no cover

    def full_state_dict(self) -> dict:
        """Every parameter and buffer, from the rank that holds it, on every rank of the pipeline."""
        local_buffers = {id(b) for stage in self.runner.stages.values() for b in stage.buffers()}
        everything = self.module.state_dict(keep_vars=True)
        mine = {k: v.detach().cpu().clone() for k, v in everything.items()
                if id(v) in self.owned or id(v) in local_buffers}
        merged: dict = {}
        for part in comm.all_gather_object(mine, group=self.runner.group):
            merged.update(part)
        return {k: merged[k] for k in everything if k in merged}

    def state(self, optimizer):
        return PartsState(optimizer, self.local, self.param_names, self.shapes, self._saves)

    def _saves(self, p) -> bool:
        """The first rank holding p saves it, in data-parallel replica 0."""
        return id(p) in self.owned and (self.dp_group is None or dist.get_rank(self.dp_group) == 0)

    def own_tensors(self):
        return ()
