"""bench's two PNG charts: step time with its spread, and model states per rank by kind."""

from __future__ import annotations

from ..vocab import MB
from .memory import CATEGORIES
from .report import heaviest_rank

COLOURS = {"params": "tab:blue", "grads": "tab:orange", "optimizer": "tab:green", "other": "tab:gray"}
LABELS = {"params": "parameters", "grads": "gradients", "optimizer": "optimizer state", "other": "other (buffers)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar_colour(name: str) -> str:
    return "tab:red" if name.startswith("torch_") else "tab:blue"


def plot_step_times(report: dict, path: str) -> None:
    """Median step time per configuration; the error bar runs from Q1 to Q3 (the IQR)."""
    plt = _pyplot()
    names = list(report["configs"])
    entries = [report["configs"][name] for name in names]
    medians = [e["median_ms"] for e in entries]
    below = [e["median_ms"] - e["q1_ms"] for e in entries]
    above = [e["q3_ms"] - e["median_ms"] for e in entries]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4), dpi=110)
    positions = range(len(names))
    ax.bar(positions, medians, yerr=[below, above], capsize=4, color=[_bar_colour(n) for n in names], alpha=0.8)
    for x, entry in zip(positions, entries):
        ax.annotate(f"{entry['ratio_to_baseline']:.2f}x", (x, entry["q3_ms"]), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, max(e["q3_ms"] for e in entries) * 1.15)  # room for the ratios
    ax.set_xticks(list(positions), names, rotation=20)
    ax.set_ylabel("step time, ms (median, Q1-Q3)")
    ax.set_title(f"{report['model']['description']}\n{report['world_size']} ranks; ratio to {report['baseline']} "
                 "above each bar", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:red", alpha=0.8, label="PyTorch (torch_*)"),
                       Patch(color="tab:blue", alpha=0.8, label="shardwise"),
                       Line2D([], [], color="black", marker="_", linestyle="-", label="Q1-Q3 (IQR)")],
              fontsize=8, ncols=3, loc="upper center")
    ax.set_ylim(0, max(e["q3_ms"] for e in entries) * 1.3)  # room for the ratios and the legend
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_memory(report: dict, path: str) -> None:
    """Model states of the rank holding most, stacked by kind; a black tick marks the planner's
    prediction (parameters + gradients + optimizer state) for the shardwise configurations."""
    plt = _pyplot()
    names = list(report["configs"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4), dpi=110)
    bottoms = [0.0] * len(names)
    for category in CATEGORIES:
        heights = []
        for name in names:
            entry = report["configs"][name]
            heights.append(entry["model_state_split"][category][heaviest_rank(entry)] / MB)
        ax.bar(range(len(names)), heights, bottom=bottoms, color=COLOURS[category], label=LABELS[category])
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    predicted = [(x, report["configs"][n]["predicted"]) for x, n in enumerate(names)]
    marked = [(x, p["total"] / MB) for x, p in predicted if p is not None]
    if marked:
        ax.scatter([x for x, _ in marked], [y for _, y in marked], marker="_", s=600, color="black", zorder=3,
                   label="predicted (plan)")
    ax.set_ylim(0, max(bottoms + [y for _, y in marked]) * 1.25)  # room for the legend and the ticks
    ax.set_xticks(list(range(len(names))), names, rotation=20)
    ax.set_ylabel("MB per rank")
    ax.set_title(f"model states per rank, after optimizer.step(); {report['world_size']} ranks", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
