"""Data parallelism between the replicas of a mesh: what happens to gradients after each
`train_step`, and to parameters after each optimizer step.

- "ddp": gradients averaged over the replicas (one all-reduce of the flattened gradients).
- "zero1": the same average, then each replica steps only its 1/D of the elements (the
  optimizer's state exists for those alone) and the updated parameters are all-gathered.
- "zero2": a reduce-scatter gives each replica the average of its 1/D only, and the full
  gradients are dropped at once; then as zero1.
The parameters are laid end to end in one flat buffer (padded to a multiple of D), which each
replica owns an equal run of ([Note: ZeRO memory formulas]).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import comm
from ..flat.ranges import offsets
from ..strategy.optim_rebuild import optimizer_over_pieces, piece_parameter
from ..pipeline.module import LocalGradients
from ..strategy.parts_state import Share

DP_STRATEGIES = ("ddp", "zero1", "zero2")


class AveragedReplicas(LocalGradients):
    """"ddp": the mean gradient over the replicas, in one all-reduce of a persistent flat buffer
    whose views become the parameters' `.grad` (the replicas then hold the same average, so the
    norm counts it once: `norm_part` needs no sum over them)."""

    def __init__(self, group, local: list[nn.Parameter], optimizer):
        super().__init__(local)
        self.group, self.size, self.optimizer = group, comm.group_size(group), optimizer
        self.starts = offsets([p.numel() for p in self.local])
        self.flat = torch.zeros(sum(p.numel() for p in self.local)) if self.size > 1 else None

    def after_backward(self) -> None:
        if self.flat is None or not self.local:
            return
        for p, start in zip(self.local, self.starts):
            view = self.flat[start:start + p.numel()]
            if p.grad is None:
                view.zero_()
            elif p.grad.data_ptr() != view.data_ptr():  # zero_grad(set_to_none=False) keeps the views
                view.copy_(p.grad.reshape(-1))
        self.flat.div_(self.size)
        comm.all_reduce(self.flat, group=self.group)
        for p, start in zip(self.local, self.starts):
            p.grad = self.flat[start:start + p.numel()].view_as(p)

    def own_tensors(self) -> list[torch.Tensor]:
        return [] if self.flat is None else [self.flat]


class ShardedReplicas(LocalGradients):
    """"zero1" / "zero2" over the replicas; see the module's docstring."""

    splits_optimizer = True

    def __init__(self, group, local: list[nn.Parameter], optimizer, stage: int):
        super().__init__(local)
        self.group, self.stage = group, stage
        self.size, self.index = comm.group_size(group), torch.distributed.get_rank(group)
        numels = [p.numel() for p in self.local]
        self.starts = offsets(numels)
        total = sum(numels)
        self.chunk = -(-total // self.size) if total else 0
        self.flat = torch.zeros(self.chunk * self.size, dtype=torch.float32)
        with torch.no_grad():
            for p, start in zip(self.local, self.starts):
                self.flat[start:start + p.numel()].copy_(p.detach().reshape(-1))
                p.data = self.flat[start:start + p.numel()].view_as(p)
        self.grad_flat = torch.zeros_like(self.flat) if stage == 1 else None
        self.grad_shard = torch.zeros(self.chunk, dtype=torch.float32)
        lo, hi = self.index * self.chunk, (self.index + 1) * self.chunk
        # id(p) -> (piece, start in p, end in p, start in this replica's run)
        self.pieces: dict[int, tuple[nn.Parameter, int, int, int]] = {}
        for p, start in zip(self.local, self.starts):
            a, b = max(start, lo), min(start + p.numel(), hi)
            if a < b:
                piece = piece_parameter(self.flat[a:b], self.grad_shard[a - lo:b - lo])
                self.pieces[id(p)] = (piece, a - start, b - start, a - lo)
        self.optimizer = optimizer_over_pieces(optimizer, {k: [v[0]] for k, v in self.pieces.items()})
        self.optimizer.register_step_post_hook(lambda *_: self._gather())

    def after_backward(self) -> None:
        lo = self.index * self.chunk
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.local]
        if self.stage == 1:
            for g, p, start in zip(grads, self.local, self.starts):
                self.grad_flat[start:start + p.numel()].copy_(g)
            self.grad_flat.div_(self.size)
            comm.all_reduce(self.grad_flat, group=self.group)
            self.grad_shard.copy_(self.grad_flat[lo:lo + self.chunk])
            for p, start in zip(self.local, self.starts):
                p.grad = self.grad_flat[start:start + p.numel()].view_as(p)
        else:
            full = torch.zeros_like(self.flat)
            for g, p, start in zip(grads, self.local, self.starts):
                full[start:start + p.numel()].copy_(g)
                p.grad = None  # only this replica's average stays
            full.div_(self.size)
            comm.reduce_scatter(self.grad_shard, full, group=self.group)
        for piece, _, _, at in self.pieces.values():
            piece.grad = self.grad_shard[at:at + piece.numel()]  # zero_grad() may have dropped it

    def _gather(self) -> None:
        lo = self.index * self.chunk
        mine = self.flat[lo:lo + self.chunk].clone()
        comm.all_gather(self.flat, mine, group=self.group)
        for p in self.local:
            p.grad = None  # consumed by this step; the optimizer's zero_grad() does not see these

    def norm_part(self, counts, norm_type: float) -> torch.Tensor:
        """Σ |g|^norm_type over this replica's shard of the averaged gradient, summed over the
        replicas (their shards are disjoint)."""
        total = torch.zeros((), dtype=torch.float64)
        for p in self.local:
            found = self.pieces.get(id(p))
            if found is not None and counts(p):
                total += found[0].grad.double().abs().pow(norm_type).sum()
        comm.all_reduce(total, group=self.group)
        return total

    def scale(self, coef: float) -> None:
        self.grad_shard.mul_(coef)
        if self.grad_flat is not None:
            self.grad_flat.mul_(coef)  # the full gradients zero1 shows as .grad

    def shares(self, p: nn.Parameter) -> list[Share]:
        found = self.pieces.get(id(p))
        return [] if found is None else [Share(found[1], found[2], found[0])]

    def own_tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.flat, self.grad_flat, self.grad_shard) if t is not None]


def make_replicas(dp_strategy: str, group, local: list[nn.Parameter], optimizer) -> LocalGradients:
    """The replicas and the optimizer to return: `replicas.optimizer` (rebuilt over shards for zero)."""
    if dp_strategy == "ddp":
        return AveragedReplicas(group, local, optimizer)
    return ShardedReplicas(group, local, optimizer, stage=int(dp_strategy[-1]))
