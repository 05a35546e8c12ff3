"""`wrap` under a parameter server: split the ranks into servers and workers.

Every rank calls `wrap`. Server ranks serve until all workers are done or dropped, publish their
statistics, and end their part of the job (`launch` returns None for them; a script exits 0).
Worker ranks get the model and an optimizer whose step pushes and pulls; from then on
`sw.rank()`, `sw.world_size()` and collectives with the default group refer to the workers only.

In sync mode every rank wraps at once. In async and ssp modes a worker's wrap involves only the
servers, so a worker may start late: it joins with the parameters as they are then (join.py).
"""

from __future__ import annotations

import torch.distributed as dist

from ..errors import ConfigError
from ..flat.ranges import even_ranges
from ..runtime import env, progress
from ..strategy.prepare import broadcast_from_rank0, check_same_model, parameter_names, unique_parameters
from . import heartbeat, join
from .server import Server
from .worker import Client, WorkerModule, client_optimizer


def wrap_parameter_server(config, module, optimizer):
    world, rank = dist.get_world_size(), dist.get_rank()
    if world - config.servers < 1:
        raise ConfigError(f"a parameter server with {config.servers} server rank(s) needs at least "
                          f"{config.servers + 1} processes, got {world}")
    params = [p for p in unique_parameters(module) if p.requires_grad]
    ranges = even_ranges(sum(p.numel() for p in params), config.servers)  # each server's key range
    workers = list(range(config.servers, world))
    together = config.wraps_together  # sync: every rank is here; async/ssp: workers come when they come
    worker_group = server_group = None
    if together:
        worker_group = dist.new_group(workers)  # every rank takes part in creating it
        if config.servers > 1:  # servers agree on the clip norm over it (see [Note: ps clipping])
            server_group = dist.new_group(list(range(config.servers)))
    beats = None if together else heartbeat.Heartbeats(config.dead_after_s)
    if rank < config.servers:
        if not together:
            _agree_among_servers(module, config.servers)
        lo, hi = ranges[rank]
        names = parameter_names(module)
        server = Server(config, optimizer, params, lo, hi, workers, beats, [names[id(p)] for p in params], server_group)
        server.rank = rank
        stats = server.serve()
        if rank == 0 and not together:
            join.withdraw_model()  # every worker is done or dropped: none can join this wrap now
        heartbeat.publish_stats(rank, {"server": rank, "key_range": [lo, hi], **stats})
        raise progress.ServerFinished()
    if together:
        env.set_training_view(rank - config.servers, len(workers), worker_group)
    else:
        join.take_model(module, rank)
        env.set_training_view(rank - config.servers, len(workers),
                              make_group=lambda: dist.new_group(workers, use_local_synchronization=True))
    if beats is not None:  # beating first: a worker silent before its first beat counts as alive
        beats.start_beating(rank)
        progress.mark_expendable()
    wrapped = WorkerModule(module, config, worker_group, buffer_src=config.servers)  # async: no buffer sync
    client = Client(wrapped, ranges, rank, rank - config.servers, sync=together)
    wrapped.client = client
    client.join()
    progress.on_finish(client.finish)
    return wrapped, client_optimizer(optimizer, client)


def _agree_among_servers(module, servers: int) -> None:
    """Servers start from server 0's model; server 0 publishes it for workers joining later."""
    if servers > 1:
        group = dist.new_group(list(range(servers)), use_local_synchronization=True)
        check_same_model(module, group)
        broadcast_from_rank0(module, group)
    if dist.get_rank() == 0:
        join.publish_model(module)
