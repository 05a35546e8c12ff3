"""The run report (docs/api.md fields) and the loss plot, from every rank's measurements."""

from __future__ import annotations

import json
import math
import os
import statistics

from .config import TrainConfig


def build_report(config: TrainConfig, per_rank: list[dict], strategy=None) -> dict:
    """Global-batch mean loss per step (equal slices: the mean of rank means), medians, per-rank
    lists. `strategy`: the object the run trained with (default: built from `config`)."""
    strategy = strategy if strategy is not None else config.strategy.build()
    nproc = config.strategy.nproc
    trainers = len(strategy.training_ranks(nproc))
    per_rank = [r for r in per_rank if r is not None]  # parameter servers, and workers that died
    world = len(per_rank)
    steps = min(len(r["local_losses"]) for r in per_rank)
    losses = [sum(r["local_losses"][s] for r in per_rank) / world for s in range(steps)]
    losses = [loss if math.isfinite(loss) else None for loss in losses]  # JSON has no NaN: a skipped step
    # A step is as slow as its slowest rank.
    step_times = [max(r["step_times"][s] for r in per_rank) for s in range(steps)]
    measured = step_times[1:] or step_times  # the first step pays for warm-up
    step_time = statistics.median(measured)
    tokens_per_step = config.data.global_batch * config.model.block_size
    options = config.strategy
    mesh = {"dp": nproc // (options.pp * options.tp), "pp": options.pp, "tp": options.tp,
            "microbatches": options.microbatches or options.pp, "schedule": options.schedule or "1f1b",
            **({"tp_vocab": True} if options.tp_vocab else {})}
    return {
        "strategy": config.strategy.name,
        **({"mesh": mesh} if options.pp * options.tp > 1 else {}),
        "world_size": world,
        "steps": steps,
        "start_step": per_rank[0]["start_step"],
        "losses": losses,
        "val_losses": [{"step": s, "loss": v} for s, v in per_rank[0]["evals"]],
        "step_time_s": step_time,
        "tokens_per_s": tokens_per_step / step_time,
        "samples_per_s": sum(r["samples"] for r in per_rank) / max(r["train_seconds"] for r in per_rank),
        "train_seconds": max(r["train_seconds"] for r in per_rank),
        "peak_rss_bytes": [r["peak_rss_bytes"] for r in per_rank],
        "model_state_bytes": [r["model_state_bytes"] for r in per_rank],
        "comm_bytes_per_step": [r["comm_bytes_per_step"] for r in per_rank],
        "comm_bytes_total": [r.get("comm_bytes_total", 0) for r in per_rank],
        "global_batch": config.data.global_batch,
        "tokens_per_step": tokens_per_step,
        "config": config.to_dict(),
        "resumed_from": config.checkpointing.resume,
        "skipped_steps": per_rank[0].get("skipped_steps", []),
        **({"workers": trainers, "servers": nproc - trainers} if trainers != nproc else {}),
        **({"parameter_server": per_rank[0]["server_stats"]} if per_rank[0].get("server_stats") else {}),
        **compression(config, per_rank, world),
    }


def compression(config: TrainConfig, per_rank: list[dict], world: int) -> dict:
    """{"compression": {method, bytes of the median step and of the whole run, an uncompressed
    DDP step's bytes, the ratio over the whole run (warm-up steps included) and of the median
    step}} under --compress (bytes as the communication layer counts them: ring volume per rank)."""
    method = config.strategy.compress
    if method in (None, "none") or "trainable_params" not in per_rank[0]:
        return {}
    uncompressed = 2 * (world - 1) / world * 4 * per_rank[0]["trainable_params"]
    step = max(r["comm_bytes_per_step"] for r in per_rank)
    total = max(r.get("comm_bytes_total", 0) for r in per_rank)
    steps = len(per_rank[0]["local_losses"])
    return {"compression": {"method": method, "bytes_per_step": step, "bytes_total": total,
                            "uncompressed_bytes_per_step": uncompressed,
                            "ratio": uncompressed * steps / total if total else None,
                            "ratio_median_step": uncompressed / step if step else None}}


def loss_steps(report: dict) -> range:
    """The step of each training loss: a resumed run's start at its checkpoint's step, not at 1."""
    start = report.get("start_step", 0)
    return range(start + 1, start + len(report["losses"]) + 1)


def ranks_label(report: dict) -> str:
    """'2 ranks', or under a parameter server '2 workers + 1 server'."""
    if "servers" in report:
        servers = report["servers"]
        return f"{report['workers']} workers + {servers} server{'s' if servers != 1 else ''}"
    return f"{report['world_size']} ranks"


def write_report(report: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


def plot_losses(report: dict, path: str) -> None:
    """Training loss per step (with a moving average) and validation loss at its steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [float("nan") if loss is None else loss for loss in report["losses"]]
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = loss_steps(report)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
    ax.plot(steps, smooth, color="tab:blue", label=f"train (mean of {window})")
    if report["val_losses"]:
        ax.plot([v["step"] for v in report["val_losses"]], [v["loss"] for v in report["val_losses"]],
                "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_title(f"{report['strategy']} on {ranks_label(report)}, {report['tokens_per_s']:,.0f} tokens/s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
