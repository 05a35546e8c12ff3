"""Newton-CG after DiSCO (Zhang & Xiao, "DiSCO: Distributed Optimization for Self-Concordant
Empirical Loss", ICML 2015): an inexact damped Newton method whose steps come from distributed PCG.

Per outer iteration k:
  1 round:  f and ∇f (and diag ∇²f for Jacobi) at the candidate(s) for w_k, packed together;
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

FULL_STEP_MIN_DAMPING = 1e-3  # below this the damped and the full step agree to 0.1%: evaluate one


def forcing_tolerance(grad_norm: float, forcing: float) -> float:
    """ε_k = min(forcing, √‖∇f‖)·‖∇f‖: loose far away, superlinear near the optimum (pure)."""
    return min(forcing, math.sqrt(grad_norm)) * grad_norm


def damped_step(v: torch.Tensor, hv: torch.Tensor, self_concordance: float) -> tuple[torch.Tensor, float]:
    """The damped Newton step v/(1 + (M/2)·δ) and δ = √(vᵀHv) (pure)."""
    decrement = math.sqrt(max(float(v.dot(hv)), 0.0))
    return v / (1.0 + 0.5 * self_concordance * decrement), decrement


def newton_cg(oracle: Oracle, x0: torch.Tensor, stop: StopRule, config: NewtonCGConfig = NewtonCGConfig(),
              keep_iterates: bool = False) -> SolveResult:
    """DiSCO's damped Newton; with `try_full_step`, the full step w − v rides in the same round and wins if f is lower."""
    trace = Trace(oracle, stop, keep_iterates)
    preconditioner = build_preconditioner(config.preconditioner, oracle, config.subsample_rows, config.shift)
    want_diagonal = config.preconditioner == "jacobi"
    self_concordance = config.self_concordance
    if self_concordance is None:  # a quadratic is self-concordant with M = 0: Newton's full step
        self_concordance = 0.0 if oracle.local.kind == "ridge" else 2.0
    candidates = [x0.clone()]
    iteration = 0
    while True:
        answer = oracle.evaluate(gradients_at=candidates, diagonals_at=candidates if want_diagonal else ())
        best = min(range(len(candidates)), key=lambda i: answer.grad_values[i])
        x, f, g = candidates[best], answer.grad_values[best], answer.grads[best]
        grad_norm = float(g.norm())
        if trace.record(iteration, f, grad_norm, x):
            break
        preconditioner.update(x, answer.diagonals[best] if want_diagonal else None)
        budget = min(config.max_cg_iterations, stop.max_rounds - oracle.rounds - 1)
        v, hv, _ = pcg_solve(lambda u, at=x: oracle.hessian_vector(at, u), g, preconditioner,
                             forcing_tolerance(grad_norm, config.forcing), max(budget, 1), config.reorthogonalize)
        step, decrement = damped_step(v, hv, self_concordance)
        candidates = [x - step]
        if config.try_full_step and 0.5 * self_concordance * decrement > FULL_STEP_MIN_DAMPING:
            candidates.append(x - v)
        iteration += 1
    return trace.result("newton-cg", x)
