"""The readable reference for DDP: one blocking all-reduce per parameter, in backward.

No buckets and no overlap: each gradient is averaged the moment autograd finishes it. Slower
than `DataParallel` for models with many small parameters, and exactly as correct; the parity
tests run both.

With `find_unused_parameters` the order in which autograd finishes gradients may differ between
ranks (a parameter some rank did not use never finishes there), so the all-reduces wait for the
end of backward and run in parameter order, then one all-reduce of a used-bitmap leaves `.grad`
alone for the parameters no rank used ([Note: unused parameters] in data_parallel.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..strategy.backward import EndOfBackward
from ..strategy.module import StrategyModule
from ..strategy.prepare import unique_parameters
from ..strategy.buffers import BufferSync


class NaiveDataParallel(StrategyModule):

    strategy_name = "ddp-naive"

    def __init__(self, module: nn.Module, group=None, find_unused_parameters: bool = False,
                 broadcast_buffers: bool = True):
        super().__init__(module)
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.find_unused_parameters = find_unused_parameters
        self._buffer_sync = BufferSync(module, group, broadcast_buffers)
        self._trainable = [p for p in unique_parameters(module) if p.requires_grad]
        self._used: set[int] = set()  # ids of parameters with a gradient since the last sync
        self._end_of_backward = EndOfBackward(self._average_all)
        hook = self._note_used if find_unused_parameters else self._average_grad
        for p in self._trainable:
            p.register_post_accumulate_grad_hook(hook)

    def forward(self, *args, **kwargs):
        self._buffer_sync.before_forward()
        output = self.module(*args, **kwargs)
        self._buffer_sync.after_forward(self._sync)
        return output

    def _average_grad(self, param: torch.Tensor) -> None:
        if self._sync:
            param.grad.div_(self.world_size)
            comm.all_reduce(param.grad, group=self.group)

    def _note_used(self, param: torch.Tensor) -> None:
        self._used.add(id(param))
        if self._sync:
            self._end_of_backward.arm()

    def _average_all(self) -> None:
        """End of backward: every gradient averaged in parameter order, zero where this rank has none."""
        averaged = []
        for p in self._trainable:
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            grad.div_(self.world_size)
            comm.all_reduce(grad, group=self.group)
            averaged.append(grad)
        used = torch.tensor([int(id(p) in self._used) for p in self._trainable], dtype=torch.int32,
                            device=averaged[0].device)  # 1D, one per parameter
        comm.all_reduce(used, group=self.group)
        self._used.clear()
        for p, grad, used_anywhere in zip(self._trainable, averaged, used.tolist()):
            if used_anywhere and p.grad is None:
                p.grad = grad
