"""Data parallelism with bucketed, overlapped gradient all-reduce (PyTorch DDP's design).

Each trainable parameter's gradient lives in a slice of a flat bucket buffer. A hook after
gradient accumulation marks the parameter ready; when a bucket's last parameter is ready its
all-reduce starts asynchronously while backward goes on computing earlier layers. A callback at
the end of backward waits for every bucket, so after `loss.backward()` returns the gradients are
averaged over ranks and the optimizer (and any gradient clipping) sees the global gradient.

Buckets are launched in index order, the same on every rank, so collectives always match.
Communication per step: one all-reduce of 4Ψ bytes (fp32), 2(N-1)/N·4Ψ on the wire per rank.

[Note: unused parameters]
With `find_unused_parameters`, a parameter may get no gradient in a backward, on some ranks or
on all (a branch taken by some inputs, a frozen head). As in PyTorch DDP it then counts as zero
in the average: at the end of backward each rank puts zeros (or the `.grad` it already has) in
the slots autograd left empty, marks them ready and launches the remaining buckets in index
order, so every rank issues the same collectives in the same order. One small all-reduce of a
used-bitmap (usage since the last synchronising backward, so `no_sync` micro-steps count) then
finds the parameters no rank used: PyTorch DDP leaves their `.grad` as it was (None after
`zero_grad()`), so an optimizer skips them instead of decaying them with a zero gradient; here
they keep their `.grad` too and every other parameter gets its bucket view. Under the switch
gradients start as None, as in a fresh PyTorch model, and the bucket view is adopted when
autograd first writes a gradient (`GradBucket.adopt_grad`). Without the switch a missing
gradient is a ConfigError naming the parameter: a silent zero would hide a bug in the model.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..flat.buckets import plan_buckets
from ..runtime import heap
from ..strategy.backward import EndOfBackward, missing_gradient_error
from ..strategy.module import StrategyModule
from ..strategy.prepare import parameter_names, unique_parameters
from ..strategy.buffers import BufferSync
from ..vocab import MIB
from .bucket import GradBucket


class DataParallel(StrategyModule):
    """Wraps a module; gradients are averaged over `group` during backward."""

    strategy_name = "ddp"

    def __init__(self, module: nn.Module, bucket_mb: float = 25, first_bucket_mb: float = 1, group=None,
                 trim_every: int = 100, find_unused_parameters: bool = False, broadcast_buffers: bool = True,
                 compressor=None):
        super().__init__(module)
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.find_unused_parameters = find_unused_parameters
        self._names = parameter_names(module)
        self._buckets = self._build_buckets(int(bucket_mb * MIB), int(first_bucket_mb * MIB))
        self._buffer_sync = BufferSync(module, group, broadcast_buffers)
        self._end_of_backward = EndOfBackward(self._finish_backward)
        self._next_to_launch = 0
        self._trim = heap.PeriodicTrim(trim_every)
        self.compressor = compressor  # see [Note: compressed buckets] in compress/base.py
        self._codecs = [compressor.codec(b.index, b.flat, b.views) for b in self._buckets] if compressor else None
        for bucket in self._buckets:
            for position, param in enumerate(bucket.params):
                if not find_unused_parameters:  # see [Note: unused parameters]
                    param.grad = bucket.views[position]
                param.register_post_accumulate_grad_hook(self._make_hook(bucket, position))

    def forward(self, *args, **kwargs):
        self._buffer_sync.before_forward()
        output = self.module(*args, **kwargs)
        self._buffer_sync.after_forward(self._sync)
        return output

    def _build_buckets(self, bucket_bytes: int, first_bucket_bytes: int) -> list[GradBucket]:
        by_kind = defaultdict(list)  # one bucket holds one dtype on one device
        for p in reversed(unique_parameters(self.module)):
            if p.requires_grad:
                by_kind[(p.dtype, p.device)].append(p)
        buckets: list[GradBucket] = []
        for params in by_kind.values():
            sizes = [p.numel() * p.element_size() for p in params]
            for indices in plan_buckets(sizes, bucket_bytes, first_bucket_bytes if not buckets else None):
                buckets.append(GradBucket(len(buckets), [params[i] for i in indices]))
        return buckets

    @property
    def buckets(self) -> list[GradBucket]:
        return self._buckets

    def own_tensors(self):
        """The bucket buffers, which hold the gradients even between steps."""
        return [bucket.flat for bucket in self._buckets]

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The codecs' state: error-feedback residuals as their mean over ranks (what the average
        update still owes, the same at any world size), the rest (PowerSGD's Q) as it is."""
        out = {}
        for index, codec in enumerate(self._codecs or []):
            for key, value in codec.state_tensors().items():
                value = value.detach().clone()
                if key == "residual":
                    comm.all_reduce(value, group=self.group)
                    value.div_(self.world_size)
                out[f"compress.bucket{index}.{key}"] = value
        return out

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        for index, codec in enumerate(self._codecs or []):
            mine = {key: state.get(f"compress.bucket{index}.{key}") for key in codec.state_tensors()}
            if all(v is not None and v.shape == codec.state_tensors()[k].shape for k, v in mine.items()):
                codec.load_state_tensors(mine)

    def _make_hook(self, bucket: GradBucket, position: int):
        def hook(param: torch.Tensor) -> None:
            bucket.adopt_grad(position)
            bucket.used.add(position)
            if not self._sync:
                return
            self._end_of_backward.arm()
            if bucket.mark_ready(position):
                self._launch_ready_buckets()

        return hook

    def _launch_ready_buckets(self) -> None:
        """Start the all-reduce of every ready bucket whose predecessors have all started."""
        while self._next_to_launch < len(self._buckets):
            bucket = self._buckets[self._next_to_launch]
            if len(bucket.ready) < len(bucket.params):
                return
            if self._codecs is not None:
                bucket.work = self._codecs[bucket.index].start(bucket.flat, bucket.views, self.group)
            else:
                if self.world_size > 1:
                    bucket.flat.div_(self.world_size)
                bucket.work = comm.all_reduce(bucket.flat, group=self.group, async_op=True)
            self._next_to_launch += 1

    def _finish_backward(self) -> None:
        """End of backward: wait for every bucket's all-reduce; gradients are now global means."""
        try:
            if self.find_unused_parameters:
                self._finish_with_unused()
            else:
                self._finish_all_used()
        finally:
            self._next_to_launch = 0
            for bucket in self._buckets:
                bucket.reset()
        self._trim.tick()

    def _finish_all_used(self) -> None:
        for bucket in self._buckets:
            if bucket.work is not None:
                bucket.work.wait()
        unready = [p for bucket in self._buckets for p in bucket.missing()]
        if unready:
            raise missing_gradient_error([self._names[id(p)] for p in unready])

    def _finish_with_unused(self) -> None:
        """Zeros for the gradients autograd did not produce, then keep `.grad` of the parameters
        no rank used; see [Note: unused parameters]."""
        for bucket in self._buckets:
            for position in bucket.missing_positions():
                bucket.fill_unused(position)
                bucket.mark_ready(position)
        self._launch_ready_buckets()
        used = torch.tensor([int(i in b.used) for b in self._buckets for i in range(len(b.params))],
                            dtype=torch.int32, device=self._buckets[0].flat.device)  # 1D, one per parameter
        used_work = comm.all_reduce(used, group=self.group, async_op=True)
        for bucket in self._buckets:
            bucket.work.wait()
        used_work.wait()
        used_anywhere = iter(used.tolist())
        for bucket in self._buckets:
            for position, param in enumerate(bucket.params):
                if next(used_anywhere) and param.grad is None:
                    param.grad = bucket.views[position]
            bucket.used.clear()
