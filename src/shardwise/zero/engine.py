"""The ZeRO engine: units, gradient hooks, and what happens around the optimizer step.

Shared by all three stages; stage 3's gathering schedule lives in `stage3.py`.

[Note: ZeRO gradient flow]
A hook after gradient accumulation moves each parameter's `.grad` into its unit's flat
gradient buffer (in the reduce dtype) and drops the `.grad`. When every parameter of a unit
has arrived, the unit's reduce-scatter starts asynchronously; at most `max_inflight` are in
flight, the oldest finished first (which adds this rank's averaged chunk into its gradient
shard and, in stages 2-3, frees the buffer). The end-of-backward callback finishes the rest.
Inside `no_sync()` gradients only accumulate in the buffers. Per step, stages 1-2 move a
reduce-scatter and an all-gather of Ψ elements (2(N-1)/N·Ψ, as DDP's all-reduce); stage 3 adds
a second all-gather (3(N-1)/N·Ψ, ZeRO §7), less the units kept gathered from forward into
backward (see [Note: kept for backward] in stage3.py).

[Note: unused parameters]
With `find_unused_parameters=True` (PyTorch DDP's switch) a parameter may get no gradient on
some ranks, or on all. Ranks must still issue the same reduce-scatters in the same order, so
units launch strictly in index order as each becomes complete; at the end of backward each
unit not yet launched has its missing gradients filled with zeros and launches, in order. The
average then counts an unused parameter as zero, as DDP does. One small all-reduce of a
used-bitmap (used on this rank since the last synchronising backward) then finds parameters
no rank used: like DDP, which leaves their `.grad` None, the optimizer step skips their pieces
(no weight decay, no moment update) and they get no `.grad` view. Stage 3 puts every parameter
in the root unit in this mode, since ranks that skip different modules in forward would
otherwise gather different units.
"""

from __future__ import annotations

import collections
import contextlib

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..comm.collectives import CollectiveError
from ..errors import ConfigError
from ..flat.buckets import plan_buckets
from ..strategy.backward import EndOfBackward, missing_gradient_error
from ..strategy.buffers import BufferSync
from ..strategy.prepare import parameter_names, unique_parameters
from ..vocab import MIB, as_dtype
from ..flat.layout import FlatLayout
from .buffers import BufferPool, GatherSlots
from .flat_unit import STATE_TAG_BASE, FlatUnit
from .grad_view import ShardGrads, ShardGradView
from .scaler import DynamicLossScaler
from .units import stage3_units



class ZeroEngine:
    def __init__(self, module: nn.Module, config, group=None):
        """`config`: the ZeRO strategy object (zero/config.py)."""
        self.module = module
        self.config = config
        self.group = group
        self.stage = config.stage
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.param_dtype = as_dtype(config.param_dtype) or torch.float32
        self.reduce_dtype = as_dtype(config.reduce_dtype) or torch.float32
        self.scaler = DynamicLossScaler() if self.param_dtype == torch.float16 else None
        self.names = parameter_names(module)
        params = unique_parameters(module)
        if not params:
            raise ConfigError("the model has no parameters to shard")
        self.device = params[0].device
        self.master_device = torch.device("cpu") if config.offload == "cpu" else self.device
        trainable = [p for p in params if p.requires_grad]
        with torch.no_grad():  # frozen parameters stay whole on every rank, in the compute dtype
            for p in params:
                if not p.requires_grad and p.is_floating_point():
                    p.data = p.data.to(self.param_dtype)
        self.root_unit: FlatUnit | None = None
        self.module_units: dict[nn.Module, FlatUnit] = {}
        self.units = self._build_units(trainable)
        self.unit_of = {id(p): (u, pos) for u in self.units for pos, p in enumerate(u.params)}
        for unit in self.units:
            for position, p in enumerate(unit.params):
                p.register_post_accumulate_grad_hook(self._make_grad_hook(unit, position))
        self.sync = True
        self._end_of_backward = EndOfBackward(self._finish_backward)
        self._inflight: collections.deque[FlatUnit] = collections.deque()
        self._reduced: set[int] = set()
        self.on_unit_grads_done = None  # stage 3: reshard a unit once its gradients are taken
        self.on_reduce_failed = None  # stage 3: (unit, CollectiveError) -> raise what to do
        self.on_step = None  # stage 3: free gathered parameters, stale once the optimizer has stepped
        self.on_backward_end = None
        # Per-parameter state, parameters numbered in unit order (see [Note: gradient views]).
        self.trainable = [p for u in self.units for p in u.params]
        self.unit_base = {u.index: sum(len(v.params) for v in self.units[:k]) for k, u in enumerate(self.units)}
        owned = [(self.unit_base[u.index] + piece.index, grad) for u in self.units
                 for piece, (_, _, grad) in zip(u.pieces, u.piece_views())]
        self.grads = ShardGrads(owned, len(self.trainable), self._gather_norm_terms, self.unscale_)
        self._unscaled, self._found_inf = False, False
        # find_unused_parameters, see [Note: unused parameters]
        self.find_unused = config.find_unused_parameters
        self._next_launch = 0
        self._locally_used = torch.zeros(len(self.trainable), dtype=torch.int32)
        self.globally_unused: set[int] = set()  # parameter numbers no rank used in the last synchronising backward
        self.buffer_sync = BufferSync(module, group, config.broadcast_buffers)

    def _build_units(self, trainable: list[nn.Parameter]) -> list[FlatUnit]:
        """Decide which parameters form each unit, then make the buffers they share and the units."""
        if self.stage < 3:
            backward_order = list(reversed(trainable))
            sizes = [p.numel() * 4 for p in backward_order]
            plan = [[backward_order[i] for i in indices] for indices in plan_buckets(sizes, int(self.config.bucket_mb * MIB))]
            root_params, module_params = [], []
        else:
            root_params, module_params = stage3_units(self.module, trainable, self.config.unit_modules,
                                                      int(self.config.min_unit_mb * MIB), self.config.find_unused_parameters)
            plan = ([root_params] if root_params else []) + [params for _, params in module_params]
        largest = max(FlatLayout(tuple(p.numel() for p in params), self.world_size).padded_total for params in plan)
        # See [Note: buffer reuse]: every stage reuses its gradient and scratch buffers (reported
        # as "other" memory), so a step in steady state faults in no fresh pages.
        keep = self.config.max_inflight + 1
        grad_pool = BufferPool(largest, self.reduce_dtype, self.device, keep)
        scratch_pool = BufferPool((self.world_size - 1) * (largest // self.world_size), self.reduce_dtype, self.device, keep)
        self.pools = [grad_pool, scratch_pool]
        slots = None
        if self.stage == 3 and module_params:
            slots = GatherSlots(max(2, self.config.prefetch + 1), largest, self.param_dtype, self.device)
        self.slots = slots
        units: list[FlatUnit] = []

        def make(params, gather_buffer=None) -> FlatUnit:
            unit = FlatUnit(len(units), params, self.group, self.rank, self.world_size, stage=self.stage,
                            param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype, master_device=self.master_device,
                            gather_buffer=gather_buffer, grad_pool=grad_pool, scratch_pool=scratch_pool,
                            quantized_gradients=self.config.quantized_gradients,
                            quantized_weights=self.config.quantized_weights)
            units.append(unit)
            return unit

        if self.stage < 3:
            for params in plan:
                make(params)
            return units
        if root_params:
            self.root_unit = make(root_params)
        for position, (m, params) in enumerate(module_params):
            slot = slots.slot_of(position)
            unit = make(params, slots.buffers[slot])
            unit.slot = slot
            self.module_units[m] = unit
        return units

    # --- backward -------------------------------------------------------------------------

    def _make_grad_hook(self, unit: FlatUnit, position: int):
        def hook(param: torch.Tensor) -> None:
            if self.stage == 1 and not unit.grad_fresh and not unit.has_grad[position]:
                raise ConfigError("ZeRO stage 1 keeps one gradient buffer: call optimizer.zero_grad() between "
                                  "synchronised backward passes (accumulate with model.no_sync())")
            unit.take_grad(position)
            self._locally_used[self.unit_base[unit.index] + position] = 1
            self._end_of_backward.arm()
            unit.ready.add(position)
            if len(unit.ready) < len(unit.params):
                return
            if self.sync:
                if self.find_unused:
                    self._launch_in_order(final=False)
                else:
                    self._start_reduce(unit)
            if self.on_unit_grads_done is not None:
                self.on_unit_grads_done(unit)

        return hook

    def _start_reduce(self, unit: FlatUnit) -> None:
        with self._reducing(unit):
            unit.start_reduce()
        self._inflight.append(unit)
        while len(self._inflight) > self.config.max_inflight:
            self._finish_oldest()

    @contextlib.contextmanager
    def _reducing(self, unit: FlatUnit):
        try:
            yield
        except CollectiveError as exc:
            if self.on_reduce_failed is None:
                raise
            self.on_reduce_failed(unit, exc)

    def _launch_in_order(self, final: bool) -> None:
        """find_unused: launch units in index order while complete (all of them when `final`)."""
        while self._next_launch < len(self.units):
            unit = self.units[self._next_launch]
            if not final and len(unit.ready) < len(unit.params):
                return
            if final:
                unit.fill_missing_grads()
            self._next_launch += 1
            self._start_reduce(unit)

    def _finish_oldest(self) -> None:
        unit = self._inflight.popleft()
        with self._reducing(unit):
            unit.finish_reduce(keep_full=self.stage == 1)
        self._reduced.add(unit.index)

    def _finish_backward(self) -> None:
        try:
            if self.sync and self.find_unused:
                self._launch_in_order(final=True)
            while self._inflight:
                self._finish_oldest()
            if self.sync and self.find_unused:
                self._agree_on_unused()
            elif self.sync:
                missing = [p for u in self.units if u.index not in self._reduced
                           for pos, p in enumerate(u.params) if pos not in u.ready]
                if missing:
                    raise missing_gradient_error([self.names[id(p)] for p in missing])
        finally:
            self._reduced.clear()
            self._next_launch = 0
            for unit in self.units:
                unit.ready.clear()
            if self.on_backward_end is not None:
                self.on_backward_end()
        if self.sync:
            self.grads.invalidate()
            self._install_grad_views()

    def _agree_on_unused(self) -> None:
        """One all-reduce of the used-bitmap: which parameters did no rank use? (find_unused)"""
        used = self._locally_used.to(self.device)
        comm.all_reduce(used, group=self.group)
        self.globally_unused = {i for i, count in enumerate(used.tolist()) if count == 0}
        self._locally_used.zero_()

    # --- `.grad` views, see [Note: gradient views] ------------------------------------------

    def _install_grad_views(self) -> None:
        for index, p in enumerate(self.trainable):
            if index not in self.globally_unused:
                p.grad = ShardGradView(p, self.grads, index, self.stage)

    def clear_grad_views(self) -> None:
        for p in self.trainable:
            if isinstance(p.grad, ShardGradView):
                p.grad = None

    def _gather_norm_terms(self, terms: torch.Tensor) -> torch.Tensor:
        """Every rank's per-parameter norm terms (ranks x parameters): one collective."""
        terms = terms.to(self.device)
        if self.world_size == 1:
            return terms.unsqueeze(0).cpu()
        everyone = torch.empty(self.world_size * terms.numel(), dtype=terms.dtype, device=self.device)
        comm.all_gather(everyone, terms, group=self.group)
        return everyone.view(self.world_size, -1).cpu()

    # --- around the forward -----------------------------------------------------------------

    @torch._dynamo.disable
    def before_forward(self) -> None:
        """Drop last step's `.grad` views before autograd accumulates new gradients, and copy rank
        0's buffers to every rank when PyTorch DDP would: before a forward that follows a
        forward with gradients enabled and synchronisation on (and before the first)."""
        if torch.is_grad_enabled():
            self.clear_grad_views()
        self.buffer_sync.before_forward()
        self.buffer_sync.after_forward(self.sync)

    # --- around the optimizer step ----------------------------------------------------------

    def unscale_(self) -> None:
        """fp16: divide the gradient shards by the loss scale and find inf/NaN, once per step
        (idempotent, as GradScaler.unscale_), so clipping sees true gradients."""
        while self._inflight:
            self._finish_oldest()
        if self.scaler is None or self._unscaled:
            return
        inverse = 1.0 / self.scaler.scale
        found = torch.zeros(1, device=self.master_device)
        for unit in self.units:
            unit.grad_shard.mul_(inverse)
            found += (~torch.isfinite(unit.grad_shard)).any().float()
        comm.all_reduce(found, group=self.group)
        self._found_inf = bool(found.item() > 0)
        self._unscaled = True
        self.grads.invalidate()

    def before_step(self) -> bool:
        """Unscale and check gradients under fp16; False means skip this step."""
        self.unscale_()
        if self.scaler is None:
            return True
        found_inf, self._unscaled = self._found_inf, False
        self.scaler.update(found_inf)
        return not found_inf

    def after_step(self) -> None:
        """Compute shards follow the masters; stages 1-2 gather the updated parameters."""
        if self.on_step is not None:
            self.on_step()
        for unit in self.units:
            unit.refresh_from_master()
        if self.stage < 3:
            works = [unit.all_gather_params() for unit in self.units]
            for work in works:
                work.wait()

    def zero_grad(self) -> None:
        """Clear the gradient shards and the parameters' `.grad` views (optimizer or model)."""
        for unit in self.units:
            unit.zero_grad()
        self.clear_grad_views()
        self.grads.invalidate()
        self._unscaled = False

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip the global gradient norm, computed from every rank's shards (one all-reduce)."""
        if norm_type != 2.0:
            raise ConfigError("sharded gradient clipping supports the 2-norm only")
        self.unscale_()
        squares = torch.zeros(1, dtype=torch.float64, device=self.master_device)
        for unit in self.units:
            squares += unit.grad_shard.double().pow(2).sum()
        comm.all_reduce(squares, group=self.group)
        total = squares.sqrt().float()
        factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for unit in self.units:
            unit.grad_shard.mul_(factor.to(unit.grad_shard.device))
        self.grads.invalidate()
        return total

    # --- state ---------------------------------------------------------------------------

    def full_parameters(self) -> dict[int, torch.Tensor]:
        """id(param) -> its full fp32 value, gathered from every rank's master shard."""
        values = {}
        for unit in self.units:
            full = torch.empty(unit.layout.padded_total, dtype=torch.float32, device=unit.master.device)
            comm.all_gather(full, unit.master.float(), group=self.group, tag=STATE_TAG_BASE + unit.index)
            for p, start, shape in zip(unit.params, unit.layout.offsets, unit.shapes):
                values[id(p)] = full[start:start + shape.numel()].view(shape).clone()
        return values

    def load_full_parameters(self, values: dict[int, torch.Tensor]) -> None:
        """Set every unit from full values (id(param) -> tensor), present on every rank: no communication."""
        with torch.no_grad():
            for unit in self.units:
                flat = torch.zeros(unit.layout.padded_total, dtype=torch.float32)
                for p, start, n in zip(unit.params, unit.layout.offsets, unit.layout.numels):
                    flat[start:start + n] = values[id(p)].reshape(-1)
                unit.master.copy_(flat[unit.lo:unit.hi])
                unit.refresh_from_master()
                if unit.gathered:
                    unit.full.copy_(flat)

    def buffer_bytes(self) -> int:
        """Bytes of the reused communication buffers (pools of gradient and scratch buffers;
        stage 3 also its gather slots and root buffer)."""
        slots = [b for b in (self.slots.buffers if self.slots else [])]
        root = [self.root_unit.full] if self.root_unit is not None and self.stage == 3 else []
        held = [b for pool in self.pools for b in pool.held()]
        return sum(t.numel() * t.element_size() for t in slots + root + held)

    def state_tensors(self):
        for unit in self.units:
            yield from unit.state_tensors()
        for pool in self.pools:
            yield from pool.held()
        for p in unique_parameters(self.module):
            if not p.requires_grad:
                yield p
