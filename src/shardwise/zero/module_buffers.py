"""Rank 0's buffers to every rank before a forward, in one broadcast (PyTorch DDP's broadcast_buffers).

Buffers (BatchNorm's running statistics) are not parameters: no gradient averages them, so
each rank's forward on its own slice moves them apart. PyTorch DDP copies the authoritative
(rank 0) buffers to every rank before each forward that follows a synchronising training
forward; ZeroEngine.before_forward decides when, this file does the copy. Buffers of any
dtypes travel together as bytes, each aligned to 8 bytes, so it is one collective.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import comm
from ..strategy.prepare import group_rank0

_ALIGN = 8  # bytes; any buffer dtype's element size divides it


def pack_layout(buffers: list[torch.Tensor]) -> tuple[list[int], int]:
    """Byte offset of each buffer in the packed message, and its total size (pure)."""
    offsets, total = [], 0
    for b in buffers:
        offsets.append(total)
        total += -(-b.numel() * b.element_size() // _ALIGN) * _ALIGN
    return offsets, total


def broadcast_buffers(module: nn.Module, group=None) -> None:
    """Overwrite every buffer of `module` with its value on the group's first rank (no-op without buffers)."""
    buffers = [b for b in module.buffers() if b.numel() > 0]
    if not buffers:
        return
    offsets, total = pack_layout(buffers)
    message = torch.empty(total, dtype=torch.uint8, device=buffers[0].device)
    with torch.no_grad():
        for b, start in zip(buffers, offsets):
            n = b.numel() * b.element_size()
            message[start:start + n].copy_(b.detach().contiguous().view(-1).view(torch.uint8))
        comm.broadcast(message, src=group_rank0(group), group=group)
        # The copy back must not look like a modification to autograd (as DDP's _sync_buffers).
        with torch.autograd._unsafe_preserve_version_counter(tuple(buffers)):
            for b, start in zip(buffers, offsets):
                n = b.numel() * b.element_size()
                b.copy_(message[start:start + n].view(b.dtype).view(b.shape))
