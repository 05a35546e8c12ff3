"""What a solve reports: one summary row per solver, a markdown table, and the rounds plot."""

from __future__ import annotations

import os

from .run import suboptimality_curve
from .trace import SolveResult


def summary_row(result: SolveResult, f_star: float, world_size: int, comm_bytes: int) -> dict:
    """The `--json` fields of docs/api.md (solver, world_size, rounds, comm_bytes, objective, suboptimality, converged) and more."""
    last = result.records[-1]
    return {
        "solver": result.solver, "world_size": world_size, "rounds": result.rounds, "comm_bytes": int(comm_bytes),
        "objective": last.objective, "suboptimality": last.objective - f_star, "converged": bool(result.converged),
        "iterations": last.iteration, "grad_norm": last.grad_norm, "time_s": last.time_s, "f_star": f_star,
    }


def format_table(rows: list[dict]) -> str:
    head = ["solver", "N", "iterations", "rounds", "comm bytes", "time s", "f - f*", "converged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["solver"], str(row["world_size"]), str(row["iterations"]), str(row["rounds"]),
                 f"{row['comm_bytes']:,}", f"{row['time_s']:.3g}", f"{row['suboptimality']:.2e}",
                 "yes" if row["converged"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_suboptimality(results: list[SolveResult], f_star: float, path: str, title: str, tol: float | None = None) -> str:
    """f − f* (log scale) against communication rounds, one line per solver; returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    floor = 1e-16
    for result in results:
        rounds, gap = suboptimality_curve(result, f_star)
        axes.step(rounds, [max(g, floor) for g in gap], where="post", label=result.solver)
    if tol:
        axes.axhline(tol, color="gray", linestyle=":", linewidth=1, label=f"tol {tol:g}")
    axes.set_yscale("log")
    axes.set_xscale("log")  # rounds span 10 to 10⁴ between Newton-CG and GD
    axes.set_xlabel("communication rounds (all-reduce calls, log scale)")
    axes.set_ylabel("f - f*")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
