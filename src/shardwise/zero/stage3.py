"""Stage 3's schedule: gather a unit's parameters just before its module runs, forward and
backward, prefetch the next unit meanwhile, and free them right after use.

[Note: stage 3 schedule]
Forward: a pre-hook on each unit's module waits for its all-gather (started earlier as a
prefetch, or now) and starts the gathers of the next `prefetch` uses in the sequence the
previous forward ran (registration order the first time); a post-hook frees the unit. Each
call of a unit module is a *use*, numbered by its position in this forward's sequence; a module
called twice (blocks 0,1,2,3,0) has two uses. Backward: a hook on each use's outputs fires when
their gradient is ready, just before that use's own backward: it gathers the unit again and
prefetches the uses before it in this forward's sequence; once all of the unit's gradients
have been taken (see [Note: ZeRO gradient flow]) the unit is freed. The root unit (parameters
outside any unit, tied ones) is gathered around the whole forward and again from the start of
backward until its gradients are taken.

A unit always returns to its gather slot (see [Note: buffer reuse]). A reused unit stays
"in use" from its last use's backward to its first's, so the unit that shares its slot may find
it taken; backward runs uses in decreasing position (autograd runs the nodes created later
first), so a holder gathered for a later use has finished that use's backward and is freed,
to be gathered again before its earlier use's backward. Activation checkpointing reruns a
unit's forward inside backward: the hooks then only make sure the unit is gathered.

[Note: kept for backward]
Backward starts with the units the forward ended with: the root unit and the last use of the
forward's sequence (as the previous forward ran it). Freeing them after forward only to gather
them again at once would cost a gather each that nothing can overlap (the loss is all there is
between), so they stay gathered, as FSDP keeps its root unit (reshard_after_forward=False).
The peak of a forward followed by its backward is unchanged: backward's start holds them beside
every saved activation anyway; what runs in between (a second model, a large loss) meets them
gathered, and `ZeRO(keep_for_backward=False)` frees them after forward as before. A forward
under no_grad frees them; one that no backward follows leaves them to the optimizer step or the
next forward. Both free every unit still gathered (kept, or prefetched and never used), so no
unit reaches a forward with parameters from before a step.

[Note: stage 3 and torch.compile]
The hooks move parameters between buffers (`p.data = ...`) and communicate; traced by dynamo,
`p.data` assignments become in-place ops on graph inputs that bump the parameters' version
counters, and backward fails with "modified by an inplace operation". So every hook is
`torch._dynamo.disable`d: dynamo breaks the graph there and runs it eagerly, and compiles the
module bodies between, whose inputs are the gathered parameters.

[Note: desynchronised forwards]
Under stage 3 a forward is a collective: every rank must run every forward and backward of
the wrapped model, in the same order. A forward run by some ranks only (rank 0 evaluating)
would pair its gathers with whatever the others do next. Each gather carries its unit's index
as message tag (on gloo), so it can only pair with a gather of the same unit, which moves
the same data, and with the parity of the forward it serves, so that a rank one forward ahead
cannot pair its gathers with the same unit's gathers of its peers' previous forward (with a
single root unit, as small models have, that would mix shards from before and after an
optimizer step). Mismatched ranks then wait, and fail after the collective timeout with one line
that says what to do (`with sw.gathered(model):`), never with silently wrong parameters; a rank
left waiting in a gradient reduce-scatter fails with the same line. A rank
whose peer ran one forward more at the very end would finish without noticing, so at shutdown
(see [Note: shutdown hook]) every rank compares the number of forwards each ran.

[Note: stage 3 on CUDA]
Nothing here moves tensors between devices: gathers land on the shard's device. Prefetch needs
no side stream of ours: on NCCL an asynchronous all-gather already runs on the communicator's
own stream, and `wait()` only makes the current stream wait for it, so the gathers started
ahead overlap the compute of the unit before them. Gather slots live as long as the engine, so
no freed block can be handed out while a collective still writes into it.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from torch.utils._pytree import tree_flatten

from .. import comm
from ..comm.collectives import CollectiveError
from ..errors import ConfigError
from ..runtime import shutdown
from .engine import ZeroEngine
from .flat_unit import STATE_TAG_BASE, FlatUnit

DESYNC_HINT = ("under zero3 every rank must run every forward and backward of the wrapped model; to evaluate, "
               "sample or save on some ranks only, do it inside `with sw.gathered(model):` (entered by every rank)")


def in_backward() -> bool:
    """True while autograd runs a backward pass (a checkpointed forward being recomputed)."""
    return torch._C._current_graph_task_id() != -1


class Stage3Schedule:
    def __init__(self, engine: ZeroEngine):
        self.engine = engine
        self.slots = engine.slots
        self.prefetch = engine.config.prefetch
        self.pending: dict[int, object] = {}  # unit index -> gather in flight
        self.registration_order: list[FlatUnit] = list(engine.module_units.values())
        self.last_sequence: list[FlatUnit] = []  # the uses of the last forward with hooks, in order
        self._this_forward: list[FlatUnit] = []
        self.position: dict[int, int] = {}  # unit index -> the use it is gathered for
        self.summoned = False  # inside gathered(): parameters whole, hooks stand aside
        self._cursor = 1 << 30
        self.forwards = 0  # forwards run through the hooks; equal on every rank of a correct job
        self.kept: list[FlatUnit] = []  # gathered at the end of forward for the backward that follows
        self.failed = False  # a gather failed here: this rank has reported it already
        shutdown.on_shutdown(self.check_forwards_agree)
        self._handles = []
        for module, unit in engine.module_units.items():
            self._handles.append(module.register_forward_pre_hook(self._make_pre_forward(unit)))
            self._handles.append(module.register_forward_hook(self._make_post_forward(unit)))
        engine.on_unit_grads_done = self.reshard
        engine.on_backward_end = self.reshard_all
        engine.on_step = self.reshard_all  # the shards have changed: nothing stays gathered
        engine.on_reduce_failed = self._reduce_failed

    # --- gathering ---------------------------------------------------------------------------

    def start_gather(self, unit: FlatUnit, prefetch: bool = True, position: int = -1, backward: bool = False) -> None:
        """Start gathering `unit` into its slot; a prefetch gives way if the slot is taken."""
        if unit.gathered or unit.index in self.pending:
            return
        if unit.slot is not None:
            holder = self.slots.occupant[unit.slot]
            if holder is not None and holder is not unit and holder.gathered:
                if prefetch:
                    return
                done_with = backward and self.position.get(holder.index, -1) > position  # see [Note: stage 3 schedule]
                done_with = done_with or (not backward and holder in self.kept)  # this forward ran longer than the last
                if holder.in_use and not done_with:
                    raise ConfigError(f"stage 3: unit {unit.index} needs gather slot {unit.slot}, held by unit "
                                      f"{holder.index} which is still in use; run with a larger ZeRO(prefetch=...)")
                self.reshard(holder)  # it will be gathered again when needed
            self.slots.occupant[unit.slot] = unit
        try:
            self.pending[unit.index] = unit.gather(async_op=True, forward=self.forwards)
        except CollectiveError as exc:
            self._failed(unit, exc)
        self.position[unit.index] = position

    def ensure_gathered(self, unit: FlatUnit, position: int = -1, backward: bool = False) -> None:
        self.start_gather(unit, prefetch=False, position=position, backward=backward)
        work = self.pending.pop(unit.index, None)
        if work is not None:
            self._wait(work, unit)
            unit.use_full()
        self.position[unit.index] = position
        unit.in_use = True

    @torch._dynamo.disable
    def in_forward_collective(self, run) -> None:
        """Run `run()`, a collective of the forward other than a gather (the buffer broadcast),
        failing as a gather does (see [Note: desynchronised forwards])."""
        try:
            run()
        except CollectiveError as exc:
            self.failed = True
            raise ConfigError(f"ZeRO-3 forward could not complete its collectives: {DESYNC_HINT} "
                              f"({str(exc).splitlines()[0]})") from exc

    def _wait(self, work, unit: FlatUnit) -> None:
        try:
            work.wait()
        except CollectiveError as exc:
            self._failed(unit, exc)

    def _failed(self, unit: FlatUnit, exc: CollectiveError):
        unit.gathered = False
        self.failed = True
        raise ConfigError(f"ZeRO-3 could not gather the parameters of unit {unit.index}: {DESYNC_HINT} "
                          f"({str(exc).splitlines()[0]})") from exc

    def _reduce_failed(self, unit: FlatUnit, exc: CollectiveError):
        self.failed = True
        raise ConfigError(f"ZeRO-3 could not reduce the gradients of unit {unit.index}: {DESYNC_HINT} "
                          f"({str(exc).splitlines()[0]})") from exc

    def reshard(self, unit: FlatUnit) -> None:
        work = self.pending.pop(unit.index, None)
        if work is not None:
            self._wait(work, unit)
        if unit.gathered:
            unit.free_full()

    def reshard_all(self) -> None:
        """End of backward: free whatever is still gathered."""
        for unit in self.engine.units:
            self.reshard(unit)

    def _next_uses(self, unit: FlatUnit, position: int) -> list[FlatUnit]:
        """The `prefetch` uses expected after this one: from the last forward's sequence while this
        forward follows it, else the units registered after this one."""
        if self.prefetch == 0:
            return []
        sequence = self.last_sequence
        if position < len(sequence) and sequence[position] is unit:
            return sequence[position + 1:position + 1 + self.prefetch]
        order = self.registration_order
        k = order.index(unit)
        return order[k + 1:k + 1 + self.prefetch]

    # --- module hooks ------------------------------------------------------------------------

    def _make_pre_forward(self, unit: FlatUnit):
        @torch._dynamo.disable  # see [Note: stage 3 and torch.compile]
        def hook(module, args):
            if self.summoned:
                return
            if in_backward():  # activation checkpointing recomputes this forward
                if not unit.gathered or unit.index in self.pending:
                    self.ensure_gathered(unit, self._recompute_position(unit), backward=True)
                unit.in_use = True
                return
            position = len(self._this_forward)
            self.ensure_gathered(unit, position)
            self._this_forward.append(unit)
            for nxt in self._next_uses(unit, position):
                self.start_gather(nxt)

        return hook

    def _recompute_position(self, unit: FlatUnit) -> int:
        """The use a recomputed forward belongs to: the unit's latest use before the backward's
        current position (reentrant checkpointing hides a use's outputs from pre_backward)."""
        uses = [k for k, u in enumerate(self.last_sequence) if u is unit and k < self._cursor]
        self._cursor = uses[-1] if uses else 0
        return self._cursor

    def _make_post_forward(self, unit: FlatUnit):
        @torch._dynamo.disable
        def hook(module, args, output):
            if self.summoned or in_backward():
                return
            position = len(self._this_forward) - 1
            sequence = self.last_sequence
            last_use = position == len(sequence) - 1 and sequence[position] is unit
            self.keep_or_reshard(unit, output, last_use)
            self.register_pre_backward(output, unit, position, self._this_forward)

        return hook

    def keep_or_reshard(self, unit: FlatUnit, output, keep: bool) -> None:
        """End of a unit's forward use: free it, unless it is the last of the forward and backward
        will need it first (see [Note: kept for backward])."""
        needs_grad = any(t.requires_grad for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor))
        if keep and self.engine.config.keep_for_backward and torch.is_grad_enabled() and needs_grad:
            self.kept.append(unit)
        else:
            self.reshard(unit)

    def register_pre_backward(self, output, unit: FlatUnit, position: int, sequence: list[FlatUnit]) -> None:
        if not torch.is_grad_enabled():
            return

        def pre_backward(grad):
            self._cursor = min(self._cursor, position)
            self.ensure_gathered(unit, position, backward=True)
            for earlier in range(position - 1, max(0, position - self.prefetch) - 1, -1):
                self.start_gather(sequence[earlier], position=earlier, backward=True)
            return None

        tensors, _ = tree_flatten(output)
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(pre_backward)

    # --- the root, around the whole model ---------------------------------------------------

    @torch._dynamo.disable
    def before_forward(self) -> None:
        if self.summoned:
            return
        self._this_forward = []
        self._cursor = 1 << 30  # the lowest use position backward has reached
        self.forwards += 1
        if not in_backward():  # free what earlier forwards left: kept for a backward that never came,
            self.kept.clear()  # or prefetched and never used, which an optimizer step may have made stale
            self.reshard_all()
        root = self.engine.root_unit
        if root is not None:
            self.ensure_gathered(root, len(self.last_sequence) + 1)
        first = self.last_sequence[:1] or self.registration_order[:1]
        if first and self.prefetch:
            self.start_gather(first[0])

    @torch._dynamo.disable
    def after_forward(self, output) -> None:
        if self.summoned:
            return
        if self._this_forward:
            self.last_sequence = self._this_forward  # later forwards prefetch in this order
        root = self.engine.root_unit
        if root is not None:
            self.keep_or_reshard(root, output, keep=True)
            self.register_pre_backward(output, root, len(self._this_forward), self._this_forward)

    def check_forwards_agree(self) -> None:
        """At shutdown: fail unless every rank ran as many forwards (see [Note: desynchronised
        forwards]). Skipped on a rank that is failing already, so it does not wait for its peers."""
        if self.failed or sys.exc_info()[0] is not None or getattr(sys, "last_value", None) is not None:
            return
        try:
            counts = comm.all_gather_object(self.forwards, self.engine.group)
        except CollectiveError as exc:
            raise ConfigError(f"ZeRO-3 could not confirm at exit that every rank ran the same forwards: {DESYNC_HINT} "
                              f"({str(exc).splitlines()[0]})") from exc
        if len(set(counts)) > 1:
            raise ConfigError(f"ranks ran different numbers of ZeRO-3 forwards ({counts}): {DESYNC_HINT}")

    # --- every parameter at once -------------------------------------------------------------

    @contextlib.contextmanager
    def summon_full(self):
        """Every unit's full parameters, in buffers of their own, for the duration (a collective).

        Read-only: the parameters are gathered from the compute shards and dropped on exit, so
        changes made inside are not kept (load a state dict to change parameters).
        """
        if self.summoned:  # nested: already whole
            yield
            return
        self.reshard_all()
        full = {}
        works = []
        for unit in self.engine.units:
            full[unit.index] = torch.empty(unit.layout.padded_total, dtype=unit.shard.dtype, device=unit.shard.device)
            works.append((unit, comm.all_gather(full[unit.index], unit.shard, group=unit.group, async_op=True,
                                               tag=STATE_TAG_BASE + unit.index)))
        for unit, work in works:
            self._wait(work, unit)
            unit.use_full(full[unit.index])
            unit.gathered = True
        self.summoned = True
        try:
            yield
        finally:
            self.summoned = False
            for unit in self.engine.units:
                unit.free_full()
