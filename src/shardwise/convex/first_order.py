"""Gradient descent and Nesterov's accelerated gradient, one round per iteration.

[Note: backtracking on L]
Neither method is told the smoothness constant L. It starts from a lower bound (the largest
diagonal entry of ∇²f(x0), a Rayleigh quotient; it rides in the first round) and is multiplied
by `backtrack_factor` whenever the descent-lemma test f(x⁺) ≤ f(y) − ‖∇f(y)‖²/(2L) fails for
x⁺ = y − ∇f(y)/L (Beck & Teboulle 2009, §3, "backtracking"). L never decreases, so at most
log(L/L0)/log(factor) rounds are retries; every other round evaluates f and ∇f at the next
point together, and the test reads its f from there.
"""

from __future__ import annotations

import math

import torch

from .config import AGDConfig, GDConfig
from .oracle import Oracle
from .trace import SolveResult, StopRule, Trace


def _start(oracle: Oracle, x0: torch.Tensor, config: GDConfig):
    """Round 1: f, ∇f and diag ∇²f at x0; the diagonal's largest entry is the first L (a lower bound)."""
    answer = oracle.evaluate(gradients_at=[x0], diagonals_at=[x0] if config.initial_lipschitz is None else [])
    lipschitz = config.initial_lipschitz or float(answer.diagonals[0].max())
    return answer.grad_values[0], answer.grads[0], lipschitz


def gradient_descent(oracle: Oracle, x0: torch.Tensor, stop: StopRule, config: GDConfig = GDConfig(),
                     keep_iterates: bool = False) -> SolveResult:
    """x⁺ = x − ∇f(x)/L, L by backtracking (see [Note: backtracking on L])."""
    trace = Trace(oracle, stop, keep_iterates)
    x = x0.clone()
    f, g, lipschitz = _start(oracle, x, config)
    iteration = 0
    while not trace.record(iteration, f, float(g.norm()), x):
        g_sq = float(g.dot(g))
        while True:
            x_next = x - g / lipschitz
            f_next, g_next = oracle.value_grad(x_next)
            if f_next <= f - 0.5 * g_sq / lipschitz or oracle.rounds >= stop.max_rounds:
                break
            lipschitz *= config.backtrack_factor
        x, f, g = x_next, f_next, g_next
        iteration += 1
    return trace.result("gd", x)


def momentum(lipschitz: float, mu: float, k: int) -> float:
    """(√L − √μ)/(√L + √μ) for μ > 0 (Nesterov 2004, 2.2.19); k/(k+3) without strong convexity (pure)."""
    if mu > 0:
        return (math.sqrt(lipschitz) - math.sqrt(mu)) / (math.sqrt(lipschitz) + math.sqrt(mu))
    return k / (k + 3)


def accelerated_gradient(oracle: Oracle, x0: torch.Tensor, stop: StopRule, config: AGDConfig = AGDConfig(),
                         keep_iterates: bool = False) -> SolveResult:
    """Nesterov's method: x⁺ = y − ∇f(y)/L, y⁺ = x⁺ + β(x⁺ − x), with gradient-scheme restarts.

    Each round evaluates f(x⁺) (for the backtracking test and the record) together with f and
    ∇f at y⁺; both points are known before the round because y⁺ only needs x⁺. The restart test
    of O'Donoghue & Candès (2015, §3.2), ∇f(y)ᵀ(x⁺ − x) > 0, also needs nothing new: on restart
    β = 0, so y⁺ = x⁺. The recorded gradient norm is ‖∇f(y)‖, the gradient the method has.
    """
    trace = Trace(oracle, stop, keep_iterates)
    mu = oracle.lam if config.strong_convexity is None else config.strong_convexity
    x = x0.clone()
    f_y, g_y, lipschitz = _start(oracle, x, config)
    y, f_x = x, f_y
    iteration, since_restart = 0, 0
    while not trace.record(iteration, f_x, float(g_y.norm()), x):
        g_sq = float(g_y.dot(g_y))
        while True:
            x_next = y - g_y / lipschitz
            restarted = config.restart and float(g_y.dot(x_next - x)) > 0
            beta = 0.0 if restarted else momentum(lipschitz, mu, since_restart)
            y_next = x_next + beta * (x_next - x)
            if beta == 0.0:
                f_x_next, g_y_next = oracle.value_grad(x_next)
                f_y_next = f_x_next
            else:
                answer = oracle.evaluate(values_at=[x_next], gradients_at=[y_next])
                f_x_next, f_y_next, g_y_next = answer.values[0], answer.grad_values[0], answer.grads[0]
            if f_x_next <= f_y - 0.5 * g_sq / lipschitz or oracle.rounds >= stop.max_rounds:
                break
            lipschitz *= config.backtrack_factor
        since_restart = 0 if restarted else since_restart + 1
        x, y, f_x, f_y, g_y = x_next, y_next, f_x_next, f_y_next, g_y_next
        iteration += 1
    return trace.result("agd", x)
