"""`shardwise solve`: distributed convex solvers on local ranks, against a SciPy reference optimum."""

from __future__ import annotations

import json
import os

from ..convex.data import BUNDLED, SYNTHETIC, DataSpec
from ..convex.prepare import PROBLEMS, check_lambda, load_dataset
from ..convex.reference import reference_optimum
from ..convex.report import format_table, plot_suboptimality, summary_row
from ..convex.run import SOLVERS, SolveJob, ranks_agree, solve_distributed
from ..convex.trace import CRITERIA, StopRule
from ..errors import ConfigError
from ..paths import check_writable
from .parser import non_negative_int, non_negative_real, positive_int, positive_real, whole_number

LINEAR_ONLY = ("cg", "pcg")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("solve", help="distributed GD, AGD, CG, Newton-CG, L-BFGS on ridge/logistic regression",
                              description="Solve a convex problem over rows split across local ranks and report "
                                          "communication rounds, bytes, time and f - f* against a SciPy reference.")
    p.add_argument("--problem", default="logistic", help=f"one of: {', '.join(PROBLEMS)} (logistic with more than "
                                                         "two classes is multinomial)")
    p.add_argument("--data", default="breast_cancer", help=f"{', '.join(BUNDLED)}, {SYNTHETIC}, or a .npz/.csv file "
                                                          "(csv: numbers, label in the last column)")
    p.add_argument("--solver", default="newton-cg", help=f"one of: {', '.join(SOLVERS)}; a comma-separated list or "
                                                        "'all' compares several")
    p.add_argument("--nproc", type=positive_int, default=2, help="local ranks")
    p.add_argument("--tol", type=positive_real, default=1e-8, help="stop when f - f* <= tol (or ||grad f|| <= tol, see --criterion)")
    p.add_argument("--lam", type=non_negative_real, default=1e-4, help="L2 regularisation λ (ridge: >= 0; logistic: > 0)")
    p.add_argument("--criterion", default="suboptimality", choices=CRITERIA[1:], help="what --tol bounds")
    p.add_argument("--max-rounds", type=positive_int, default=20_000, help="give up after this many rounds")
    synthetic = p.add_argument_group("synthetic data (--data synthetic)")
    synthetic.add_argument("--samples", type=positive_int, default=1000, help="rows")
    synthetic.add_argument("--features", type=positive_int, default=20, help="columns before the intercept")
    synthetic.add_argument("--classes", type=positive_int, default=2, help="logistic: label classes")
    synthetic.add_argument("--effective-rank", type=non_negative_int, default=0,
                           help="0: independent features; R: features correlated through R directions")
    synthetic.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=0, help="seed of the synthetic set")
    p.add_argument("--no-standardize", action="store_true", help="use the features as they are")
    p.add_argument("--no-intercept", action="store_true", help="no column of ones")
    p.add_argument("--plot", default=None, help="PNG of f - f* against rounds (default: runs/solve-PROBLEM-DATA.png)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("--timeout", type=positive_real, default=1800.0, help="seconds the whole solve may take")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=main)


def parse_solvers(text: str, problem: str) -> list[str]:
    if text == "all":
        return [s for s in SOLVERS if problem == "ridge" or s not in LINEAR_ONLY]
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SOLVERS]
    if not names or unknown:
        raise ConfigError(f"unknown solver '{(unknown or [text])[0]}'; expected one of {', '.join(SOLVERS)} or 'all'")
    if problem != "ridge" and any(name in LINEAR_ONLY for name in names):
        raise ConfigError(f"cg and pcg solve ridge regression (a linear system); for {problem} use newton-cg")
    return names


def main(args) -> int:
    if not args.no_plot:
        check_writable(args.plot, "--plot")
    if args.problem not in PROBLEMS:
        raise ConfigError(f"unknown problem '{args.problem}'; expected one of {', '.join(PROBLEMS)}")
    solvers = parse_solvers(args.solver, args.problem)
    check_lambda(args.problem, args.lam)
    StopRule(tol=args.tol, criterion="gradient")  # validates --tol before any data is loaded
    spec = DataSpec(args.data, samples=args.samples, features=args.features, classes=args.classes, seed=args.seed,
                    effective_rank=args.effective_rank, standardize=not args.no_standardize,
                    intercept=not args.no_intercept)
    data, kind = load_dataset(spec, args.problem)
    reference = reference_optimum(data, kind, args.lam)
    stop = StopRule(tol=args.tol, f_star=reference.f_star, criterion=args.criterion, max_rounds=args.max_rounds)
    jobs = [SolveJob(name, stop, args.lam) for name in solvers]
    reports = solve_distributed(spec, args.problem, jobs, args.nproc, timeout_s=args.timeout)
    if not ranks_agree(reports):
        raise RuntimeError("ranks ended on different iterates: a solver communicated outside the oracle")
    results = reports[0].results
    rows = [summary_row(result, reference.f_star, args.nproc, counted) for result, counted in zip(results, reports[0].comm_bytes)]
    problem_name = kind if kind == args.problem else f"{args.problem} ({kind}, {data.n_classes} classes)"
    plot_path = None
    if not args.no_plot:
        plot_path = args.plot or os.path.join("runs", f"solve-{args.problem}-{os.path.splitext(data.name)[0]}.png")
        plot_suboptimality(results, reference.f_star, plot_path,
                           f"{problem_name} on {data.name} (λ={args.lam:g}), N={args.nproc}", args.tol)
    if args.json:
        meta = {"problem": kind, "data": data.name, "lam": args.lam, "tol": args.tol, "f_star": reference.f_star,
                "plot": plot_path}
        print(json.dumps({**rows[0], **meta} if len(rows) == 1 else {**meta, "results": rows}, indent=1))
        return 0
    n, d = data.features.shape
    print(f"{problem_name} on {data.name}: {n} rows x {d} columns (with intercept), λ={args.lam:g}, "
          f"{args.nproc} ranks")
    print(f"f* = {reference.f_star:.12g} (reference optimum by {reference.method}; it is within {reference.bound:.1e} "
          "of the true minimum, a bound certified by its gradient norm)")
    print(format_table(rows))
    if plot_path:
        print(f"plot: {plot_path}")
    return 0
