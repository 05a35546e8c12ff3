"""The readable reference for DDP: one blocking all-reduce per parameter, in backward.

No buckets and no overlap: each gradient is averaged the moment autograd finishes it. Slower
than `DataParallel` for models with many small parameters, and exactly as correct; the parity
tests run both.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..strategy.prepare import unique_parameters


class NaiveDataParallel(nn.Module):

    strategy_name = "ddp-naive"
    def __init__(self, module: nn.Module, group=None):
        super().__init__()
        self.module = module
        self.group = group
        self.world_size = dist.get_world_size(group)
        self._sync = True
        for p in unique_parameters(module):
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(self._average_grad)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    def _average_grad(self, param: torch.Tensor) -> None:
        if self._sync:
            param.grad.div_(self.world_size)
            comm.all_reduce(param.grad, group=self.group)
