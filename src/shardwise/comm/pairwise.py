"""Reduce-scatter and all-gather as direct pairwise exchanges over point-to-point messages.

[Note: gloo pairwise collectives]
Gloo's own reduce_scatter and all_gather are slow on CPU: on 2 ranks, for 33.6 MB, an
all_reduce took 26 ms, reduce_scatter_single 46 ms and all_gather_single 41 ms, although
both move half an all-reduce's bytes. Every rank sending each peer the chunk that peer owns
(isend/irecv, all in flight at once) moves exactly the ring volume, (N-1)/N·S bytes per rank,
and took 15 ms for each on 2 ranks and 26-28 ms on 4 (all_reduce: 57-63 ms). So on gloo the
communication layer uses these; on NCCL the library's native collectives.

The handle's `wait()` finishes the work: for reduce-scatter it sums the received chunks into
the output in rank order, so the result does not depend on message arrival order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class PairwiseWork:
    """Requests in flight plus what to do once they have all completed."""

    def __init__(self, requests, finish=None):
        self._requests = requests
        self._finish = finish

    def wait(self) -> bool:
        for request in self._requests:
            request.wait()
        self._requests = []
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return True


def _peers(group):
    n, me = dist.get_world_size(group), dist.get_rank(group)
    # Start with the next rank, so that not every rank talks to rank 0 first.
    order = [(me + k) % n for k in range(1, n)]
    return me, [(j, dist.get_global_rank(group, j) if group is not None else j) for j in order]


def reduce_scatter(output: torch.Tensor, full_input: torch.Tensor, group=None, scratch: torch.Tensor | None = None,
                   tag: int = 0) -> PairwiseWork:
    """output := sum over ranks of chunk `my_rank` of `full_input` (1D, numel divisible by N).

    `output` may be this rank's own chunk of `full_input` (in place). `scratch`, if given, holds
    the (N-1) received chunks (at least (N-1)/N of the input's elements), else they are allocated.
    Messages carry `tag`: they pair only with a peer's reduce_scatter of the same tag.
    """
    n = dist.get_world_size(group)
    chunks = full_input.chunk(n)
    me, peers = _peers(group)
    chunk = chunks[me].numel()
    if scratch is None:
        scratch = torch.empty((n - 1) * chunk, dtype=full_input.dtype, device=full_input.device)
    received = {}
    requests = []
    for k, (j, peer) in enumerate(peers):
        received[j] = scratch[k * chunk:(k + 1) * chunk]
        requests.append(dist.isend(chunks[j], peer, group=group, tag=tag))
        requests.append(dist.irecv(received[j], peer, group=group, tag=tag))

    def finish() -> None:
        if output.data_ptr() != chunks[me].data_ptr():
            output.copy_(chunks[me])
        for j in range(n):
            if j != me:
                output.add_(received[j])

    return PairwiseWork(requests, finish)


def all_gather(full_output: torch.Tensor, shard: torch.Tensor, group=None, tag: int = 0) -> PairwiseWork:
    """full_output := every rank's `shard` in rank order (`shard` may be its own chunk of it).

    Messages carry `tag`: they pair only with a peer's all_gather of the same tag."""
    n = dist.get_world_size(group)
    chunks = full_output.chunk(n)
    me, peers = _peers(group)
    if chunks[me].data_ptr() != shard.data_ptr():
        chunks[me].copy_(shard)
    requests = []
    for j, peer in peers:
        requests.append(dist.isend(shard, peer, group=group, tag=tag))
        requests.append(dist.irecv(chunks[j], peer, group=group, tag=tag))
    return PairwiseWork(requests)
