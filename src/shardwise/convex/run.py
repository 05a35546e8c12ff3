"""Running solves: the solver table, one rank's part of a distributed solve, and the driver over `launch`.

Every rank builds its own `LocalProblem` from its contiguous rows (`flat.ranges.even_range`) and an
`Oracle` whose reduce is `comm.all_reduce`; the solver then runs identically on every rank (see
[Note: rounds] in oracle.py). Several solves can share one launch and one data load.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import comm
from ..runtime import env, launch
from .cg import conjugate_gradient
from .config import AGDConfig, CGConfig, GDConfig, LBFGSConfig, NewtonCGConfig
from .data import DataSpec, Dataset
from .first_order import accelerated_gradient, gradient_descent
from .lbfgs import lbfgs
from .newton import newton_cg
from .oracle import Oracle, no_reduce
from .prepare import load_dataset
from .problems import make_local_problem
from ..flat.ranges import even_range
from .trace import SolveResult, StopRule

SOLVERS = {
    "gd": (gradient_descent, GDConfig),
    "agd": (accelerated_gradient, AGDConfig),
    "cg": (conjugate_gradient, CGConfig),
    "pcg": (functools.partial(conjugate_gradient, name="pcg"), functools.partial(CGConfig, preconditioner="subsample")),
    "newton-cg": (newton_cg, NewtonCGConfig),
    "lbfgs": (lbfgs, LBFGSConfig),
}


@dataclass(frozen=True)
class SolveJob:
    """One solve; picklable, so a spawned rank rebuilds everything from it."""

    solver: str
    """A key of SOLVERS."""
    stop: StopRule = field(default_factory=StopRule)
    """When to stop."""
    lam: float = 1e-4
    """λ of the L2 term."""
    config: object | None = None
    """The solver's config dataclass; None: its defaults."""
    keep_iterates: bool = False
    """Return every iterate (world-size independence tests)."""


def run_solver(job: SolveJob, oracle: Oracle, x0: torch.Tensor | None = None) -> SolveResult:
    """Run `job.solver` on `oracle` from x0 (default 0); single-process or on one rank alike."""
    solve, default_config = SOLVERS[job.solver]
    x0 = torch.zeros(oracle.dim, dtype=torch.float64) if x0 is None else x0
    return solve(oracle, x0, job.stop, job.config or default_config(), keep_iterates=job.keep_iterates)


def local_oracle(data: Dataset, kind: str, lam: float, rank: int, world_size: int, reduce=no_reduce) -> Oracle:
    """The oracle of `rank`: its rows of `data`, the global row count, and the reduce to use."""
    start, stop = even_range(len(data.labels), rank, world_size)
    features = torch.from_numpy(data.features[start:stop])
    labels = torch.from_numpy(data.labels[start:stop])
    local = make_local_problem(kind, features, labels, data.n_classes)
    return Oracle(local, len(data.labels), lam, reduce, world_size, row_start=start)


@dataclass
class RankReport:
    """What one rank returns: its results and what the communication layer counted."""

    rank: int
    world_size: int
    results: list[SolveResult]
    comm_bytes: list[int]
    """Per solve, the bytes `comm.comm_stats()` counted on this rank (must equal the oracle's count)."""


def solve_on_rank(data: Dataset | DataSpec, problem: str, jobs: list[SolveJob]) -> RankReport:
    """One rank's part: load (or take) the data, keep this rank's rows, run each job in turn."""
    if isinstance(data, DataSpec):
        data, kind = load_dataset(data, problem)
    else:
        kind = problem
    rank, world_size = env.rank(), env.world_size()
    results, counted = [], []
    for job in jobs:
        oracle = local_oracle(data, kind, job.lam, rank, world_size, comm.all_reduce)
        comm.reset_comm_stats()
        results.append(run_solver(job, oracle))
        counted.append(comm.comm_stats()["total"])
    return RankReport(rank, world_size, results, counted)


def solve_distributed(data: Dataset | DataSpec, kind: str, jobs: list[SolveJob], nproc: int,
                      timeout_s: float = 600) -> list[RankReport]:
    """Run `jobs` on `nproc` fresh ranks; returns every rank's report, rank order.

    `data` is a prepared Dataset (sent to the ranks; `kind` is its resolved problem kind) or a
    DataSpec each rank loads itself (`kind` is then the problem as the user named it).
    """
    return launch(solve_on_rank, nproc, args=(data, kind, jobs), timeout_s=timeout_s)


def ranks_agree(reports: list[RankReport]) -> bool:
    """Every rank ended every solve on bit-identical iterates (they run the same float64 code on the same numbers)."""
    first = reports[0].results
    return all(torch.equal(a.x, b.x) for report in reports[1:] for a, b in zip(first, report.results))


def with_stop(jobs: list[SolveJob], **changes) -> list[SolveJob]:
    return [replace(job, stop=replace(job.stop, **changes)) for job in jobs]


def suboptimality_curve(result: SolveResult, f_star: float) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, f − f*) at each recorded iteration."""
    rounds = np.array([r.rounds for r in result.records])
    return rounds, np.array([r.objective - f_star for r in result.records])


def first_reaching(result: SolveResult, f_star: float, tol: float):
    """The first Record with f − f* ≤ tol (its rounds, bytes and time are what reaching it cost); None if none."""
    return next((r for r in result.records if r.objective - f_star <= tol), None)
