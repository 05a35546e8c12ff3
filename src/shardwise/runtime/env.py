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
import torch.distributed.nn.functional as _dist_nn_functional  # before any group exists: [Note: group lifetime]

from ..errors import ConfigError
from . import heap, network

DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "SHARDWISE_TIMEOUT_S"


# [Note: group lifetime]
# `destroy_process_group()` frees the default gloo group, joining its worker and transport
# threads, only if c10d held the last reference to it. `torch.distributed.nn.functional` binds
# `group=group.WORLD` as default arguments when its functions are defined; torch imports it
# lazily (the first optimizer built imports torch._dynamo, which reaches it), so in a script that
# initialises first it captured the live default group ten times. The group then outlived
# `destroy_process_group()` and died during interpreter teardown, its threads still running,
# where releasing a tensor's Python object from a gloo thread after finalisation began ends in
# std::terminate: "terminate called without an active exception", SIGABRT, in some runs of a
# DDP script ending in `destroy_process_group()` (timing decides; one in four was reported, one
# in twelve seen here). Importing the module here, before
# any group exists, binds None (the default group, the same meaning); if a group already exists
# when shardwise is imported, the captured references are replaced by None at once.


def _forget_captured_groups(module) -> None:
    """Replace process groups bound as default arguments of `module`'s functions by None."""
    for fn in vars(module).values():
        defaults = getattr(fn, "__defaults__", None)
        if defaults and any(isinstance(d, dist.ProcessGroup) for d in defaults):
            fn.__defaults__ = tuple(None if isinstance(d, dist.ProcessGroup) else d for d in defaults)


_forget_captured_groups(_dist_nn_functional)


def default_backend() -> str:
    """NCCL when every local rank can have its own GPU, gloo otherwise."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world:
        return "nccl"
    return "gloo"


def collective_timeout_s() -> float:
    """How long a collective may wait for its peers before failing (env SHARDWISE_TIMEOUT_S)."""
    return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


DISTRIBUTED_VARIABLES = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")


def distributed_environment(environ=os.environ) -> tuple[int, int, str, int] | None:
    """(world size, rank, master address, master port) from the launcher variables, or None when
    none is set (a plain process: world of 1). Partly set or inconsistent variables raise
    ConfigError: N copies of a script that each fell back to rank 0 would all write rank 0's files."""
    present = [name for name in DISTRIBUTED_VARIABLES if environ.get(name, "") != ""]
    if not present:
        return None
    missing = [name for name in DISTRIBUTED_VARIABLES if name not in present]
    if missing:
        raise ConfigError(f"{', '.join(present)} set but {', '.join(missing)} not: a distributed job needs all of "
                          f"{', '.join(DISTRIBUTED_VARIABLES)} (start it with shardwise run or torchrun), or none of them")
    values = {}
    for name, least in (("WORLD_SIZE", 1), ("RANK", 0), ("MASTER_PORT", 1)):
        try:
            values[name] = int(environ[name])
        except ValueError:
            raise ConfigError(f"{name}={environ[name]!r} is not a whole number") from None
        if values[name] < least:
            raise ConfigError(f"{name}={values[name]} must be at least {least}")
    if values["RANK"] >= values["WORLD_SIZE"]:
        raise ConfigError(f"RANK={values['RANK']} is not below WORLD_SIZE={values['WORLD_SIZE']}")
    if values["MASTER_PORT"] > 65535:
        raise ConfigError(f"MASTER_PORT={values['MASTER_PORT']} is not a TCP port (1-65535)")
    return values["WORLD_SIZE"], values["RANK"], environ["MASTER_ADDR"], values["MASTER_PORT"]


def init(backend: str | None = None) -> None:
    """Initialise the default process group from the environment; a no-op if already done.

    The group is destroyed at interpreter exit, while the interpreter is whole, if the script
    has not destroyed it itself; see [Note: group lifetime]. What the job listens on: see
    [Note: listening sockets].
    """
    _destroy_at_exit()
    heap.keep_freed_memory()  # see [Note: freed memory and page faults]
    if dist.is_initialized():  # by the script itself: still destroyed at exit if it does not
        return
    job = distributed_environment()
    backend = backend or os.environ.get("SHARDWISE_BACKEND") or default_backend()
    timeout = datetime.timedelta(seconds=collective_timeout_s())
    if job is None:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return
    world, rank, master_addr, master_port = job
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        interface = network.interface_for(master_addr)
        if interface:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # the launcher hosts the store
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        return
    store = _job_store(world, rank, master_addr, master_port, timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)


_hosted: list = []  # rank 0's store server lives as long as the process


def _job_store(world: int, rank: int, master_addr: str, master_port: int, timeout):
    """Rank 0 hosts the store on MASTER_ADDR's address only; the others connect to it."""
    if rank == 0:
        address = network.local_address_for(master_addr)
        if address is None:
            raise ConfigError(f"MASTER_ADDR={master_addr} is not an address of this machine, but rank 0 hosts the "
                              "rendezvous there: set MASTER_ADDR to rank 0's host")
        rendezvous = network.Rendezvous(world, host=address, port=master_port, timeout=timeout)
        _hosted.append(rendezvous)
        return rendezvous.store
    return dist.TCPStore(master_addr, master_port, world, is_master=False, timeout=timeout)


_exit_hook_registered = False


def _destroy_at_exit() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(shutdown)
        _exit_hook_registered = True


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


class _DataParallelView:
    """This rank's data-parallel index and the number of replicas, when a mesh sets them apart
    from the ranks (pipeline and tensor-parallel ranks of one replica share the same data)."""

    rank: int | None = None
    size: int | None = None


_data_parallel = _DataParallelView()


def set_data_parallel(rank_in_replicas: int | None, replicas: int | None) -> None:
    _data_parallel.rank, _data_parallel.size = rank_in_replicas, replicas


def data_parallel_rank() -> int:
    """Which slice of the global batch this rank feeds: its data-parallel index on a mesh, else
    its rank."""
    return _data_parallel.rank if _data_parallel.rank is not None else rank()


def data_parallel_size() -> int:
    """Into how many slices the global batch is cut: the data-parallel replicas on a mesh, else
    the world size."""
    return _data_parallel.size if _data_parallel.size is not None else world_size()


def device() -> torch.device:
    """The device this rank computes on: its own GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
