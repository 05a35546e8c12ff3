"""The knobs of each solver, one typed dataclass per solver (defaults are what the benchmark uses)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

PRECONDITIONERS = ("none", "jacobi", "subsample")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class GDConfig:
    """Gradient descent, step 1/L with L found by backtracking (Beck & Teboulle 2009, §3)."""

    backtrack_factor: float = 2.0
    """L is multiplied by this whenever the descent-lemma test fails (each retry is one round)."""
    initial_lipschitz: float | None = None
    """Starting L; None: the largest entry of diag ∇²f(x0), a lower bound on L, packed into the first round."""

    def __post_init__(self):
        _check_positive(backtrack_factor=self.backtrack_factor - 1)
        if self.initial_lipschitz is not None:
            _check_positive(initial_lipschitz=self.initial_lipschitz)


@dataclass(frozen=True)
class AGDConfig(GDConfig):
    """Nesterov's accelerated gradient for μ-strongly convex f (Nesterov 2004, scheme 2.2.19), backtracking on L."""

    strong_convexity: float | None = None
    """μ in the momentum (√L − √μ)/(√L + √μ); None: λ, which the L2 term guarantees (0: the k/(k+3) schedule)."""
    restart: bool = True
    """Reset the momentum when f goes up (O'Donoghue & Candès 2015); the test needs no extra round."""


@dataclass(frozen=True)
class CGConfig:
    """Conjugate gradient on the ridge normal equations (Hestenes & Stiefel 1952); `pcg` preconditions."""

    preconditioner: str = "none"
    """"none" (plain CG), "jacobi" (diag of the Hessian) or "subsample" (see [Note: subsample preconditioner])."""
    subsample_rows: int = 0
    """Rows in the subsample preconditioner; 0: a default from n and d (precondition.default_sample_size)."""
    shift: float = 0.0
    """τ added to the subsample Hessian's diagonal, on top of λ."""
    reorthogonalize: bool = True
    """Keep every direction H-conjugate to all earlier ones (local work only; see [Note: full conjugation])."""

    def __post_init__(self):
        if self.preconditioner not in PRECONDITIONERS:
            raise ConfigError(f"unknown preconditioner {self.preconditioner!r}; expected one of {', '.join(PRECONDITIONERS)}")
        if self.subsample_rows < 0 or self.shift < 0:
            raise ConfigError("subsample_rows and shift must be non-negative")


@dataclass(frozen=True)
class NewtonCGConfig(CGConfig):
    """Inexact damped Newton, steps from distributed PCG (DiSCO: Zhang & Xiao, ICML 2015, Algorithms 1-2)."""

    preconditioner: str = "subsample"
    """Preconditioner of the inner PCG; DiSCO's is the Hessian of one machine's rows plus a shift."""
    forcing: float = 0.1
    """Inner PCG stops when ‖∇²f v − ∇f‖ ≤ min(forcing, √‖∇f‖)·‖∇f‖ (superlinear, Nocedal & Wright §7.1)."""
    max_cg_iterations: int = 500
    """Cap on Hessian-vector products (rounds) per Newton step."""
    self_concordance: float | None = None
    """M in the step x − v/(1 + (M/2)·δ), δ = √(vᵀ∇²f v); None: 2 (standard, DiSCO), 0 for ridge (a quadratic)."""
    try_full_step: bool = True
    """Also evaluate the full step x − v in the next gradient round and keep it if f is lower (no extra round)."""

    def __post_init__(self):
        super().__post_init__()
        _check_positive(forcing=self.forcing, max_cg_iterations=self.max_cg_iterations)
        if self.self_concordance is not None and not self.self_concordance >= 0:
            raise ConfigError(f"self_concordance must be at least 0, got {self.self_concordance}")


@dataclass(frozen=True)
class LBFGSConfig:
    """L-BFGS, two-loop recursion (Nocedal 1980; Nocedal & Wright Alg. 7.4), Armijo search in few rounds."""

    memory: int = 10
    """Curvature pairs (s, y) kept."""
    armijo: float = 1e-4
    """c₁ in f(x + t p) ≤ f(x) + c₁ t ∇fᵀp."""
    trial_steps: int = 4
    """When t = 1 fails, one round evaluates f and ∇f at this many halvings t = 1/2, 1/4, ... at once."""

    def __post_init__(self):
        _check_positive(memory=self.memory, armijo=self.armijo, trial_steps=self.trial_steps)
        if self.armijo >= 0.5:
            raise ConfigError(f"armijo must be below 0.5, got {self.armijo}")
