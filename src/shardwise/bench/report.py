"""What bench shows: the markdown table, the lines around it, and the JSON file."""

from __future__ import annotations

import json
import os

from ..vocab import MB  # reports use megabytes, 10**6 bytes

RSS_EXPLAINED = {
    "separate": "peak RSS: a fresh launch per configuration, max over ranks; (+N): the MB that the model, "
                "wrapping and training added to the process's RSS as it stood before the model was built",
    "shared": "peak RSS: the one shared process, max over ranks, so the max over all configurations "
              "(not per configuration; see model states for that)",
}


def megabytes(nbytes: float) -> str:
    value = nbytes / MB
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def markdown_table(report: dict) -> str:
    """One row per configuration. Bytes are the rank that holds the most; predictions (shardwise
    rows) are the planner's, fp32 Adam, beside the measurement."""
    baseline = report["baseline"]
    head = ["config", "step ms (IQR)", f"/ {baseline}", "peak RSS MB",
            "model states MB: params / grads / optim / other = total", "predicted MB: params / grads / optim = total",
            "comm MB/step (predicted)", f"parity vs {baseline} (loss diff, max param diff)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["configs"].items():
        lines.append("| " + " | ".join(row_cells(name, entry, report)) + " |")
    return "\n".join(lines)


def row_cells(name: str, entry: dict, report: dict) -> list[str]:
    rank = heaviest_rank(entry)
    split = {category: values[rank] for category, values in entry["model_state_split"].items()}
    states = " / ".join(megabytes(split[c]) for c in ("params", "grads", "optimizer", "other"))
    states += f" = {megabytes(entry['model_state_bytes'][rank])}"
    predicted = entry["predicted"]
    if predicted is None:
        predicted_cell = "-"
    else:
        predicted_cell = " / ".join(megabytes(predicted[c]) for c in ("params", "grads", "optimizer"))
        predicted_cell += f" = {megabytes(predicted['total'])}"
    if entry["comm_bytes_per_step"] is None:
        comm_cell = "-"
    else:
        predicted_comm = f" ({megabytes(predicted['comm_bytes_per_step'])})" if predicted is not None else ""
        comm_cell = f"{megabytes(max(entry['comm_bytes_per_step']))}{predicted_comm}"
    if name == report["baseline"]:
        parity = "baseline"
    else:
        verdict = "lossy" if entry["parity"] is None else "ok" if entry["parity"] else "FAILED"
        parity = f"{verdict} ({entry['loss_abs_diff']:.1e}, {entry['max_abs_param_diff']:.1e})"
    return [
        name,
        f"{entry['median_ms']:.1f} ({entry['iqr_ms']:.1f})",
        f"{entry['ratio_to_baseline']:.3f}",
        rss_cell(entry),
        states,
        predicted_cell,
        comm_cell,
        parity,
    ]


def continuous_table(report: dict) -> str:
    """Step times of consecutive steps: the interleaved run's (blocks of consecutive steps) beside
    launches of each configuration alone (alternated), and minor page faults per step in each."""
    baseline = report["baseline"]
    head = ["config", f"interleaved ms (/ {baseline})", f"own processes ms (IQR) (/ {baseline})",
            "minor faults/step: interleaved / own"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["configs"].items():
        separate = entry.get("separate")
        own = "-" if separate is None else \
            f"{separate['median_ms']:.1f} ({separate['iqr_ms']:.1f}) ({separate['ratio_to_baseline']:.3f})"
        faults = [entry.get("minor_faults_per_step"), (separate or {}).get("minor_faults_per_step")]
        cells = [name, f"{entry['median_ms']:.1f} ({entry['ratio_to_baseline']:.3f})", own,
                 " / ".join("-" if f is None else f"{f:.0f}" for f in faults)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compression_table(report: dict) -> str:
    """What each configuration sends and what it costs in step time and in loss after the same
    steps. PyTorch's configurations are not counted by shardwise's comm layer: '-'."""
    baseline = report["baseline"]
    reference = report["configs"][baseline]
    sent = {name: 0 if name == "local" else max(entry["comm_bytes_per_step"])
            if entry["comm_bytes_per_step"] is not None else None for name, entry in report["configs"].items()}
    full = sent.get("ddp") or sent.get(baseline)
    head = ["config", f"step ms (/ {baseline})", "comm MB/step", "fewer bytes than ddp", "loss after the same steps",
            f"loss vs {baseline}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["configs"].items():
        nbytes = sent[name]
        fewer = "-" if nbytes is None or not full else "no communication" if nbytes == 0 else f"{full / nbytes:.1f}x"
        gap = (entry["final_loss"] - reference["final_loss"]) / abs(reference["final_loss"])
        cells = [name, f"{entry['median_ms']:.1f} ({entry['ratio_to_baseline']:.3f})",
                 "-" if nbytes is None else megabytes(nbytes), fewer, f"{entry['final_loss']:.4f}", f"{gap:+.2%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heaviest_rank(entry: dict) -> int:
    """The rank holding the most model-state bytes: the one that decides whether a model fits."""
    totals = entry["model_state_bytes"]
    return max(range(len(totals)), key=totals.__getitem__)


def rss_cell(entry: dict) -> str:
    peak = max(entry["peak_rss_bytes"])
    before = entry.get("rss_before_model_bytes")
    if before is None:
        return f"{peak / MB:.0f}"
    added = max(p - b for p, b in zip(entry["peak_rss_bytes"], before))
    return f"{peak / MB:.0f} (+{max(added, 0) / MB:.0f})"


def preamble(report: dict) -> str:
    model = report["model"]
    return (
        f"{model['description']}, {model['params']:,} parameters; {report['world_size']} ranks x "
        f"{report['threads_per_rank']} thread(s); median over {report['config']['steps']} steps after "
        f"{report['config']['warmup']} warm-up, interleaved in blocks of {report['config'].get('block', 1)} consecutive "
        f"steps per configuration; own processes: the same steps in launches of each configuration alone, "
        f"alternated; step time = slowest rank; IQR = Q3 - Q1; model states after "
        f"optimizer.step(), before zero_grad(), of the rank holding most; {RSS_EXPLAINED[report['rss_mode']]}"
    )


def warnings(report: dict) -> list[str]:
    """One line per configuration that did not train like the baseline."""
    return [
        f"WARNING: {name} differs from {report['baseline']} after identical training: final loss by "
        f"{entry['loss_abs_diff']:.2e}, parameters by up to {entry['max_abs_param_diff']:.2e}"
        for name, entry in report["configs"].items() if entry["parity"] is False
    ]


def write_json(report: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
