"""The wrapped model of a pipeline: this rank's stages, its optimizer, its share of the state.

Every rank builds the whole model (the same seed gives the same parameters); `wrap` keeps the
layers of this rank's stages and frees the storage of every other trainable parameter, so a
rank holds about 1/P of the parameters, gradients and optimizer state. The optimizer is rebuilt
over the parameters this rank keeps (same class, options and groups). A parameter shared by
stages on several ranks (tied embeddings) is kept by each, and its gradients are summed over
them every step; the lowest of those ranks saves it.

On a mesh (shardwise.mesh) the same module also carries the mesh's other dimensions: the
layers may be tensor-parallel slices (`slices`, gathered by `full_state_dict` over `tp_group`)
and `replicas` meets the other data-parallel replicas after each step's backward.
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
from ..strategy.parts_state import PartsState, Share
from ..strategy.prepare import parameter_names
from ..strategy.slices import gather_full
from .layers import layer_weights, pipeline_layers
from .runner import PipelineRunner, Stage
from .schedules import make_schedule
from .split import balanced_bounds, bounds_at
from .timing import timed_layers


class LocalGradients:
    """What a pipeline does with its gradients after a step's backward when it has no other
    replicas: nothing. The mesh's data-parallel replicas (mesh/replicas.py) extend it."""

    splits_optimizer = False

    def __init__(self, local: list[nn.Parameter]):
        self.local = [p for p in local if p.requires_grad]

    def after_backward(self) -> None:
        pass

    def norm_part(self, counts, norm_type: float) -> torch.Tensor:
        """Σ |g|^norm_type over the gradient elements this rank counts."""
        total = torch.zeros((), dtype=torch.float64)
        for p in self.local:
            if p.grad is not None and counts(p):
                total += p.grad.double().abs().pow(norm_type).sum()
        return total

    def scale(self, coef: float) -> None:
        for p in self.local:
            if p.grad is not None:
                p.grad.mul_(coef)

    def shares(self, p: nn.Parameter) -> list[Share]:
        return [Share(0, p.numel(), p)]

    def own_tensors(self) -> list[torch.Tensor]:
        return []


def group_ranks(group) -> list[int]:
    group = comm.default_group(group)
    return list(dist.get_process_group_ranks(group)) if group is not None else list(range(dist.get_world_size()))


def _layers(module: nn.Module, stages: int) -> list[tuple[str, nn.Module]]:
    if stages == 1 and not (hasattr(module, "pipeline_layers") or isinstance(module, nn.Sequential)):
        return [("", module)]  # one stage: the model as it is
    return pipeline_layers(module)


def _agreed_times(module, layers, example, group) -> list[float]:
    """Each layer's measured time averaged over `group`, so that every rank cuts alike."""
    times = torch.tensor(timed_layers(module, layers, example), dtype=torch.float64)
    comm.all_reduce(times, group=comm.default_group(group))
    return times.tolist()


def wrap_pipeline(config, module: nn.Module, optimizer, group=None, shapes: dict | None = None, agree_group=None):
    """(PipelineModule, optimizer over this rank's parameters). `shapes`: the parameters' full
    shapes by name when the model was already split (tensor parallelism). `agree_group`: the
    ranks that must cut the model alike (a mesh's every rank; default `group`)."""
    ranks = group_ranks(group)
    if len(ranks) != config.stages:
        raise ConfigError(f"Pipeline(stages={config.stages}) needs {config.stages} ranks in its group, got "
                          f"{len(ranks)}: launch {config.stages} processes, or use sw.Mesh to add data or tensor "
                          f"parallelism")
    schedule = make_schedule(config.schedule, config.stages, config.microbatches, config.virtual)
    layers = _layers(module, schedule.stages)
    names = [name for name, _ in layers]
    if config.split is None:
        bounds = balanced_bounds(layer_weights(layers), schedule.stages)
    elif config.split == "auto":
        bounds = balanced_bounds(_agreed_times(module, layers, config.example, group if agree_group is None else agree_group), schedule.stages)
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
    if shapes is None:
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
    return PipelineModule(module, runner, local, owned, shapes, param_names), optimizer


class PipelineModule(StrategyModule):
    """Trains with `train_step(inputs, targets, loss_fn)`; evaluates with `eval_step`."""

    strategy_name = "pipeline"

    def __init__(self, module, runner: PipelineRunner, local, owned, shapes, param_names):
        super().__init__(module)
        self.runner, self.local, self.owned, self.shapes = runner, local, owned, shapes
        self.param_names = param_names
        self.slices: dict = {}
        self.tp_group, self.tp_rank = None, 0
        self.replicas, self.dp_group = LocalGradients(local), None

    def on_mesh(self, slices: dict, tp_group, replicas, dp_group) -> None:
        """Join the mesh's other dimensions (tensor-parallel slices, data-parallel replicas)."""
        self.slices, self.tp_group, self.replicas, self.dp_group = slices, tp_group, replicas, dp_group
        self.tp_rank = dist.get_rank(tp_group) if tp_group is not None else 0

    def forward(self, *args, **kwargs):
        if len(self.runner.stages) == 1 and self.runner.schedule.stages == 1:
            return self.module(*args, **kwargs)
        raise ConfigError("a pipeline-parallel model runs whole batches through its stages: train with "
                          "model.train_step(inputs, targets, loss_fn) and evaluate with model.eval_step(inputs, "
                          "targets, loss_fn)")

    def train_step(self, inputs, targets, loss_fn) -> torch.Tensor:
        """Forward and backward of the batch through the pipeline; `.grad` then holds the
        gradient of the mean loss (averaged over data-parallel replicas on a mesh). Returns
        the mean loss on every rank (over the replicas' batches on a mesh)."""
        loss = self.runner.train_step(inputs, targets, loss_fn)
        if self._sync:
            self.replicas.after_backward()
        return self._replica_mean(loss)

    def record_steps(self, on: bool = True) -> None:
        """Record what each following step runs, when (perf_counter), and the activation bytes
        kept for backward; read it from `last_step_record()` (costs a little time per action)."""
        self.runner.recording = on

    def last_step_record(self):
        """The `StepRecord` of the last recorded training step on this rank, or None."""
        return self.runner.last_record

    def eval_step(self, inputs, targets, loss_fn) -> torch.Tensor:
        return self._replica_mean(self.runner.eval_step(inputs, targets, loss_fn))

    def _replica_mean(self, loss: torch.Tensor) -> torch.Tensor:
        if self.dp_group is not None and comm.group_size(self.dp_group) > 1:
            loss = loss / comm.group_size(self.dp_group)
            comm.all_reduce(loss, group=self.dp_group)
        return loss

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """`torch.nn.utils.clip_grad_norm_` for the whole model: the norm of the (averaged)
        gradient over every stage, tensor slice and replica shard, each element once; scales
        what the optimizer will step on by min(1, max_norm / (norm + 1e-6)). Returns the norm on
        every rank. A collective over the whole mesh."""
        norm_type = float(norm_type)
        if not 0 < norm_type < float("inf"):
            raise ConfigError(f"clip_grad_norm_ on a pipeline or tensor-parallel model takes a finite positive "
                              f"norm_type, got {norm_type}")
        total = self.replicas.norm_part(self._counts, norm_type)
        if self.tp_group is not None:
            comm.all_reduce(total, group=self.tp_group)
        comm.all_reduce(total, group=self.runner.group)
        norm = total ** (1.0 / norm_type)
        coef = float(max_norm) / (float(norm) + 1e-6)
        if coef < 1:
            self.replicas.scale(coef)
        return norm.float()

    def _counts(self, p) -> bool:
        """Whether this rank counts p's gradient in the norm: the first stage holding p, and for
        what is not split over the tensor-parallel ranks, their rank 0."""
        return id(p) in self.owned and (id(p) in self.slices or self.tp_rank == 0)

    @contextlib.contextmanager
    def gathered(self):
        raise ConfigError("a pipeline's parameters live on their stages' ranks: use model.full_state_dict()")
        yield  # pragma: no cover

    def full_state_dict(self) -> dict:
        """Every parameter and buffer, whole, on every rank (collectives over the mesh)."""
        local_buffers = {id(b) for stage in self.runner.stages.values() for b in stage.buffers()}
        everything = self.module.state_dict(keep_vars=True)
        mine = {}
        for key, value in everything.items():
            if id(value) not in self.owned and id(value) not in local_buffers:
                continue
            cut = self.slices.get(id(value))
            mine[key] = gather_full(value, cut, self.tp_group) if cut is not None else value.detach().cpu().clone()
        merged: dict = {}
        for part in comm.all_gather_object(mine, group=self.runner.group):
            merged.update(part)
        return {k: merged[k] for k in everything if k in merged}

    def state(self, optimizer):
        return PartsState(optimizer, self.local, self.param_names, self.shapes, self._saves, self.slices,
                          shares=self.replicas.shares, own=self.replicas.own_tensors())

    def _saves(self, p) -> bool:
        """One copy of every element: the first stage holding p; tensor-parallel rank 0 for what
        is not split; replica 0 unless the replicas split the optimizer (then each its part)."""
        if id(p) not in self.owned:
            return False
        if id(p) not in self.slices and self.tp_rank != 0:
            return False
        return self.replicas.splits_optimizer or self.dp_group is None or dist.get_rank(self.dp_group) == 0
