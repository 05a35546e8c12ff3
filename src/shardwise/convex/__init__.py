"""Distributed convex solvers over row-sharded data: GD, AGD, CG/PCG, Newton-CG (DiSCO) and L-BFGS.

Layout, one idea per file:
  problems.py      loss, gradient, Hessian-vector product sums over one rank's rows (pure math)
  oracle.py        one all-reduce per round, through shardwise.comm (see [Note: rounds])
  first_order.py   gd, agd              cg.py        cg, pcg, the PCG inner loop
  newton.py        newton-cg (DiSCO)    lbfgs.py     lbfgs
  precondition.py  Jacobi and subsample-Hessian preconditioners
  data.py, prepare.py  datasets, validation, standardisation (rows per rank: flat.ranges)
  reference.py     f* from a tight single-process SciPy solve, cached
  run.py, report.py    running solves on ranks; tables and plots
"""

from .config import AGDConfig, CGConfig, GDConfig, LBFGSConfig, NewtonCGConfig
from .data import DataSpec, Dataset
from .oracle import Oracle
from .prepare import load_dataset
from .reference import reference_optimum
from .run import SOLVERS, SolveJob, run_solver, solve_distributed
from .trace import Record, SolveResult, StopRule

__all__ = [
    "AGDConfig", "CGConfig", "GDConfig", "LBFGSConfig", "NewtonCGConfig", "DataSpec", "Dataset", "Oracle",
    "load_dataset", "reference_optimum", "SOLVERS", "SolveJob", "run_solver", "solve_distributed",
    "Record", "SolveResult", "StopRule",
]
