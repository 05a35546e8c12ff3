"""Conjugate gradient: the inner PCG loop (shared with Newton-CG) and CG/PCG on ridge regression.

Every iteration is one Hessian-vector product, so one round; all the vector algebra (α, β,
residuals, the preconditioner) is local and identical on every rank. In exact arithmetic CG
on a d×d symmetric positive definite system ends in at most d iterations (Hestenes & Stiefel
1952, Theorem 5:1); ridge regression's normal equations (XᵀX/n + λI) w = Xᵀy/n are such a system.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError
from .config import CGConfig
from .oracle import Oracle
from .precondition import build_preconditioner
from .trace import SolveResult, StopRule, Trace


def pcg_solve(hessian_times: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, preconditioner,
              tol: float, max_iterations: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Solve H v = rhs from v = 0 until ‖rhs − H v‖ ≤ tol (DiSCO Algorithm 2); returns (v, H v, iterations).

    H v is accumulated alongside v from the products PCG computes anyway, so the Newton
    decrement vᵀHv costs no extra round.
    """
    v = torch.zeros_like(rhs)
    hv = torch.zeros_like(rhs)
    residual = rhs.clone()
    precond_residual = preconditioner.apply(residual)
    direction = precond_residual.clone()
    rho = float(residual.dot(precond_residual))
    iterations = 0
    while iterations < max_iterations and float(residual.norm()) > tol and rho > 0.0:
        h_direction = hessian_times(direction)
        iterations += 1
        alpha = rho / float(direction.dot(h_direction))
        v += alpha * direction
        hv += alpha * h_direction
        residual -= alpha * h_direction
        precond_residual = preconditioner.apply(residual)
        rho_next = float(residual.dot(precond_residual))
        direction = precond_residual + (rho_next / rho) * direction
        rho = rho_next
    return v, hv, iterations


def conjugate_gradient(oracle: Oracle, x0: torch.Tensor, stop: StopRule, config: CGConfig = CGConfig(),
                       keep_iterates: bool = False, name: str = "cg") -> SolveResult:
    """(P)CG on the quadratic f(x) = f(x0) + g0ᵀz + ½ zᵀAz, z = x − x0: the residual is −∇f.

    Round 1 brings f(x0) and g0 = ∇f(x0) (and diag A for Jacobi); each later round is A p.
    The objective of every iterate follows without communication: A z = r0 − r, so
    f(x) = f(x0) + g0ᵀz + ½ zᵀ(r0 − r).
    """
    if oracle.local.kind != "ridge":
        raise ConfigError(f"{name} solves ridge regression (a linear system); for {oracle.local.kind} use newton-cg")
    trace = Trace(oracle, stop, keep_iterates)
    preconditioner = build_preconditioner(config.preconditioner, oracle, config.subsample_rows, config.shift)
    answer = oracle.evaluate(gradients_at=[x0], diagonals_at=[x0] if config.preconditioner == "jacobi" else [])
    f0, g0 = answer.grad_values[0], answer.grads[0]
    preconditioner.update(x0, answer.diagonals[0] if answer.diagonals else None)
    x, step = x0.clone(), torch.zeros_like(x0)
    residual = -g0
    precond_residual = preconditioner.apply(residual)
    direction = precond_residual.clone()
    rho = float(residual.dot(precond_residual))
    iteration = 0
    while not trace.record(iteration, f0 + float(g0.dot(step)) + 0.5 * float(step.dot(-g0 - residual)),
                           float(residual.norm()), x):
        a_direction = oracle.hessian_vector(x0, direction)
        alpha = rho / float(direction.dot(a_direction))
        step += alpha * direction
        x = x0 + step
        residual -= alpha * a_direction
        precond_residual = preconditioner.apply(residual)
        rho_next = float(residual.dot(precond_residual))
        direction = precond_residual + (rho_next / rho) * direction
        rho = rho_next
        iteration += 1
        if rho == 0.0:  # exact solution: nothing left to reduce
            trace.record(iteration, f0 + float(g0.dot(step)) + 0.5 * float(step.dot(-g0 - residual)), 0.0, x)
            break
    return trace.result(name, x)
