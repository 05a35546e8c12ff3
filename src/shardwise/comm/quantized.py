"""int8 collectives with a scale per block (after ZeRO++, Wang et al. 2023: qgZ and qwZ).

[Note: quantized collectives]
A tensor is sent as int8 values q = round(x / s), |q| <= 127, with s = max|x| / 127 per block of
BLOCK values (4 more bytes per block): about a quarter of fp32's bytes, half of bf16's.
- `reduce_scatter_int8`: every rank quantizes the chunk each peer owns and sends it to that peer
  (pairwise, as [Note: gloo pairwise collectives]); a rank adds the dequantized chunks it
  receives, in rank order, to its own chunk, which never leaves it and stays exact. Used for
  ZeRO's gradients: each peer's contribution is rounded once.
- `all_gather_int8`: every rank quantizes its shard once and sends the same bytes to every peer;
  all ranks, the owner included, dequantize every chunk from those bytes, so all hold the same
  full tensor. Used for stage 3's parameter gathers; the fp32 masters the optimizer updates
  stay exact, only what forward and backward compute with is rounded.
Byte accounting counts the int8 values and the scales as sent (ring volume, as every collective).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .pairwise import PairwiseWork, _peers
from .stats import PROCESS_STATS

BLOCK = 2048
SCALE_TAG_OFFSET = 16 << 16  # the scales of a message travel with this added to its tag


def blocks_of(numel: int, block: int = BLOCK) -> int:
    return -(-numel // block)


def _parts(numel: int, block: int):
    """(start, end, width): the whole blocks as one run of rows, then the short last block."""
    whole = numel // block * block
    if whole:
        yield 0, whole, block
    if whole < numel:
        yield whole, numel, numel - whole


def quantize(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, block: int = BLOCK) -> None:
    """q (int8, numel of x), scales (fp32, one per block) := x quantized."""
    for lo, hi, width in _parts(x.numel(), block):
        values = x[lo:hi].float().view(-1, width)
        s = scales[lo // block:lo // block + values.shape[0]]
        torch.amax(values.abs(), dim=1, out=s)
        s.div_(127.0).clamp_(min=torch.finfo(torch.float32).tiny)
        q[lo:hi].view_as(values).copy_(torch.round(values / s[:, None]).clamp_(-127, 127))


def dequantize(q: torch.Tensor, scales: torch.Tensor, out: torch.Tensor, block: int = BLOCK, add: bool = False) -> None:
    """out := (or +=, `add`) q times its block's scale, in out's dtype."""
    for lo, hi, width in _parts(q.numel(), block):
        rows = (hi - lo) // width
        values = q[lo:hi].view(rows, width).float() * scales[lo // block:lo // block + rows, None]
        target = out[lo:hi].view(rows, width)
        if add:
            target.add_(values.to(out.dtype))
        else:
            target.copy_(values)


def _record(kind: str, numel: int, world: int) -> None:
    PROCESS_STATS.record(kind, numel + 4 * blocks_of(numel // world) * world, world)


def reduce_scatter_int8(output: torch.Tensor, full_input: torch.Tensor, group=None, tag: int = 0) -> PairwiseWork:
    """output := sum over ranks of chunk `my rank` of `full_input` (1D, numel divisible by N), the
    peers' chunks int8-quantized; see [Note: quantized collectives]."""
    n = dist.get_world_size(group)
    _record("reduce_scatter", full_input.numel(), n)
    chunks = full_input.chunk(n)
    me, peers = _peers(group)
    size = chunks[me].numel()
    nblocks = blocks_of(size)
    sent, received, requests = [], {}, []
    for j, peer in peers:
        q = torch.empty(size, dtype=torch.int8, device=full_input.device)
        s = torch.empty(nblocks, dtype=torch.float32, device=full_input.device)
        quantize(chunks[j], q, s)
        sent.append((q, s))  # kept alive until the sends complete
        received[j] = (torch.empty_like(q), torch.empty_like(s))
        requests += [dist.isend(q, peer, group=group, tag=tag), dist.isend(s, peer, group=group, tag=tag + SCALE_TAG_OFFSET),
                     dist.irecv(received[j][0], peer, group=group, tag=tag),
                     dist.irecv(received[j][1], peer, group=group, tag=tag + SCALE_TAG_OFFSET)]

    def finish() -> None:
        if output.data_ptr() != chunks[me].data_ptr():
            output.copy_(chunks[me])
        for j in range(n):
            if j != me:
                dequantize(*received[j], output, add=True)
        sent.clear()

    return PairwiseWork(requests, finish)


def all_gather_int8(full_output: torch.Tensor, shard: torch.Tensor, group=None, tag: int = 0) -> PairwiseWork:
    """full_output := every rank's `shard`, int8-quantized, in rank order, the same on every rank
    (the owner's chunk too); see [Note: quantized collectives]."""
    n = dist.get_world_size(group)
    _record("all_gather", full_output.numel(), n)
    chunks = full_output.chunk(n)
    me, peers = _peers(group)
    q = torch.empty(shard.numel(), dtype=torch.int8, device=shard.device)
    s = torch.empty(blocks_of(shard.numel()), dtype=torch.float32, device=shard.device)
    quantize(shard, q, s)
    received, requests = {me: (q, s)}, []
    for j, peer in peers:
        received[j] = (torch.empty_like(q), torch.empty_like(s))
        requests += [dist.isend(q, peer, group=group, tag=tag), dist.isend(s, peer, group=group, tag=tag + SCALE_TAG_OFFSET),
                     dist.irecv(received[j][0], peer, group=group, tag=tag),
                     dist.irecv(received[j][1], peer, group=group, tag=tag + SCALE_TAG_OFFSET)]

    def finish() -> None:
        for j in range(n):
            dequantize(*received[j], chunks[j])

    return PairwiseWork(requests, finish)
