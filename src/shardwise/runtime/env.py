"""Process-group set-up from the standard launcher variables.

`init()` reads what `torchrun`, `shardwise run` and `shardwise.launch` all set (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); without them the process is a world of size 1, so every
strategy runs unchanged in a plain `python script.py`.
"""

from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "SHARDWISE_TIMEOUT_S"


def default_backend() -> str:
    """NCCL when every local rank can have its own GPU, gloo otherwise."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world:
        return "nccl"
    return "gloo"


def collective_timeout_s() -> float:
    """How long a collective may wait for its peers before failing (env SHARDWISE_TIMEOUT_S)."""
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


def init(backend: str | None = None) -> None:
    """Initialise the default process group from the environment; a no-op if already done.

    The group is destroyed at interpreter exit: a gloo group left alive then aborts the process
    ("terminate called without an active exception"), which launchers report as a crash.
    """
    if dist.is_initialized():
        return
    atexit.register(shutdown)
    backend = backend or os.environ.get("SHARDWISE_BACKEND") or default_backend()
    timeout = datetime.timedelta(seconds=collective_timeout_s())
    if "WORLD_SIZE" not in os.environ or "MASTER_PORT" not in os.environ:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, init_method="env://", timeout=timeout)


def shutdown() -> None:
    """Destroy the default process group if there is one (idempotent)."""
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def rank() -> int:
    """This process's rank in the default group (0 outside any job)."""
    if dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of ranks in the default group (1 outside any job)."""
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def device() -> torch.device:
    """The device this rank computes on: its own GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
