"""The wrapped model of periodic strategies, and what happens around the optimizer's step.

[Note: periodic averaging]
The trainable parameters are views of one flat fp32 buffer, so averaging them over ranks is one
all-reduce. Backward communicates nothing (`no_sync()` has nothing to suspend). The strategies
act at the optimizer step, through torch's step hooks on the user's own optimizer:
- LocalSGD: during the warm-up a pre-step hook averages the gradients (one all-reduce of a
  flat copy), so the step is DDP's; afterwards a post-step hook averages the parameters every
  `period` steps (PyTorch's PeriodicModelAverager). With period 1 and plain SGD that is again
  DDP's update: the mean of p - lr·g_i is p - lr·mean(g).
- DiLoCo: a post-step hook counts inner steps; every `inner_steps` it all-reduces the pseudo-
  gradient Δ = global - local (averaged over ranks), steps the global parameters with Nesterov
  SGD(outer_lr, outer_momentum) on Δ, and copies them into the local parameters. The inner
  optimizer's state stays local.
Bytes: one all-reduce of the parameters per average instead of one of the gradients per step,
so H times fewer over a run (after LocalSGD's warm-up).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import comm
from ..flat.ranges import offsets
from ..strategy.buffers import BufferSync
from ..strategy.module import StrategyModule
from ..strategy.prepare import unique_parameters


class PeriodicModule(StrategyModule):
    """The inner module with its trainable parameters as views of one flat buffer."""

    strategy_name = "periodic"

    def __init__(self, module: nn.Module, group, broadcast_buffers: bool):
        super().__init__(module)
        self.group = group
        self.world_size = comm.group_size(comm.default_group(group))
        self.buffer_sync = BufferSync(module, group, broadcast_buffers)
        self.trainable = [p for p in unique_parameters(module) if p.requires_grad]
        numels = [p.numel() for p in self.trainable]
        self.flat = torch.cat([p.detach().reshape(-1).float() for p in self.trainable])
        with torch.no_grad():
            for p, n, start in zip(self.trainable, numels, offsets(numels)):
                p.data = self.flat[start:start + n].view(p.shape)
        self.grads = torch.zeros_like(self.flat)  # the warm-up's gradient average
        self.steps = 0
        self.extra: dict[str, torch.Tensor] = {}  # what the strategy keeps besides (DiLoCo's outer state)

    def forward(self, *args, **kwargs):
        self.buffer_sync.before_forward()
        output = self.module(*args, **kwargs)
        self.buffer_sync.after_forward(True)
        return output

    def average_parameters(self) -> None:
        self.flat.div_(self.world_size)
        comm.all_reduce(self.flat, group=self.group)

    def average_gradients(self) -> None:
        """Every trainable parameter's `.grad` replaced by its mean over ranks (None counts as 0)."""
        at = 0
        for p in self.trainable:
            n = p.numel()
            if p.grad is None:
                self.grads[at:at + n].zero_()
            else:
                self.grads[at:at + n].copy_(p.grad.reshape(-1))
            at += n
        self.grads.div_(self.world_size)
        comm.all_reduce(self.grads, group=self.group)
        at = 0
        for p in self.trainable:
            n = p.numel()
            p.grad = self.grads[at:at + n].view(p.shape).to(p.dtype)
            at += n

    def own_tensors(self):
        return [self.flat, self.grads, *self.extra.values()]

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"periodic.steps": torch.tensor(self.steps), **{f"periodic.{k}": v.clone() for k, v in self.extra.items()}}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if "periodic.steps" in state:
            self.steps = int(state["periodic.steps"])
        for key, value in self.extra.items():
            saved = state.get(f"periodic.{key}")
            if saved is not None and saved.shape == value.shape:
                value.copy_(saved)


def local_sgd_hooks(model: PeriodicModule, optimizer: torch.optim.Optimizer, period: int, warmup_steps: int) -> None:
    """See [Note: periodic averaging]."""

    def before_step(optimizer, args, kwargs):
        if model.steps < warmup_steps:
            model.average_gradients()

    def after_step(optimizer, args, kwargs):
        model.steps += 1
        if model.steps > warmup_steps and (model.steps - warmup_steps) % period == 0:
            model.average_parameters()

    optimizer.register_step_pre_hook(before_step)
    optimizer.register_step_post_hook(after_step)


def diloco_hooks(model: PeriodicModule, optimizer: torch.optim.Optimizer, config) -> None:
    """See [Note: periodic averaging]."""
    model.extra["global"] = model.flat.clone()  # the outer parameters, the same on every rank
    model.extra["momentum"] = torch.zeros_like(model.flat)

    def after_step(optimizer, args, kwargs):
        model.steps += 1
        if model.steps % config.inner_steps:
            return
        global_, momentum = model.extra["global"], model.extra["momentum"]
        delta = torch.sub(global_, model.flat)  # the pseudo-gradient
        delta.div_(model.world_size)
        comm.all_reduce(delta, group=model.group)
        momentum.mul_(config.outer_momentum).add_(delta)
        global_.sub_(delta.add_(momentum, alpha=config.outer_momentum), alpha=config.outer_lr)  # Nesterov
        model.flat.copy_(global_)

    optimizer.register_step_post_hook(after_step)
