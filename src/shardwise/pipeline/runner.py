"""Running a schedule: this rank's stages, point-to-point sends and receives, one training step.

[Note: pipeline execution]
`PipelineRunner.train_step(inputs, targets, loss_fn)` cuts the batch into M equal micro-batches
along dim 0 and walks this rank's action list ([Note: pipeline schedules]):
- F: the stage's layers on the micro-batch (stage 0) or on the received activation, made a leaf
  that requires grad; the last stage computes loss_fn(output, targets_i) / M and keeps it.
- send_act / send_grad: `isend`, asynchronous; the tensor is kept until the end of the step.
- recv_act / recv_grad: `irecv`, posted ahead (the next receive is posted before each compute,
  so the transfer overlaps it) and waited for just before the compute that needs it. A
  gradient has the shape of the output it belongs to; an activation's shape travels in a small
  header with the first micro-batch of each step on each edge (micro-batches are equal).
- B: backward of the stored output with the received gradient (the loss on the last stage);
  the input leaf's `.grad` is what goes up. A zero-bubble schedule splits it: B gives only the
  input's gradient and W, later, the weights' ([Note: split backward]).
Gradients accumulate over micro-batches in `.grad`, so after the step each parameter holds the
gradient of the mean loss over the whole batch, as one process would compute it. Parameters
shared by layers on several ranks (tied embeddings) then have their gradients summed over
those ranks. The mean loss is broadcast from the last stage's rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import comm
from ..errors import ConfigError
from .schedules import COMPUTE, Action, Schedule
from .split_backward import WeightGradients

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_HEADER = 10  # dtype code, ndim, up to 8 sizes
_TAG_BASE = 6 << 16


class Stage(nn.Module):
    """Consecutive layers of the model, run in order."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass
class StepRecord:
    """One step as it ran on this rank (`runner.recording = True`): when each forward and
    backward started and ended, and the bytes of activations autograd kept for backward."""

    spans: list = field(default_factory=list)
    """(kind, micro-batch, stage, start, end), perf_counter seconds."""
    stored: dict = field(default_factory=dict)
    """(micro-batch, stage) -> bytes saved for backward by its forward."""
    live: int = 0
    peak_activation_bytes: int = 0

    def run(self, action: Action, compute, parameters: set[int], frees: bool) -> None:
        """Time `compute`; for a forward, count the storages autograd saves that are not
        parameters' (`parameters`: their storages' addresses); `frees`: the action ends the
        micro-batch's stored activations (its B, or its W when the backward is split)."""
        key = (action.microbatch, action.stage)
        start = time.perf_counter()
        if action.kind == "F":
            seen: dict[int, int] = {}

            def pack(t: torch.Tensor):
                storage = t.untyped_storage()
                if storage.data_ptr() not in parameters:
                    seen[storage.data_ptr()] = storage.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                compute()
            self.stored[key] = sum(seen.values())
            self.live += self.stored[key]
            self.peak_activation_bytes = max(self.peak_activation_bytes, self.live)
        else:
            compute()
            if frees:
                self.live -= self.stored.get(key, 0)
        self.spans.append((action.kind, action.microbatch, action.stage, start, time.perf_counter()))


class PipelineRunner:
    def __init__(self, schedule: Schedule, stages: dict[int, Stage], ranks: list[int], group,
                 tied: list[tuple[nn.Parameter, list[int]]]):
        """`stages`: this rank's stages by index; `ranks[r]`: the global rank of pipeline rank r;
        `tied`: parameters held by several ranks, with those ranks (global, sorted)."""
        self.schedule, self.stages, self.ranks, self.group, self.tied = schedule, stages, ranks, group, tied
        self.rank = ranks.index(torch.distributed.get_rank())
        self.last_stage = schedule.stages - 1
        self.recording = False
        self.last_record: StepRecord | None = None
        self.split = WeightGradients(list(stages.values())) if schedule.splits_backward else None

    def parameter_storages(self) -> set[int]:
        return {p.untyped_storage().data_ptr() for stage in self.stages.values() for p in stage.parameters()}

    def _tag(self, kind: int, microbatch: int, edge: int) -> int:
        return _TAG_BASE + (microbatch * self.schedule.stages + edge) * 3 + kind

    def _peer(self, stage: int) -> int:
        return self.ranks[self.schedule.rank_of(stage)]

    def train_step(self, inputs: torch.Tensor, targets, loss_fn) -> torch.Tensor:
        step = _Step(self, *self._micro(inputs, targets), loss_fn, train=True)
        step.run()
        self.last_record = step.record
        self._sum_tied_gradients()
        return self._mean_loss(step.loss_sum)

    @torch.no_grad()
    def eval_step(self, inputs: torch.Tensor, targets, loss_fn) -> torch.Tensor:
        """The mean loss of the batch, forwards only (the schedule's forward order)."""
        step = _Step(self, *self._micro(inputs, targets), loss_fn, train=False)
        step.run()
        return self._mean_loss(step.loss_sum)

    def _micro(self, inputs: torch.Tensor, targets) -> tuple:
        """The micro-batches of the inputs (first stage's rank) and targets (last stage's)."""
        m = self.schedule.microbatches
        if inputs.shape[0] % m:
            raise ConfigError(f"the batch of {inputs.shape[0]} does not split into {m} equal micro-batches: "
                              f"give a batch that is a multiple of {m}, or other --microbatches")
        micro_inputs = inputs.chunk(m) if self._holds(0) else None
        micro_targets = targets.chunk(m) if targets is not None and self._holds(self.last_stage) else None
        return micro_inputs, micro_targets

    def _holds(self, stage: int) -> bool:
        return stage in self.stages

    def _sum_tied_gradients(self) -> None:
        """Each shared parameter's gradient summed over the ranks holding it, in rank order, so
        every copy gets the same sum and takes the same step."""
        me = torch.distributed.get_rank()
        for index, (p, holders) in enumerate(self.tied):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            tag = _TAG_BASE - 1 - index
            sends = [comm.isend(p.grad, peer, group=self.group, tag=tag) for peer in holders if peer != me]
            parts = {me: p.grad.clone()}
            for peer in holders:
                if peer != me:
                    parts[peer] = torch.empty_like(p.grad)
                    comm.irecv(parts[peer], peer, group=self.group, tag=tag).wait()
            for work in sends:
                work.wait()
            total = parts[holders[0]]
            for peer in holders[1:]:
                total = total + parts[peer]
            p.grad.copy_(total)

    def _mean_loss(self, loss_sum: torch.Tensor | None) -> torch.Tensor:
        loss = loss_sum.detach().clone() if loss_sum is not None else torch.zeros((), dtype=torch.float32)
        loss = loss.float().reshape(())
        comm.broadcast(loss, src=self._peer(self.last_stage), group=self.group)
        return loss


class _Step:
    """One step's state: stored inputs and outputs per (micro-batch, stage), messages in flight."""

    def __init__(self, runner: PipelineRunner, micro_inputs, micro_targets, loss_fn, train: bool):
        self.r, self.micro_inputs, self.micro_targets, self.loss_fn = runner, micro_inputs, micro_targets, loss_fn
        self.train = train
        self.inputs: dict[tuple[int, int], torch.Tensor] = {}
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self.received: dict[tuple[str, int, int], tuple[object, torch.Tensor]] = {}
        self.act_shape: dict[int, tuple[torch.Size, torch.dtype]] = {}  # by receiving stage
        self.grads_in: dict[tuple[int, int], torch.Tensor] = {}
        self.pending: dict[tuple[int, int], object] = {}  # split backward: from F to W
        self.headers_sent: set[int] = set()  # receiving stages that know this step's activation shape
        self.sends: list[tuple[object, torch.Tensor]] = []
        self.loss_sum: torch.Tensor | None = None
        self.record = StepRecord() if runner.recording and train else None

    def run(self) -> None:
        actions = self.r.schedule.actions[self.r.rank]
        if not self.train:
            actions = tuple(a for a in actions if a.kind in ("F", "recv_act", "send_act"))
        frees = "W" if self.r.split is not None else "B"
        for index, action in enumerate(actions):
            if action.kind in COMPUTE:
                self._post_next_receive(actions, index)
                if self.record is not None:
                    self.record.run(action, lambda: getattr(self, "_" + action.kind)(action), self.r.parameter_storages(),
                                    action.kind == frees)
                    continue
            getattr(self, "_" + action.kind)(action)
        for work, _ in self.sends:
            work.wait()

    # receiving ----------------------------------------------------------------------------------
    def _post_next_receive(self, actions: tuple[Action, ...], index: int) -> None:
        for later in actions[index + 1:]:
            if later.kind in ("recv_act", "recv_grad"):
                self._post(later)
                return

    def _post(self, action: Action) -> None:
        key = (action.kind, action.microbatch, action.stage)
        if key in self.received:
            return
        if action.kind == "recv_grad":
            output = self.outputs.get((action.microbatch, action.stage))
            if output is None:
                return
            buffer = torch.empty_like(output)
            tag = self.r._tag(2, action.microbatch, action.stage)
            source = self.r._peer(action.stage + 1)
        else:
            known = self.act_shape.get(action.stage)
            if known is None:
                return
            buffer = torch.empty(known[0], dtype=known[1])
            tag = self.r._tag(1, action.microbatch, action.stage - 1)
            source = self.r._peer(action.stage - 1)
        self.received[key] = (comm.irecv(buffer, source, group=self.r.group, tag=tag), buffer)

    def _take(self, action: Action) -> torch.Tensor:
        if action.kind == "recv_act" and action.stage not in self.act_shape:
            header = torch.empty(_HEADER, dtype=torch.int64)
            comm.irecv(header, self.r._peer(action.stage - 1), group=self.r.group,
                       tag=self.r._tag(0, action.microbatch, action.stage - 1)).wait()
            ndim = int(header[1])
            self.act_shape[action.stage] = (torch.Size(header[2:2 + ndim].tolist()), _DTYPES[int(header[0])])
        self._post(action)
        work, buffer = self.received.pop((action.kind, action.microbatch, action.stage))
        work.wait()
        return buffer

    def _recv_act(self, action: Action) -> None:
        self.inputs[(action.microbatch, action.stage)] = self._take(action).requires_grad_(self.train)

    def _recv_grad(self, action: Action) -> None:
        self.grads_in[(action.microbatch, action.stage)] = self._take(action)

    # sending ------------------------------------------------------------------------------------
    def _send(self, tensor: torch.Tensor, dst_stage: int, tag: int) -> None:
        self.sends.append((comm.isend(tensor, self.r._peer(dst_stage), group=self.r.group, tag=tag), tensor))

    def _send_act(self, action: Action) -> None:
        key = (action.microbatch, action.stage)
        output = (self.outputs[key] if self.train else self.outputs.pop(key)).detach()
        if not output.is_contiguous():
            output = output.contiguous()
        if action.stage + 1 not in self.headers_sent:
            if output.dtype not in _DTYPES or output.ndim > _HEADER - 2:
                raise ConfigError(f"a pipeline stage must output one floating tensor of at most {_HEADER - 2} dims, "
                                  f"got {output.dtype} of shape {tuple(output.shape)}")
            header = torch.zeros(_HEADER, dtype=torch.int64)
            header[0], header[1] = _DTYPES.index(output.dtype), output.ndim
            header[2:2 + output.ndim] = torch.tensor(output.shape)
            self._send(header, action.stage + 1, self.r._tag(0, action.microbatch, action.stage))
            self.headers_sent.add(action.stage + 1)
        self._send(output, action.stage + 1, self.r._tag(1, action.microbatch, action.stage))

    def _send_grad(self, action: Action) -> None:
        grad = self.inputs.pop((action.microbatch, action.stage)).grad
        self._send(grad.contiguous(), action.stage - 1, self.r._tag(2, action.microbatch, action.stage - 1))

    # computing ----------------------------------------------------------------------------------
    def _F(self, action: Action) -> None:
        mb, stage = action.microbatch, action.stage
        x = self.micro_inputs[mb] if stage == 0 else (self.inputs[(mb, stage)] if self.train
                                                        else self.inputs.pop((mb, stage)))
        if self.train and self.r.split is not None:
            output, self.pending[(mb, stage)] = self.r.split.forward(lambda: self.r.stages[stage](x))
        else:
            output = self.r.stages[stage](x)
        if stage == self.r.last_stage:
            if self.micro_targets is None:
                raise ConfigError("the last pipeline stage needs the targets: pass them to train_step on every rank")
            loss = self.loss_fn(output, self.micro_targets[mb])
            if loss.numel() != 1:
                raise ConfigError(f"loss_fn must return one number per micro-batch, got shape {tuple(loss.shape)}")
            detached = loss.detach().reshape(())
            self.loss_sum = detached / self.r.schedule.microbatches if self.loss_sum is None \
                else self.loss_sum + detached / self.r.schedule.microbatches
            output = loss / self.r.schedule.microbatches
        if self.train or stage != self.r.last_stage:
            self.outputs[(mb, stage)] = output

    def _B(self, action: Action) -> None:
        mb, stage = action.microbatch, action.stage
        output = self.outputs.pop((mb, stage))
        grad = None if stage == self.r.last_stage else self.grads_in.pop((mb, stage))  # the loss: none
        if self.r.split is not None:
            self.r.split.input_backward(output, grad, self.inputs.get((mb, stage)) if stage > 0 else None,
                                        self.pending[(mb, stage)])
        else:
            torch.autograd.backward(output, grad)
        if stage == 0:
            self.inputs.pop((mb, stage), None)

    def _W(self, action: Action) -> None:
        self.r.split.weight_backward(self.pending.pop((action.microbatch, action.stage)))
