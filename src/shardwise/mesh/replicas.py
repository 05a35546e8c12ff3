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
from ..strategy.parts_state import Share

DP_STRATEGIES = ("ddp", "zero1", "zero2")


class AveragedReplicas:
    """"ddp": the mean gradient over the replicas."""

    splits_optimizer = False

    def __init__(self, group, local: list[nn.Parameter], optimizer):
        self.group, self.local, self.optimizer = group, [p for p in local if p.requires_grad], optimizer
        self.size = comm.group_size(group)

    def after_backward(self) -> None:
        if self.size == 1 or not self.local:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.local])
        flat.div_(self.size)
        comm.all_reduce(flat, group=self.group)
        for p, start in zip(self.local, offsets([p.numel() for p in self.local])):
            p.grad = flat[start:start + p.numel()].view_as(p)

    def shares(self, p: nn.Parameter) -> list[Share]:
        return [Share(0, p.numel(), p)]

    def norm_part(self, counts, norm_type: float) -> torch.Tensor:
        """Σ |g|^norm_type over the gradient elements this rank counts (the replicas hold the
        same average, so each counts it once: no sum over them)."""
        return local_norm_part(self.local, counts, norm_type)

    def scale(self, coef: float) -> None:
        for p in self.local:
            if p.grad is not None:
                p.grad.mul_(coef)

    def own_tensors(self) -> list[torch.Tensor]:
        return []


class ShardedReplicas:
    """"zero1" / "zero2" over the replicas; see the module's docstring."""

    splits_optimizer = True

    def __init__(self, group, local: list[nn.Parameter], optimizer, stage: int):
        self.group, self.stage = group, stage
        self.size, self.index = comm.group_size(group), torch.distributed.get_rank(group)
        self.local = [p for p in local if p.requires_grad]
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


def local_norm_part(params: list[nn.Parameter], counts, norm_type: float) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for p in params:
        if p.grad is not None and counts(p):
            total += p.grad.double().abs().pow(norm_type).sum()
    return total


def make_replicas(dp_strategy: str, group, local: list[nn.Parameter], optimizer):
    if dp_strategy == "ddp":
        return AveragedReplicas(group, local, optimizer)
    return ShardedReplicas(group, local, optimizer, stage=int(dp_strategy[-1]))
