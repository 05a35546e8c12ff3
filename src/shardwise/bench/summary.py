"""From every rank's raw measurements to one entry per configuration, with the planner's
predictions beside the measurements (pure: no process group, unit-tested on made-up numbers)."""

from __future__ import annotations

from ..plan import comm_bytes_per_step, model_states
from .config import SHARDWISE_CONFIGS, is_exact
from .memory import CATEGORIES
from .timing import median, paired_ratios, slowest_rank, summarize

PARAM_ATOL = 1e-5  # same start, same data, same averaging: only summation order differs
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6  # docs/api.md's parity tolerances, applied to the final loss


def predict(name: str, psi: int, world_size: int, kept: int = 0) -> dict | None:
    """The planner's fp32-Adam model states and ring bytes per step for a shardwise configuration
    ([Note: ZeRO memory formulas] in plan/formulas.py); None for PyTorch's. Stage 3's gather and
    gradient buffers are not model states in ZeRO's sense: compare against measured minus them.
    `kept`: parameter elements stage 3 gathers once for forward and backward."""
    if name not in SHARDWISE_CONFIGS:
        return None
    states = model_states(psi, name, world_size, precision="fp32", optimizer="adam")
    return {
        "params": states.params,
        "grads": states.grads,
        "optimizer": states.optimizer,
        "total": states.total,
        "comm_bytes_per_step": comm_bytes_per_step(psi, name, world_size, precision="fp32", kept=kept),
    }


def global_losses(per_rank: list[dict], name: str) -> list[float]:
    """Per step, the mean of the ranks' losses: equal slices, so the loss of the global batch."""
    local = [r["losses"][name] for r in per_rank]
    return [sum(step) / len(step) for step in zip(*local)]


def summarize_configs(per_rank: list[dict], names: tuple[str, ...], baseline: str) -> dict[str, dict]:
    """name -> its entry (times in ms, bytes per rank, parity against `baseline`)."""
    world_size, psi = len(per_rank), per_rank[0]["psi"]
    step_seconds = {name: slowest_rank([r["seconds"][name] for r in per_rank]) for name in names}
    baseline_ms = summarize(step_seconds[baseline])["median_ms"]
    baseline_loss = global_losses(per_rank, baseline)[-1]
    entries = {}
    for name in names:
        timing = summarize(step_seconds[name])
        losses = global_losses(per_rank, name)
        held = [r["model_states"][name] for r in per_rank]
        entry = {
            **timing,
            "ratio_to_baseline": timing["median_ms"] / baseline_ms,
            "paired_ratio_median": median(paired_ratios(step_seconds[name], step_seconds[baseline])),
            "phase_median_ms": {
                phase: median(slowest_rank([r["phases"][name][phase] for r in per_rank])) * 1e3
                for phase in per_rank[0]["phases"][name]
            },
            "model_state_bytes": [h["total"] for h in held],
            "model_state_split": {category: [h[category] for h in held] for category in CATEGORIES},
            "buffer_bytes": [r["buffer_bytes"][name] for r in per_rank],
            "losses": losses,
            "final_loss": losses[-1],
            "loss_abs_diff": abs(losses[-1] - baseline_loss),
            "max_abs_param_diff": max(r["param_diff"][name] for r in per_rank),
            "comm_bytes_per_step": None,
            "predicted": predict(name, psi, world_size, per_rank[0].get("kept", {}).get(name, 0)),
            "minor_faults_per_step": faults_per_step([r["faults"][name] for r in per_rank]) if "faults" in per_rank[0] else None,
        }
        if name in per_rank[0]["comm"]:
            entry.update(comm_summary([r["comm"][name] for r in per_rank]))
        entry["parity"] = (entry["max_abs_param_diff"] <= PARAM_ATOL
                           and entry["loss_abs_diff"] <= LOSS_ATOL + LOSS_RTOL * abs(baseline_loss)) if is_exact(name) else None
        if entry["predicted"] is not None:
            entry["measured_over_predicted"] = measured_over_predicted(entry)
        entries[name] = entry
    return entries


def faults_per_step(per_rank: list[list[int]]) -> float:
    """The worst rank's median minor page faults per timed step (0 in a steady state that
    allocates nothing new)."""
    return max(median(faults) for faults in per_rank)


def add_separate_timing(entries: dict[str, dict], separate: dict[str, list[list[dict]]], baseline: str) -> None:
    """Each entry's step times from launches of its own (`separate[name]`: per pass, per rank,
    the consecutive steps' seconds and faults), and their ratio to the baseline's."""
    for name, passes in separate.items():
        seconds = [s for per_rank in passes for s in slowest_rank([r["seconds"] for r in per_rank])]
        faults = [f for per_rank in passes for f in (r["faults"] for r in per_rank)]
        entries[name]["separate"] = {**summarize(seconds), "minor_faults_per_step": faults_per_step(faults)}
    base = entries[baseline]["separate"]["median_ms"]
    for name in separate:
        entries[name]["separate"]["ratio_to_baseline"] = entries[name]["separate"]["median_ms"] / base


def comm_summary(per_rank_logs: list[list[dict]]) -> dict:
    """Mean bytes per timed step on each rank (periodic strategies send every few steps), and
    rank 0's median by collective kind."""
    per_rank = [sum(step["total"] for step in log) / len(log) for log in per_rank_logs]
    first = per_rank_logs[0]
    kinds = [kind for kind in first[0] if kind != "total" and any(step[kind] for step in first)]
    return {
        "comm_bytes_per_step": per_rank,
        "comm_bytes_per_step_by_kind": {kind: median([step[kind] for step in first]) for kind in kinds},
    }


def measured_over_predicted(entry: dict) -> dict:
    """Worst rank's measured / predicted, per category; 'model_states' leaves out stage 3's
    buffers (`buffer_bytes`), which the formulas do not count."""
    predicted = entry["predicted"]
    split = entry["model_state_split"]
    out = {
        category: max(split[category]) / predicted[category] if predicted[category] else None
        for category in ("params", "grads", "optimizer")
    }
    out["model_states"] = max(total - buffers for total, buffers in zip(entry["model_state_bytes"], entry["buffer_bytes"])) \
        / predicted["total"]
    if entry["comm_bytes_per_step"] is not None and predicted["comm_bytes_per_step"]:
        out["comm_bytes_per_step"] = max(entry["comm_bytes_per_step"]) / predicted["comm_bytes_per_step"]
    else:
        out["comm_bytes_per_step"] = None
    return out
