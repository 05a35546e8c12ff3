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
    from . import progress

    if dist.is_initialized() and not progress.group_kept():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


class _TrainingView:
    """Which ranks train together, when not all of them do (a parameter server's workers).

    Set once per process by the strategy that splits the job; `rank()`, `world_size()` and the
    communication layer's default group then refer to the training ranks only, so a script
    written for DDP runs unchanged on them.
    """

    rank: int | None = None
    world_size: int | None = None
    group = None
    make_group = None  # builds `group` at its first use, for ranks that need not start together


_view = _TrainingView()


def set_training_view(rank_in_group: int | None, size: int | None, group=None, make_group=None) -> None:
    """`group`, or `make_group()` called at the first collective on the default group (only the
    training ranks take part in creating it, so none waits for the others before then)."""
    _view.rank, _view.world_size, _view.group, _view.make_group = rank_in_group, size, group, make_group


def training_group():
    """The process group collectives default to (None: the whole job)."""
    if _view.group is None and _view.make_group is not None:
        _view.group, _view.make_group = _view.make_group(), None
    return _view.group


def rank() -> int:
    """This process's rank among the training ranks (0 outside any job)."""
    if _view.rank is not None:
        return _view.rank
    if dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of training ranks (1 outside any job)."""
    if _view.world_size is not None:
        return _view.world_size
    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def device() -> torch.device:
    """The device this rank computes on: its own GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
