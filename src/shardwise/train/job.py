"""The whole job from the launching process: check input, launch ranks, write the run folder."""

from __future__ import annotations

import os

from ..data import BatchSampler, load_corpus
from ..errors import ConfigError, WorkerError
from ..runtime.launch import launch
from .config import TrainConfig
from .loop import train_rank
from .report import build_report, plot_losses, write_report
from .run_folder import check_run_folder, choose_run_folder
from ..paths import check_writable


def run_training(config: TrainConfig) -> tuple[dict, str]:
    """Validate, train on `config.nproc` ranks, write report, plot and checkpoint; return (report, run_dir)."""
    config.validate()
    if config.resume and not os.path.exists(config.resume):
        raise ConfigError(f"no checkpoint at {config.resume}")
    check_writable(config.report, "--report")
    check_run_folder(config.run_dir, config.out_dir, config.resume)  # before anything is written
    corpus = load_corpus()  # built once here, so ranks find it cached
    BatchSampler(corpus.train, config.model.block_size, config.global_batch, 0, config.trainers, config.seed)
    config.run_dir = choose_run_folder(config.run_dir, config.out_dir, config.strategy, config.nproc, config.resume)
    try:
        per_rank = launch(train_rank, config.nproc, args=(config,), timeout_s=None, collective_timeout_s=config.timeout_s)
    except WorkerError as error:
        error.resume_hint = resume_hint(config)
        raise
    report = build_report(config, per_rank)
    write_report(report, os.path.join(config.run_dir, "report.json"))
    if config.report:
        write_report(report, config.report)
    plot_losses(report, os.path.join(config.run_dir, "loss.png"))
    return report, config.run_dir


def resume_hint(config: TrainConfig) -> str | None:
    """The command that continues from the last checkpoint, if one was written."""
    if not os.path.exists(os.path.join(config.run_dir, "checkpoint", "LATEST")):
        return None
    return f"shardwise train --resume {config.run_dir} --steps {config.steps} --strategy {config.strategy} --nproc {config.nproc}"
