"""PowerSGD (Vogels et al., NeurIPS 2019): a rank-r approximation of each gradient matrix from
one step of subspace iteration, warm-started from the previous step, with error feedback.

Per bucket, as PyTorch's `powerSGD_hook`: a parameter of two or more dimensions is seen as an
n x m matrix M (first dimension by the rest) and compressed when its factors are smaller than it
by at least `min_compression_rate` ((n + m)·r·rate < n·m); vectors (biases, norms) and small
matrices are all-reduced as they are, packed together. For the compressed ones, with Q (m x r)
kept from the last step (random, the same on every rank, at the first):
  P = M Q, all-reduced (one collective with the uncompressed values); P orthonormalised (QR);
  Q = Mᵀ P, all-reduced and divided by N; M is replaced by P Qᵀ, the average's projection onto
  span(P), the same on every rank.
M is the gradient plus the residual, and the residual becomes M - P Qᵀ (local minus the shared
approximation, as in the paper; for uncompressed values local minus the average, which sums
to zero over ranks). The first `warmup_steps` steps all-reduce the whole bucket uncompressed
(PyTorch's `start_powerSGD_iter`): early gradients change fast and compress badly. Bytes per
step: 4·(Σ n·r + uncompressed) + 4·Σ m·r instead of 4·Σ n·m. At r ≥ min(n, m) the projection is
exact and a step equals DDP's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import comm
from ..errors import ConfigError
from ..flat.ranges import offsets
from .base import Finish, Residual, world_of


class PowerSGDCodec:
    def __init__(self, bucket_index: int, flat: torch.Tensor, views: list[torch.Tensor], config: PowerSGD):
        self.config = config
        self.steps = 0
        self.matrices: list[tuple[int, int, int, int]] = []  # (position, n, m, r)
        self.plain: list[int] = []  # positions all-reduced as they are
        for position, view in enumerate(views):
            n = view.shape[0] if view.ndim > 1 else 0
            m = view.numel() // n if n else 0
            r = min(config.rank, n, m) if n else 0
            if view.ndim > 1 and (n + m) * r * config.min_compression_rate < n * m:
                self.matrices.append((position, n, m, r))
            else:
                self.plain.append(position)
        p_sizes = [n * r for _, n, _, r in self.matrices]
        q_sizes = [m * r for _, _, m, r in self.matrices]
        plain_size = sum(views[i].numel() for i in self.plain)
        self.p_offsets, self.q_offsets = offsets(p_sizes), offsets(q_sizes)
        self.first = torch.empty(sum(p_sizes) + plain_size, dtype=torch.float32, device=flat.device)  # P, then plain
        self.p_total = sum(p_sizes)
        generator = torch.Generator().manual_seed(config.seed + bucket_index)  # the same Q on every rank
        self.q = torch.randn(sum(q_sizes), generator=generator, dtype=torch.float32).to(flat.device)
        self.residual = Residual(flat)
        self.offsets = offsets([v.numel() for v in views])  # where each view starts in `flat`

    def _p(self, k: int) -> torch.Tensor:
        _, n, _, r = self.matrices[k]
        return self.first[self.p_offsets[k]:self.p_offsets[k] + n * r].view(n, r)

    def _qt(self, k: int) -> torch.Tensor:
        """Qᵀ (r x m), kept transposed: Mᵀ P as (Pᵀ M)ᵀ reads M row by row, 20x faster on CPU."""
        _, _, m, r = self.matrices[k]
        return self.q[self.q_offsets[k]:self.q_offsets[k] + m * r].view(r, m)

    def start(self, flat, views, group):
        world = world_of(group)
        self.steps += 1
        if self.steps <= self.config.warmup_steps or not self.matrices:
            flat.div_(world)
            return Finish([comm.all_reduce(flat, group=group, async_op=True)])
        self.residual.correct(flat)
        for k, (position, n, m, _) in enumerate(self.matrices):
            torch.mm(views[position].reshape(n, m), self._qt(k).t(), out=self._p(k))
        plain = self.first[self.p_total:]
        at = 0
        for position in self.plain:
            size = views[position].numel()
            plain[at:at + size].copy_(views[position].reshape(-1))
            at += size
        work = comm.all_reduce(self.first, group=group, async_op=True)
        return Finish([work], lambda: self._finish(flat, views, group, world))

    def _finish(self, flat, views, group, world: int) -> None:
        for k, (position, n, m, _) in enumerate(self.matrices):
            p = self._p(k)
            p.copy_(torch.linalg.qr(p, mode="reduced").Q)
            torch.mm(p.t(), views[position].reshape(n, m), out=self._qt(k))
        comm.all_reduce(self.q, group=group)
        self.q.div_(world)
        # residual = M - P Qᵀ (one fused pass); then M becomes P Qᵀ, computed alike on every rank.
        for k, (position, n, m, _) in enumerate(self.matrices):
            local = views[position].view(n, m)
            torch.addmm(local, self._p(k), self._qt(k), alpha=-1, out=self._residual_view(position, views).view(n, m))
            torch.mm(self._p(k), self._qt(k), out=local)
        plain = self.first[self.p_total:].div_(world)
        at = 0
        for position in self.plain:
            size = views[position].numel()
            average = plain[at:at + size].view_as(views[position])
            torch.sub(views[position], average, out=self._residual_view(position, views))
            views[position].copy_(average)
            at += size

    def _residual_view(self, position: int, views) -> torch.Tensor:
        start = self.offsets[position]
        return self.residual.value[start:start + views[position].numel()].view_as(views[position])

    def state_tensors(self) -> dict:
        return {"residual": self.residual.value, "q": self.q, "steps": torch.tensor(self.steps)}

    def load_state_tensors(self, state: dict) -> None:
        self.residual.value.copy_(state["residual"])
        self.q.copy_(state["q"])
        self.steps = int(state["steps"])


@dataclass(frozen=True)
class PowerSGD:
    """`compress="powersgd:RANK"`."""

    rank: int = 2
    """Rank r of each matrix's approximation."""
    warmup_steps: int = 10
    """Uncompressed steps first (PyTorch's start_powerSGD_iter)."""
    min_compression_rate: float = 2.0
    """Compress a matrix only if its factors are this many times smaller than it (PyTorch's default)."""
    seed: int = 0
    """Seed of the first Q (the same on every rank)."""

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"PowerSGD rank must be a whole number of at least 1, got {self.rank!r}")
        if self.warmup_steps < 0 or not math.isfinite(self.min_compression_rate) or self.min_compression_rate < 0:
            raise ConfigError("PowerSGD warmup_steps and min_compression_rate must be at least 0")

    @property
    def name(self) -> str:
        return f"powersgd:{self.rank}"

    def codec(self, bucket_index, flat, views) -> PowerSGDCodec:
        return PowerSGDCodec(bucket_index, flat, views, self)
