"""Newton-CG after DiSCO (Zhang & Xiao, "DiSCO: Distributed Optimization for Self-Concordant
Empirical Loss", ICML 2015): an inexact damped Newton method whose steps come from distributed PCG.

Per outer iteration k:
  1 round:  f(w_k), ∇f(w_k) (and diag ∇²f(w_k) for the Jacobi preconditioner), packed together;
  t rounds: PCG on ∇²f(w_k) v = ∇f(w_k), one Hessian-vector product each, until
            ‖∇²f(w_k) v − ∇f(w_k)‖ ≤ ε_k, ε_k = min(forcing, √‖∇f‖)·‖∇f‖;
  no round: δ_k = √(vᵀ∇²f(w_k) v) from the products PCG already has, and the damped step
            w_{k+1} = w_k − v/(1 + δ_k)   (DiSCO Algorithm 1; with M ≠ 2, δ_k is scaled by M/2).
For a standard self-concordant f the damped step decreases f by at least ω(δ) = δ − log(1+δ)
and, once δ is small, turns into Newton's quadratically convergent full step (Nesterov 2004,
Theorem 4.1.12). The preconditioner is the subsample Hessian of [Note: subsample preconditioner]
by default (DiSCO's choice with a world-size-independent sample), or Jacobi.
"""

from __future__ import annotations

import math

import torch

from .cg import pcg_solve
from .config import NewtonCGConfig
from .oracle import Oracle
from .precondition import build_preconditioner
from .trace import SolveResult, StopRule, Trace


def forcing_tolerance(grad_norm: float, forcing: float) -> float:
    """ε_k = min(forcing, √‖∇f‖)·‖∇f‖: loose far away, superlinear near the optimum (pure)."""
    return min(forcing, math.sqrt(grad_norm)) * grad_norm


def damped_step(v: torch.Tensor, hv: torch.Tensor, self_concordance: float) -> tuple[torch.Tensor, float]:
    """The damped Newton step v/(1 + (M/2)·δ) and δ = √(vᵀHv) (pure)."""
    decrement = math.sqrt(max(float(v.dot(hv)), 0.0))
    return v / (1.0 + 0.5 * self_concordance * decrement), decrement


def newton_cg(oracle: Oracle, x0: torch.Tensor, stop: StopRule, config: NewtonCGConfig = NewtonCGConfig(),
              keep_iterates: bool = False) -> SolveResult:
    trace = Trace(oracle, stop, keep_iterates)
    preconditioner = build_preconditioner(config.preconditioner, oracle, config.subsample_rows, config.shift)
    want_diagonal = config.preconditioner == "jacobi"
    x = x0.clone()
    iteration = 0
    while True:
        answer = oracle.evaluate(gradients_at=[x], diagonal_at=x if want_diagonal else None)
        f, g = answer.grad_values[0], answer.grads[0]
        grad_norm = float(g.norm())
        if trace.record(iteration, f, grad_norm, x):
            break
        preconditioner.update(x, answer.diagonal)
        budget = min(config.max_cg_iterations, stop.max_rounds - oracle.rounds - 1)
        v, hv, _ = pcg_solve(lambda u, at=x: oracle.hessian_vector(at, u), g, preconditioner,
                             forcing_tolerance(grad_norm, config.forcing), max(budget, 1))
        step, _ = damped_step(v, hv, config.self_concordance)
        x = x - step
        iteration += 1
    return trace.result("newton-cg", x)
