"""PyTorch DDP's `broadcast_buffers`: rank 0's buffers reach every rank before a forward.

Buffers (BatchNorm's running statistics, counters) get no gradient, so each rank's forward on
its own slice moves them apart. PyTorch DDP copies rank 0's buffers to every rank before a
forward, but only before one that follows a synchronising training forward (its
`require_forward_param_sync`): under gradient accumulation the copy happens once, before the
first micro-step, and never after an evaluation forward under `torch.no_grad()`. `BufferSync`
keeps that rule so a BatchNorm model's statistics match PyTorch DDP's step for step; every
strategy that replicates buffers uses it.

All buffers travel as bytes in one broadcast (8-byte aligned, so every dtype's element divides
its offset); a model without buffers sends nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import comm
from .prepare import group_rank0

_ALIGN = 8  # bytes; any buffer dtype's element size divides it


class BufferSync:
    """Decides when to broadcast `module`'s buffers from the group's first rank (`src`: a global
    rank, default that first rank), and does it."""

    def __init__(self, module: nn.Module, group=None, enabled: bool = True, src: int | None = None):
        self.module = module
        self.group = group
        self.src = src
        self.enabled = enabled and any(b.numel() > 0 for b in module.buffers())
        self._due = True  # PyTorch DDP's require_forward_param_sync, True before the first forward

    def before_forward(self) -> None:
        if self.enabled and self._due:
            broadcast_buffers(self.module, self.group, self.src)

    def after_forward(self, will_sync: bool) -> None:
        """`will_sync`: this forward builds a graph whose backward synchronises gradients."""
        self._due = torch.is_grad_enabled() and will_sync


def pack_layout(buffers: list[torch.Tensor]) -> tuple[list[int], int]:
    """Byte offset of each buffer in the packed message, and its total size (pure)."""
    offsets, total = [], 0
    for b in buffers:
        offsets.append(total)
        total += -(-b.numel() * b.element_size() // _ALIGN) * _ALIGN
    return offsets, total


def broadcast_buffers(module: nn.Module, group=None, src: int | None = None) -> None:
    """Overwrite every buffer of `module` with its value on rank `src` (default: the group's
    first rank), in one broadcast; a no-op without buffers."""
    buffers = [b for b in module.buffers() if b.numel() > 0]
    if not buffers:
        return
    offsets, total = pack_layout(buffers)
    message = torch.empty(total, dtype=torch.uint8, device=buffers[0].device)  # 1D, bytes
    with torch.no_grad():
        for b, start in zip(buffers, offsets):
            n = b.numel() * b.element_size()
            message[start:start + n].copy_(b.detach().contiguous().view(-1).view(torch.uint8))
        comm.broadcast(message, src=group_rank0(group) if src is None else src, group=group)
        # Not a modification autograd should see (a saved running statistic), as in DDP's _sync_buffers.
        with torch.autograd._unsafe_preserve_version_counter(tuple(buffers)):
            for b, start in zip(buffers, offsets):
                n = b.numel() * b.element_size()
                b.copy_(message[start:start + n].view(b.dtype).view(b.shape))
