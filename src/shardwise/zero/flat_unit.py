"""One ZeRO unit: a set of parameters laid in one flat buffer, sharded over the ranks.

Per-unit state of the ZeRO strategies (see [Note: flat layout]). What a rank keeps:
- `master`: its slice of the parameters in fp32 (on the CPU under offload): what the optimizer
  updates. With fp32 compute and no offload it *is* the compute shard, no copy.
- `shard`: its slice in the compute dtype (stage 3 keeps only this; stages 1 and 2 keep the
  full buffer, of which `shard` is a view).
- `grad_shard`: its slice of the averaged gradient, in fp32, beside `master`.
- `full` / `grad_full`: the whole unit's parameters and gradients, present only while needed
  (always, for stage 1/2 parameters and stage 1 gradients).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import comm
from ..comm import quantized
from ..flat.layout import FlatLayout


# Message tags (gloo), each plus the unit's index, so that ranks that disagree on what comes next
# wait and time out with a named error instead of pairing different collectives (a size
# mismatch aborts the process): see [Note: desynchronised forwards].
GATHER_TAG_BASE = 1 << 16  # stage 3: gathers for a forward or backward (+ PHASE_TAG on odd forwards)
PHASE_TAG = 1 << 15
REDUCE_TAG_BASE = 2 << 16  # gradient reduce-scatters
STATE_TAG_BASE = 3 << 16  # whole-parameter gathers: state dicts, sw.gathered


class FlatUnit:
    def __init__(self, index: int, params: list[nn.Parameter], group, rank: int, world_size: int, *,
                 stage: int, param_dtype: torch.dtype, reduce_dtype: torch.dtype, master_device: torch.device,
                 gather_buffer: torch.Tensor | None = None, grad_pool=None, scratch_pool=None,
                 quantized_gradients: bool = False, quantized_weights: bool = False):
        self.index = index
        self.params = params
        self.shapes = [p.shape for p in params]
        self.group = group
        self.stage = stage
        self.world_size = world_size
        self.layout = FlatLayout(tuple(p.numel() for p in params), world_size)
        self.lo, self.hi = self.layout.shard_range(rank)
        self.device = params[0].device
        self.param_dtype = param_dtype
        self.reduce_dtype = reduce_dtype
        self.pieces = self.layout.pieces(rank)
        self.grad_pool, self.scratch_pool = grad_pool, scratch_pool  # see [Note: buffer reuse]
        self.slot: int | None = None  # stage 3: which gather slot this unit uses (None: its own buffer)
        self.in_use = False  # stage 3: gathered for a forward or backward that is running
        # int8 collectives (ZeRO++), see [Note: quantized collectives]; nothing to send at N = 1
        self.quantized_gradients = quantized_gradients and world_size > 1
        self.quantized_weights = quantized_weights and world_size > 1

        initial = torch.zeros(self.layout.padded_total, dtype=torch.float32, device=self.device)  # 1D, padded
        with torch.no_grad():
            for p, start in zip(params, self.layout.offsets):
                initial[start:start + p.numel()].copy_(p.detach().reshape(-1))
        separate_master = param_dtype != torch.float32 or master_device != self.device
        if stage == 3:
            self.shard = initial[self.lo:self.hi].to(param_dtype, copy=True)
            self.full = gather_buffer[:self.layout.padded_total] if gather_buffer is not None else \
                torch.empty(self.layout.padded_total, dtype=param_dtype, device=self.device)
            self.master = initial[self.lo:self.hi].to(master_device, copy=True) if separate_master else self.shard
            self.gathered = True
            self.free_full()
        else:
            self.full = initial.to(param_dtype) if param_dtype != torch.float32 else initial
            self.shard = self.full[self.lo:self.hi]
            self.master = initial[self.lo:self.hi].to(master_device, copy=True) if separate_master else self.shard
            self.gathered = True
            self._point_params_at_full()
        self.grad_full: torch.Tensor | None = None
        self._grad_buffer: torch.Tensor | None = None  # the pooled buffer grad_full is a view of
        self._scratch: torch.Tensor | None = None
        if stage == 1:  # stage 1 keeps the full gradient buffer; its own chunk can be the grad shard
            self.grad_full = torch.zeros(self.layout.padded_total, dtype=reduce_dtype, device=self.device)
        if stage == 1 and reduce_dtype == torch.float32 and master_device == self.device:
            self.grad_shard = self.grad_full[self.lo:self.hi]
        else:
            self.grad_shard = torch.zeros(self.layout.shard_numel, dtype=torch.float32, device=master_device)
        self.grad_fresh = True  # grad_shard holds nothing yet since the last zero_grad
        self.has_grad = [False] * len(params)  # per parameter: its slot in grad_full holds data
        self.ready: set[int] = set()
        self.work = None

    # --- parameters -------------------------------------------------------------------------

    def _point_params_at_full(self, full: torch.Tensor | None = None) -> None:
        full = self.full if full is None else full
        for p, start, n, shape in zip(self.params, self.layout.offsets, self.layout.numels, self.shapes):
            p.data = full[start:start + n].view(shape)

    def gather(self, async_op: bool = True, forward: int = 0):
        """All-gather the full parameters into this unit's gather buffer (stage 3); returns the handle.

        Tagged with the unit's index and the parity of the forward it serves (`forward`, counted
        alike on every rank), so that it pairs only with the same unit's gather for the same
        forward on the other ranks (see [Note: desynchronised forwards])."""
        self.gathered = True
        tag = GATHER_TAG_BASE + self.index + PHASE_TAG * (forward & 1)
        if self.quantized_weights:
            work = quantized.all_gather_int8(self.full, self.shard, comm.default_group(self.group), tag)
            if async_op:
                return work
            work.wait()
            return None
        return comm.all_gather(self.full, self.shard, group=self.group, async_op=async_op, tag=tag)

    def use_full(self, full: torch.Tensor | None = None) -> None:
        """Point every parameter at its slice of the gathered buffer (or of `full`, a buffer like it)."""
        self._point_params_at_full(full)

    def free_full(self) -> None:
        """Free the full parameters' memory (stage 3); parameters are empty until the next gather."""
        for p in self.params:
            p.data = torch.empty(0, dtype=self.param_dtype, device=self.device)
        self.gathered = False
        self.in_use = False

    def refresh_from_master(self) -> None:
        """After the optimizer step: the compute shard follows the fp32 master (if separate)."""
        if self.master.data_ptr() != self.shard.data_ptr():
            self.shard.copy_(self.master)

    def all_gather_params(self):
        """Stages 1-2: every rank's updated slice into the persistent full buffer."""
        return comm.all_gather(self.full, self.shard, group=self.group, async_op=True)

    # --- gradients --------------------------------------------------------------------------

    def take_grad(self, position: int) -> None:
        """Move a parameter's fresh `.grad` into this unit's flat gradient buffer."""
        param = self.params[position]
        if self.grad_full is None:
            self._grad_buffer = self.grad_pool.acquire()
            self.grad_full = self._grad_buffer[:self.layout.padded_total]
            self.grad_full[self.layout.total:].zero_()  # padding; every parameter's slot is written by copy_
            self.has_grad = [False] * len(self.params)
        start, n = self.layout.offsets[position], self.layout.numels[position]
        slot = self.grad_full[start:start + n].view(self.shapes[position])
        if self.has_grad[position]:
            slot.add_(param.grad)
        else:
            slot.copy_(param.grad)
            self.has_grad[position] = True
        param.grad = None

    def start_reduce(self) -> None:
        """Reduce-scatter the gradient buffer; this rank's sum lands in its own chunk, in place."""
        own = self.grad_full[self.lo:self.hi]
        self._scratch = self.scratch_pool.acquire()
        if self.quantized_gradients:
            self.work = quantized.reduce_scatter_int8(own, self.grad_full, comm.default_group(self.group),
                                                      REDUCE_TAG_BASE + self.index)
            return
        self.work = comm.reduce_scatter(own, self.grad_full, group=self.group, async_op=True, scratch=self._scratch,
                                       tag=REDUCE_TAG_BASE + self.index)

    def finish_reduce(self, keep_full: bool) -> None:
        """Wait for the reduce-scatter and add the averaged chunk to `grad_shard`."""
        self.work.wait()
        self.work = None
        own = self.grad_full[self.lo:self.hi]
        own.div_(self.world_size)
        if own.data_ptr() != self.grad_shard.data_ptr():
            if self.grad_fresh:
                self.grad_shard.copy_(own)
            else:
                self.grad_shard.add_(own)
        self.grad_fresh = False
        self.ready.clear()
        self.has_grad = [False] * len(self.params)
        self.scratch_pool.release(self._scratch)
        self._scratch = None
        if not keep_full:
            self.grad_pool.release(self._grad_buffer)
            self.grad_full = self._grad_buffer = None

    def fill_missing_grads(self) -> None:
        """find_unused_parameters: zeros for the parameters that got no gradient, so the unit can
        reduce like every other rank's (see [Note: unused parameters])."""
        if self.grad_full is None:
            self._grad_buffer = self.grad_pool.acquire()
            self.grad_full = self._grad_buffer[:self.layout.padded_total]
            self.grad_full[self.layout.total:].zero_()
            self.has_grad = [False] * len(self.params)
        for position, (start, n) in enumerate(zip(self.layout.offsets, self.layout.numels)):
            if not self.has_grad[position]:
                self.grad_full[start:start + n].zero_()
                self.has_grad[position] = True

    def zero_grad(self) -> None:
        self.grad_fresh = True
        self.grad_shard.zero_()

    # --- the owned pieces, as the optimizer sees them ----------------------------------------

    def piece_views(self):
        """(parameter position, master slice, grad slice) for each owned piece."""
        for piece in self.pieces:
            a, b = piece.shard_start, piece.shard_start + piece.numel
            yield piece.index, self.master[a:b], self.grad_shard[a:b]

    def state_tensors(self):
        yield self.master
        yield self.shard
        yield self.grad_shard
        yield self.full  # stages 1-2: the parameters; stage 3: the gather slot (shared, counted once)
        if self.grad_full is not None:
            yield self.grad_full
