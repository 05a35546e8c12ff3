"""The readable reference for DDP: one blocking all-reduce per parameter, in backward.

No buckets and no overlap: each gradient is averaged the moment autograd finishes it. Slower
than `DataParallel` for models with many small parameters, and exactly as correct; the parity
tests run both.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..strategy.module import SyncingWrapper
from ..strategy.prepare import unique_parameters


class NaiveDataParallel(SyncingWrapper):

    strategy_name = "ddp-naive"
    def __init__(self, module: nn.Module, group=None):
        super().__init__(module)
        self.group = group
        self.world_size = dist.get_world_size(group)
        for p in unique_parameters(module):
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(self._average_grad)

    def _average_grad(self, param: torch.Tensor) -> None:
        if self._sync:
            param.grad.div_(self.world_size)
            comm.all_reduce(param.grad, group=self.group)
