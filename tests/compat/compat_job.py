"""What every compat script shares: the job it runs in, its slice of the data, what it returns.

A script runs two ways, as a user's does: `Job(strategy=None)` is one process training on the
whole global batch (no wrap), `Job(strategy=...)` is one rank of a launched job after `sw.wrap`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

import shardwise as sw

GLOBAL_BATCH = 8
"""Rows per optimizer step over all ranks; splits evenly over 1, 2 and 4 ranks (and 8 GPUs)."""


@dataclass(frozen=True)
class Job:
    """How a script is run: single process or a rank, where it may write, which device."""

    strategy: object = None
    """None: one process on the whole batch, no wrap; else what `sw.wrap` gets."""
    workdir: str = "."
    """A folder the script may write checkpoints into (shared by the ranks of a launch)."""
    device: str = "cpu"
    """"cpu", or "cuda" for this rank's GPU (tests/gpu)."""

    @property
    def distributed(self) -> bool:
        return self.strategy is not None

    def torch_device(self) -> torch.device:
        if self.device == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def seed_offset(self) -> int:
        """nanoGPT's `seed_offset = ddp_rank`: ranks build different weights; wrap must make them rank 0's."""
        return int(os.environ.get("RANK", "0")) if self.distributed else 0


def rank_and_world(job: Job) -> tuple[int, int]:
    """After wrap: a parameter server's workers count themselves only."""
    return (sw.rank(), sw.world_size()) if job.distributed else (0, 1)


def my_rows(job: Job, batch_rows: int = GLOBAL_BATCH) -> slice:
    rank, world = rank_and_world(job)
    per_rank = batch_rows // world
    return slice(rank * per_rank, (rank + 1) * per_rank)


def strip_compile_prefix(state: dict) -> dict:
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in strip_compile_prefix(state).items()}


def final_state(job: Job, model) -> dict:
    """The full parameters and buffers: `sw.full_state_dict` on a rank, `state_dict` alone."""
    return cpu_state(sw.full_state_dict(model) if job.distributed else model.state_dict())


def torch_ddp_group(job: Job):
    """The ranks that train, as a group for torch's DistributedDataParallel.

    Every rank must call this before `sw.wrap`: a parameter server's server ranks never come
    back from wrap, and `new_group` needs every rank of the job.
    """
    servers = getattr(job.strategy, "servers", 0) if isinstance(job.strategy, sw.ParameterServer) else 0
    if servers == 0:
        return None
    return dist.new_group(list(range(servers, dist.get_world_size())))


def strategy_for(name: str):
    """A strategy name of the suite -> what `sw.wrap` gets ("ps": 1 server, sync)."""
    if name == "ps":
        return sw.ParameterServer(servers=1)
    if name == "zero3-offload":
        return sw.ZeRO(stage=3, offload="cpu")
    return name


def processes_for(name: str, workers: int = 2) -> int:
    return workers + 1 if name == "ps" else workers
