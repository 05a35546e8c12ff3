"""What each rank writes (see [Note: checkpoint format]).

Every rank writes the pieces its strategy says it owns (strategy/pieces.py): under ZeRO its
shards of the fp32 masters, under a replicated strategy an even split of each parameter, so
that saving is spread over the ranks either way. Rank 0 adds the buffers and frozen
parameters. Any set of shards that covers every element reassembles (`assemble`).
"""

from __future__ import annotations

from torch import nn

from ..strategy.module import ShardedState, unwrap
from ..strategy.pieces import to_file


def local_shard(model: nn.Module, state: ShardedState, rank: int, world_size: int) -> dict:
    """This rank's part of the checkpoint: {"params": {name: [(start, end, values)]}, "optim": ...}."""
    shard = to_file(state.pieces(rank, world_size))
    if rank == 0:
        shard["whole"] = {name: t.detach().cpu().clone() for name, t in _whole_tensors(unwrap(model))}
    return shard


def _whole_tensors(module: nn.Module):
    """Buffers and frozen parameters: the same on every rank, saved once."""
    for name, p in module.named_parameters():
        if not p.requires_grad:
            yield name, p
    yield from module.named_buffers()
