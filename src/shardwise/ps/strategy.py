"""`wrap` under a parameter server: split the ranks into servers and workers.

Every rank calls `wrap`. Server ranks serve until all workers are done or dropped, publish their
statistics, and end their part of the job (`launch` returns None for them; a script exits 0).
Worker ranks get the model and an optimizer whose step pushes and pulls; from then on
`sw.rank()`, `sw.world_size()` and collectives with the default group refer to the workers only.
"""

from __future__ import annotations

import torch.distributed as dist

from ..errors import ConfigError
from ..runtime import env, progress
from ..strategy.prepare import parameter_names, unique_parameters
from . import heartbeat
from .keys import key_ranges
from .server import Server
from .worker import Client, WorkerModule, client_optimizer


def wrap_parameter_server(config, module, optimizer):
    world, rank = dist.get_world_size(), dist.get_rank()
    if world - config.servers < 1:
        raise ConfigError(f"a parameter server with {config.servers} server rank(s) needs at least "
                          f"{config.servers + 1} processes, got {world}")
    params = [p for p in unique_parameters(module) if p.requires_grad]
    ranges = key_ranges(sum(p.numel() for p in params), config.servers)
    workers = list(range(config.servers, world))
    worker_group = dist.new_group(workers)  # every rank takes part in creating it
    beats = heartbeat.Heartbeats(config.dead_after_s) if config.mode != "sync" else None
    if rank < config.servers:
        lo, hi = ranges[rank]
        names = parameter_names(module)
        server = Server(config, optimizer, params, lo, hi, workers, beats, [names[id(p)] for p in params])
        server.rank = rank
        heartbeat.publish_stats(rank, {"server": rank, "key_range": [lo, hi], **server.serve()})
        raise progress.ServerFinished()
    env.set_training_view(rank - config.servers, len(workers), worker_group)
    if beats is not None:
        progress.mark_expendable()
        beats.start_beating(rank)
    wrapped = WorkerModule(module, config)
    client = Client(wrapped, ranges, rank, rank - config.servers)
    client.join()
    progress.on_finish(client.finish)
    return wrapped, client_optimizer(optimizer, client)
