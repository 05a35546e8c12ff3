"""Launching a federated run and writing its report: one entry per round, rounds to the target
accuracy, the accuracy and loss curves (PNG), each client's participation."""

from __future__ import annotations

import json
import os

from ..runtime import launch
from ..train.run_folder import check_run_folder
from .config import FederatedConfig
from .coordinator import federate_rank


def run_federated(config: FederatedConfig) -> dict:
    config.validate()
    if config.run_dir:  # never over another run's files: a folder holding a run is refused unless resumed
        check_run_folder(config.run_dir, os.getcwd(), config.resume)
        os.makedirs(config.run_dir, exist_ok=True)
    history = launch(federate_rank, config.nproc, args=(config,), timeout_s=None)[0]["history"]
    report = build_report(config, history)
    for path in filter(None, (config.report, config.run_dir and os.path.join(config.run_dir, "report.json"))):
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
    if config.run_dir:
        plot(report, os.path.join(config.run_dir, "rounds.png"))
    return report


def rounds_to(history: list[dict], target: float | None) -> int | None:
    if target is None:
        return None
    return next((r["round"] for r in history if r["accuracy"] >= target), None)


def build_report(config: FederatedConfig, history: list[dict]) -> dict:
    reach = rounds_to(history, config.target_accuracy)
    participation = [0] * config.clients
    for entry in history:
        for k in entry["clients"]:
            participation[k] += 1
    return {
        "config": config.to_dict(),
        "rounds": history,
        "rounds_to_target": reach,
        "bytes_to_target": sum(r["bytes"] for r in history[:reach]) if reach else None,
        "final_accuracy": history[-1]["accuracy"] if history else None,
        "participation": participation,
    }


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in report["rounds"]]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    acc.plot(rounds, [r["accuracy"] for r in report["rounds"]])
    loss.plot(rounds, [r["loss"] for r in report["rounds"]])
    acc.set_ylabel("test accuracy")
    loss.set_ylabel("test loss")
    for ax in (acc, loss):
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    config = report["config"]
    fig.suptitle(f"{config['algorithm']} ({config['server_opt']}), {config['clients']} clients, C = {config['fraction']}, "
                 f"split {config['split']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
