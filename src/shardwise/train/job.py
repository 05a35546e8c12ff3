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
    """Validate, train on `config.strategy.nproc` ranks, write report, plot and checkpoint; return
    (report, run_dir)."""
    strategy = config.validate()
    nproc, ckpt, data = config.strategy.nproc, config.checkpointing, config.data
    if ckpt.resume and not os.path.exists(ckpt.resume):
        raise ConfigError(f"no checkpoint at {ckpt.resume}")
    check_writable(config.report, "--report")
    check_run_folder(ckpt.run_dir, ckpt.out_dir, ckpt.resume)  # before anything is written
    corpus = load_corpus()  # built once here, so ranks find it cached
    trainers = len(strategy.training_ranks(nproc))
    BatchSampler(corpus.train, config.model.block_size, data.global_batch, 0, trainers, data.seed)
    ckpt.run_dir = choose_run_folder(ckpt.run_dir, ckpt.out_dir, config.strategy.name, nproc, ckpt.resume)
    try:
        per_rank = launch(train_rank, nproc, args=(config, strategy), timeout_s=None, collective_timeout_s=config.timeout_s)
    except WorkerError as error:
        error.resume_hint = resume_hint(config)
        raise
    report = build_report(config, per_rank, strategy)
    write_report(report, os.path.join(ckpt.run_dir, "report.json"))
    if config.report:
        write_report(report, config.report)
    plot_losses(report, os.path.join(ckpt.run_dir, "loss.png"))
    return report, ckpt.run_dir


def resume_hint(config: TrainConfig) -> str | None:
    """The command that continues from the last checkpoint, if one was written."""
    run_dir = config.checkpointing.run_dir
    if not os.path.exists(os.path.join(run_dir, "checkpoint", "LATEST")):
        return None
    return (f"shardwise train --resume {run_dir} --steps {config.optimization.steps} --strategy {config.strategy.name} "
            f"--nproc {config.strategy.nproc}")
