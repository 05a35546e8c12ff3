"""Preconditioners for CG and Newton-CG that cost no round inside the CG loop.

[Note: subsample preconditioner]
DiSCO (Zhang & Xiao 2015, §3) preconditions its distributed PCG with P = ∇²f_1(w) + μI, the
Hessian of the rows held by one machine plus a shift: cheap to invert locally, close to the
full Hessian when the rows are i.i.d. Two changes make it fit here. (1) The rows S are a fixed,
evenly strided subset of the global rows (`sample_indices`), not "rank 0's rows": then P, and
so every iterate, is the same at any world size. (2) Every rank holds S (replicated once, in
one all-reduce at setup, counted like any other round), builds P = (1/m) Σ_{i∈S} ∇²loss_i(w)
+ (λ + τ)I itself and factors it (Cholesky, O(d³) local flops), so applying P⁻¹ inside PCG
needs no communication and every rank holds the same PCG vectors, as DiSCO's master does.
The Jacobi alternative, diag ∇²f(w), rides along in the gradient round for free.
"""

from __future__ import annotations

import math

import torch

from .oracle import Oracle
from .problems import LocalProblem, make_local_problem


def default_sample_size(n_rows: int, dim: int) -> int:
    """Rows in the subsample: a tenth of the data, at least 2·dim where there are that many, at most 5,000."""
    return min(n_rows, max(min(2 * dim, n_rows), min(math.ceil(n_rows / 10), 5000)))


def sample_indices(n_rows: int, sample_rows: int) -> torch.Tensor:
    """`sample_rows` global row indices spread evenly over 0..n_rows-1 (pure; the same at any world size)."""
    return torch.arange(sample_rows, dtype=torch.int64) * n_rows // sample_rows


def replicate_sample(oracle: Oracle, local: LocalProblem, row_start: int, indices: torch.Tensor) -> LocalProblem:
    """Give every rank the sample rows: each fills the rows it holds into a zero buffer, one all-reduce adds them."""
    d = local.n_features
    buffer = torch.zeros(len(indices), d + 1, dtype=torch.float64)
    mine = (indices >= row_start) & (indices < row_start + local.n_rows)
    local_index = indices[mine] - row_start
    buffer[mine, :d] = local.features[local_index]
    buffer[mine, d] = local.labels[local_index].to(torch.float64)
    oracle.all_reduce(buffer.reshape(-1))
    labels = buffer[:, d] if local.kind != "multinomial" else buffer[:, d].round().long()
    return make_local_problem(local.kind, buffer[:, :d].contiguous(), labels, local.n_classes)


class Identity:
    def update(self, w: torch.Tensor, diagonal: torch.Tensor | None = None) -> None:
        pass

    def apply(self, residual: torch.Tensor) -> torch.Tensor:
        return residual


class Jacobi:
    """P = diag ∇²f(w); the diagonal comes from the round that computed the gradient."""

    def update(self, w: torch.Tensor, diagonal: torch.Tensor | None = None) -> None:
        self.diagonal = diagonal

    def apply(self, residual: torch.Tensor) -> torch.Tensor:
        return residual / self.diagonal


class SubsampleHessian:
    """P = (1/m) Σ_{i∈S} ∇²loss_i(w) + (λ + τ)I, factored locally (see [Note: subsample preconditioner])."""

    def __init__(self, sample: LocalProblem, lam: float, shift: float):
        self.sample, self.lam, self.shift = sample, lam, shift

    def update(self, w: torch.Tensor, diagonal: torch.Tensor | None = None) -> None:
        hessian = self.sample.hessian_sum(w) / self.sample.n_rows
        hessian.diagonal().add_(self.lam + self.shift)
        self.factor = torch.linalg.cholesky(hessian)

    def apply(self, residual: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(residual[:, None], self.factor)[:, 0]


def build_preconditioner(kind: str, oracle: Oracle, sample_rows: int = 0, shift: float = 0.0):
    """The preconditioner named `kind`; "subsample" spends its one setup round here."""
    if kind == "none":
        return Identity()
    if kind == "jacobi":
        return Jacobi()
    if kind == "subsample":
        m = sample_rows or default_sample_size(oracle.n_total, oracle.dim)
        sample = replicate_sample(oracle, oracle.local, oracle.row_start, sample_indices(oracle.n_total, min(m, oracle.n_total)))
        return SubsampleHessian(sample, oracle.lam, shift)
    raise ValueError(f"unknown preconditioner {kind!r}")
