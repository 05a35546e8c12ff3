"""What a solve records after each iteration, when it stops, and what it returns."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .oracle import Oracle

CRITERIA = ("auto", "suboptimality", "gradient")


@dataclass(frozen=True)
class StopRule:
    """When a solver stops (checked after every recorded iteration)."""

    tol: float = 1e-8
    """Tolerance: on f − f* (criterion "suboptimality") or on ‖∇f‖ (criterion "gradient")."""
    f_star: float | None = None
    """The optimal value, from the reference solve; needed by the "suboptimality" criterion."""
    criterion: str = "auto"
    """"suboptimality", "gradient", or "auto": suboptimality when f_star is given, else gradient."""
    max_rounds: int = 20_000
    """Give up (converged = False) once this many rounds are spent."""

    def __post_init__(self):
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise ConfigError(f"--tol must be a non-negative number, got {self.tol}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"unknown stopping criterion {self.criterion!r}; expected one of {', '.join(CRITERIA)}")
        if self.criterion == "suboptimality" and self.f_star is None:
            raise ConfigError("the suboptimality criterion needs f* (the reference optimum)")
        if self.max_rounds < 1:
            raise ConfigError(f"max_rounds must be at least 1, got {self.max_rounds}")

    def met(self, objective: float, grad_norm: float) -> bool:
        if self.criterion == "gradient" or (self.criterion == "auto" and self.f_star is None):
            return grad_norm <= self.tol
        return objective - self.f_star <= self.tol


@dataclass
class Record:
    """One iteration, with the communication spent so far."""

    iteration: int
    rounds: int
    comm_bytes: float
    objective: float
    grad_norm: float
    time_s: float


@dataclass
class SolveResult:
    solver: str
    x: torch.Tensor
    records: list[Record]
    converged: bool
    rounds: int
    comm_bytes: float
    iterates: list[torch.Tensor] = field(default_factory=list)
    """Every recorded iterate, when the trace keeps them (world-size independence tests)."""

    @property
    def objective(self) -> float:
        return self.records[-1].objective

    @property
    def iterations(self) -> int:
        return self.records[-1].iteration


class Trace:
    """Collects a Record per iteration from the oracle's counters and says when to stop."""

    def __init__(self, oracle: Oracle, stop: StopRule, keep_iterates: bool = False):
        self.oracle, self.stop, self.keep_iterates = oracle, stop, keep_iterates
        self.records: list[Record] = []
        self.iterates: list[torch.Tensor] = []
        self.converged = False
        self._start = time.perf_counter()

    def record(self, iteration: int, objective: float, grad_norm: float, iterate: torch.Tensor) -> bool:
        """Note an iteration; True when the solver should stop (converged or out of rounds)."""
        if not (math.isfinite(objective) and math.isfinite(grad_norm)):
            raise FloatingPointError(f"the objective became {objective} at iteration {iteration}")
        self.records.append(Record(iteration, self.oracle.rounds, self.oracle.comm_bytes, objective, grad_norm,
                                   time.perf_counter() - self._start))
        if self.keep_iterates:
            self.iterates.append(iterate.clone())
        self.converged = self.stop.met(objective, grad_norm)
        return self.converged or self.oracle.rounds >= self.stop.max_rounds

    def result(self, solver: str, x: torch.Tensor) -> SolveResult:
        return SolveResult(solver, x, self.records, self.converged, self.oracle.rounds, self.oracle.comm_bytes,
                           self.iterates)
