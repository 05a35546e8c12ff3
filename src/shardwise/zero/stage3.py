"""Stage 3's schedule: gather a unit's parameters just before its module runs, forward and
backward, prefetch the next unit meanwhile, and free them right after use.

[Note: stage 3 schedule]
Forward: a pre-hook on each unit's module waits for its all-gather (started earlier as a
prefetch, or now) and starts the gathers of the next `prefetch` units in the order the
previous forward ran them (registration order the first time); a post-hook frees the unit.
Backward: a hook on the unit's outputs fires when their gradient is ready, just before the
unit's own backward: it gathers the unit again and prefetches the units before it in forward
order; once all of the unit's gradients have been taken (see [Note: ZeRO gradient flow]) the
unit is freed. The root unit (parameters outside any unit, tied ones) is gathered around the
whole forward and again from the start of backward until its gradients are taken.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten

from .engine import ZeroEngine
from .flat_unit import FlatUnit


class Stage3Schedule:
    def __init__(self, engine: ZeroEngine):
        self.engine = engine
        self.slots = engine.slots
        self.prefetch = engine.config.prefetch
        self.pending: dict[int, object] = {}  # unit index -> gather in flight
        self.forward_order: list[FlatUnit] = list(engine.module_units.values())
        self._this_forward: list[FlatUnit] = []
        self._handles = []
        for module, unit in engine.module_units.items():
            self._handles.append(module.register_forward_pre_hook(self._make_pre_forward(unit)))
            self._handles.append(module.register_forward_hook(self._make_post_forward(unit)))
        engine.on_unit_grads_done = self.reshard
        engine.on_backward_end = self.reshard_all

    # --- gathering ---------------------------------------------------------------------------

    def gathered(self, unit: FlatUnit) -> bool:
        return unit.gathered

    def start_gather(self, unit: FlatUnit, prefetch: bool = True) -> None:
        """Start gathering `unit` into its slot; a prefetch gives way if the slot is taken."""
        if self.gathered(unit) or unit.index in self.pending:
            return
        if unit.slot is not None:
            holder = self.slots.occupant[unit.slot]
            if holder is not None and holder is not unit and self.gathered(holder):
                if prefetch:
                    return
                if holder.in_use:
                    raise RuntimeError(f"stage 3: unit {unit.index} needs gather slot {unit.slot}, held by unit "
                                       f"{holder.index} which is still in use; run with a larger ZeRO(prefetch=...)")
                self.reshard(holder)  # only prefetched: it will be gathered again when needed
            self.slots.occupant[unit.slot] = unit
        self.pending[unit.index] = unit.gather(async_op=True)

    def ensure_gathered(self, unit: FlatUnit) -> None:
        self.start_gather(unit, prefetch=False)
        work = self.pending.pop(unit.index, None)
        if work is not None:
            work.wait()
            unit.use_full()
        unit.in_use = True

    def reshard(self, unit: FlatUnit) -> None:
        work = self.pending.pop(unit.index, None)
        if work is not None:
            work.wait()
        if self.gathered(unit):
            unit.free_full()

    def reshard_all(self) -> None:
        """End of backward: free whatever is still gathered, and return freed memory to the OS."""
        for unit in self.engine.units:
            self.reshard(unit)

    def _neighbours(self, unit: FlatUnit, forward: bool) -> list[FlatUnit]:
        order = self.forward_order
        if unit not in order or self.prefetch == 0:
            return []
        k = order.index(unit)
        return order[k + 1:k + 1 + self.prefetch] if forward else list(reversed(order[max(0, k - self.prefetch):k]))

    # --- module hooks ------------------------------------------------------------------------

    def _make_pre_forward(self, unit: FlatUnit):
        def hook(module, args):
            self.ensure_gathered(unit)
            self._this_forward.append(unit)
            for nxt in self._neighbours(unit, forward=True):
                self.start_gather(nxt)

        return hook

    def _make_post_forward(self, unit: FlatUnit):
        def hook(module, args, output):
            self.reshard(unit)
            self.register_pre_backward(output, unit)

        return hook

    def register_pre_backward(self, output, unit: FlatUnit) -> None:
        if not torch.is_grad_enabled():
            return

        def pre_backward(grad):
            self.ensure_gathered(unit)
            for prev in self._neighbours(unit, forward=False):
                self.start_gather(prev)
            return None

        tensors, _ = tree_flatten(output)
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(pre_backward)

    # --- the root, around the whole model ---------------------------------------------------

    def before_forward(self) -> None:
        self._this_forward = []
        root = self.engine.root_unit
        if root is not None:
            self.ensure_gathered(root)
        if self.forward_order and self.prefetch:
            for first in self.forward_order[:self.prefetch]:
                self.start_gather(first)

    def after_forward(self, output) -> None:
        if self._this_forward:
            # Later forwards prefetch in the order this one ran (each unit once).
            seen = []
            for unit in self._this_forward:
                if unit not in seen:
                    seen.append(unit)
            self.forward_order = seen
        root = self.engine.root_unit
        if root is not None:
            self.reshard(root)
            self.register_pre_backward(output, root)
