"""The distributed oracle: every question a solver asks costs exactly one all-reduce (one round).

[Note: rounds]
A round is one all-reduce call. The oracle packs everything a solver needs at one moment into
a single flat float64 buffer (objective values at several points, gradients, a Hessian-vector
product, the Hessian diagonal), all-reduces it once through `shardwise.comm`, and unpacks.
What each rank contributes are sums over its own rows; the oracle divides by the global row
count n and adds the L2 term, so every rank ends the round with the same numbers, and the
solvers above are pure functions of those numbers. Solvers never call a collective themselves:
`oracle.rounds` and `oracle.comm_bytes` are the whole communication of a solve.

The reduce function is injected: `comm.all_reduce` on a process group, or the identity for a
single process (unit tests, the reference solve), so the same solver code runs in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..comm.stats import ring_bytes
from .problems import LocalProblem

Reduce = Callable[[torch.Tensor], None]


def no_reduce(buffer: torch.Tensor) -> None:
    """The reduce of a world of one: the local sums already are the global ones."""


@dataclass
class Evaluation:
    """What one round returned; lists follow the order of the request."""

    values: list[float] = field(default_factory=list)
    """f at each point of `values_at`."""
    grad_values: list[float] = field(default_factory=list)
    """f at each point of `gradients_at`."""
    grads: list[torch.Tensor] = field(default_factory=list)
    """∇f at each point of `gradients_at`."""
    diagonals: list[torch.Tensor] = field(default_factory=list)
    """diag ∇²f at each point of `diagonals_at`."""
    hvp: torch.Tensor | None = None
    """∇²f(w) v for the requested (w, v)."""


class Oracle:
    """f(w) = (1/n) Σ_i loss_i(w) + (λ/2)‖w‖² over rows split across ranks; each `evaluate` is one round."""

    def __init__(self, local: LocalProblem, n_total: int, lam: float, reduce: Reduce = no_reduce, world_size: int = 1,
                 row_start: int = 0):
        self.local, self.n_total, self.lam = local, n_total, float(lam)
        self.reduce, self.world_size = reduce, world_size
        self.row_start = row_start  # global index of this rank's first row
        self.rounds = 0
        self.comm_bytes = 0.0  # ring wire bytes this rank moved, counted as comm/stats.py does

    @property
    def dim(self) -> int:
        return self.local.dim

    def all_reduce(self, buffer: torch.Tensor) -> torch.Tensor:
        """Sum `buffer` over ranks in place: one round (see [Note: rounds])."""
        self.rounds += 1
        self.comm_bytes += ring_bytes("all_reduce", buffer.numel() * buffer.element_size(), self.world_size)
        self.reduce(buffer)
        return buffer

    def evaluate(self, values_at: Sequence[torch.Tensor] = (), gradients_at: Sequence[torch.Tensor] = (),
                 diagonals_at: Sequence[torch.Tensor] = (),
                 hvp: tuple[torch.Tensor, torch.Tensor] | None = None) -> Evaluation:
        """One round: f at `values_at`, (f, ∇f) at `gradients_at`, diag ∇²f, and ∇²f(w) v, packed together."""
        parts: list[torch.Tensor] = []
        for w in values_at:
            parts.append(self.local.loss_grad_sum(w, with_grad=False)[0].reshape(1))
        for w in gradients_at:
            loss, grad = self.local.loss_grad_sum(w)
            parts += [loss.reshape(1), grad]
        for w in diagonals_at:
            parts.append(self.local.diag_sum(w))
        if hvp is not None:
            parts.append(self.local.hvp_sum(*hvp))
        if not parts:
            raise ValueError("evaluate() needs at least one request")
        buffer = self.all_reduce(torch.cat(parts))
        return self._unpack(buffer / self.n_total, values_at, gradients_at, diagonals_at, hvp)

    def _unpack(self, means, values_at, gradients_at, diagonals_at, hvp) -> Evaluation:
        out, offset, d = Evaluation(), 0, self.dim
        half_lam = 0.5 * self.lam
        for w in values_at:
            out.values.append(float(means[offset]) + half_lam * float(w.dot(w)))
            offset += 1
        for w in gradients_at:
            out.grad_values.append(float(means[offset]) + half_lam * float(w.dot(w)))
            out.grads.append(means[offset + 1:offset + 1 + d] + self.lam * w)
            offset += 1 + d
        for _ in diagonals_at:
            out.diagonals.append(means[offset:offset + d] + self.lam)
            offset += d
        if hvp is not None:
            out.hvp = means[offset:offset + d] + self.lam * hvp[1]
        return out

    # Conveniences, each one round.
    def value_grad(self, w: torch.Tensor) -> tuple[float, torch.Tensor]:
        answer = self.evaluate(gradients_at=[w])
        return answer.grad_values[0], answer.grads[0]

    def hessian_vector(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.evaluate(hvp=(w, v)).hvp
