"""L-BFGS with an Armijo line search that spends as few rounds as it can.

[Note: L-BFGS rounds]
The direction p = −H_k ∇f comes from the two-loop recursion over the last m pairs
(s, y) = (x⁺ − x, ∇f(x⁺) − ∇f(x)) (Nocedal & Wright, Algorithm 7.4), all local. The unit step
is tried first, f and ∇f at x + p in one round; L-BFGS accepts it almost always, so a typical
iteration is one round. When Armijo fails, the next round evaluates f and ∇f at
`trial_steps` halvings t = 1/2, 1/4, ... at once and takes the largest that passes, so a
backtrack costs one round, not one per halving. The first iteration, with no pairs yet, scales
the steepest-descent direction to unit length. f is strongly convex (λ > 0), so sᵀy > 0 and
no Wolfe curvature test is needed; a pair with sᵀy ≤ 0 (rounding) is skipped.
"""

from __future__ import annotations

from collections import deque

import torch

from .config import LBFGSConfig
from .oracle import Oracle
from .trace import SolveResult, StopRule, Trace

MIN_STEP = 1e-12


def two_loop_direction(grad: torch.Tensor, pairs) -> torch.Tensor:
    """−H grad for the L-BFGS inverse-Hessian approximation of `pairs` [(s, y, 1/sᵀy)], oldest first (pure)."""
    q = grad.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s.dot(q))
        alphas.append(alpha)
        q -= alpha * y
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s.dot(y)) / float(y.dot(y))  # H0 = γI, γ = sᵀy/yᵀy
    else:
        q /= float(grad.norm())
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        q += (alpha - rho * float(y.dot(q))) * s
    return -q


def _line_search(oracle: Oracle, x, f, slope, direction, config: LBFGSConfig, max_rounds: int):
    """Largest t in 1, 1/2, 1/4, ... with f(x + t p) ≤ f + c₁ t ∇fᵀp; None if t falls below MIN_STEP."""
    f_new, g_new = oracle.value_grad(x + direction)
    if f_new <= f + config.armijo * slope:
        return 1.0, f_new, g_new
    step = 1.0
    while step > MIN_STEP and oracle.rounds < max_rounds:
        trials = [step * 0.5 ** (j + 1) for j in range(config.trial_steps)]
        answer = oracle.evaluate(gradients_at=[x + t * direction for t in trials])
        for t, f_t, g_t in zip(trials, answer.grad_values, answer.grads):
            if f_t <= f + config.armijo * t * slope:
                return t, f_t, g_t
        step = trials[-1]
    return None


def lbfgs(oracle: Oracle, x0: torch.Tensor, stop: StopRule, config: LBFGSConfig = LBFGSConfig(),
          keep_iterates: bool = False) -> SolveResult:
    """L-BFGS (see [Note: L-BFGS rounds])."""
    trace = Trace(oracle, stop, keep_iterates)
    pairs: deque = deque(maxlen=config.memory)
    x = x0.clone()
    f, g = oracle.value_grad(x)
    iteration = 0
    while not trace.record(iteration, f, float(g.norm()), x):
        direction = two_loop_direction(g, pairs)
        slope = float(g.dot(direction))
        if slope >= 0:  # not a descent direction (rounding): forget the curvature pairs
            pairs.clear()
            direction = two_loop_direction(g, pairs)
            slope = float(g.dot(direction))
        found = _line_search(oracle, x, f, slope, direction, config, stop.max_rounds)
        if found is None:
            break  # no decrease left at working precision
        step, f_next, g_next = found
        s, y = step * direction, g_next - g
        curvature = float(s.dot(y))
        if curvature > 0:
            pairs.append((s, y, 1.0 / curvature))
        x, f, g = x + s, f_next, g_next
        iteration += 1
    return trace.result("lbfgs", x)
