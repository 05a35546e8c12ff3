"""Building a mesh: process groups along each dimension, then the model split by tensor
parallelism, cut into pipeline stages, and joined to its data-parallel replicas."""

from __future__ import annotations

import torch.distributed as dist

from .. import comm
from ..errors import ConfigError
from ..pipeline.config import Pipeline
from ..pipeline.module import group_ranks, wrap_pipeline
from ..runtime import env
from ..strategy.optim_rebuild import optimizer_over_pieces
from ..tensor_parallel.module import split_model
from .replicas import make_replicas


def mesh_groups(shape, ranks: list[int], me: int) -> dict:
    """This rank's group along each dimension; every rank creates every group, in one order."""
    mine = {}
    for dim in ("tp", "pp", "dp"):
        for members in shape.groups(dim):
            group = dist.new_group([ranks[m] for m in members])
            if me in members:
                mine[dim] = group
    return mine


def wrap_mesh(config, module, optimizer, group=None):
    shape = config.shape
    ranks = group_ranks(group)
    if len(ranks) != shape.size:
        raise ConfigError(f"Mesh(dp={shape.dp}, pp={shape.pp}, tp={shape.tp}) needs {shape.size} ranks, got "
                          f"{len(ranks)}: launch {shape.size} processes (--nproc {shape.size}) or change the mesh")
    me = ranks.index(dist.get_rank())
    d, _, _ = shape.coords(me)
    groups = mesh_groups(shape, ranks, me)
    shapes = None
    slices: dict = {}
    if shape.tp > 1:
        replaced, slices, shapes = split_model(module, config.tensor_config(), groups["tp"])
        optimizer = optimizer_over_pieces(optimizer, {id(p): [replaced.get(id(p), p)]
                                                      for g in optimizer.param_groups for p in g["params"]})
    pipeline = config.pipeline_config() if shape.pp > 1 or config.pipeline is not None else Pipeline(stages=1,
                                                                                                     microbatches=1)
    wrapped, optimizer = wrap_pipeline(pipeline, module, optimizer, groups["pp"], shapes=shapes,
                                       agree_group=comm.default_group(group) or dist.group.WORLD)
    replicas = make_replicas(config.dp_strategy, groups["dp"], wrapped.local, optimizer)
    local = {id(p) for p in wrapped.local}
    wrapped.on_mesh({k: v for k, v in slices.items() if k in local},
                    groups["tp"] if shape.tp > 1 else None, replicas, groups["dp"])
    env.set_data_parallel(d, shape.dp)
    return wrapped, replicas.optimizer
