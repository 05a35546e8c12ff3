"""The parameter-server strategy object (see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import positive_number
from ..errors import ConfigError
from ..strategy.base import Role, StrategyDefaults
from ..vocab import check_precision

MODES = ("sync", "async", "ssp")


@dataclass(frozen=True)
class ParameterServer(StrategyDefaults):
    """Parameters live on `servers` server ranks, split by key range; the other ranks are
    workers that push gradients and pull parameters (Li et al., OSDI 2014)."""

    servers: int = 1
    """Server ranks: global ranks 0..servers-1; the rest are workers."""
    mode: str = "sync"
    """sync: average every live worker's gradient per step (equals DDP); async: apply each push
    as it arrives; ssp: async, but no worker runs more than `staleness` steps ahead of the slowest."""
    staleness: int = 2
    """ssp: how many steps a worker may run ahead of the slowest live worker."""
    dead_after_s: float = 5.0
    """async/ssp: a worker silent this long (no heartbeat) is dropped and training goes on."""
    find_unused_parameters: bool = False
    """Accepted either way: a parameter server never raises on unused parameters and always acts
    as PyTorch DDP with True: a push says which parameters got a gradient; one no worker used
    keeps `.grad = None` for the servers' step (the optimizer skips it), one some workers used
    averages as zero for the others (sync)."""
    broadcast_buffers: bool = True
    """sync: before a forward (those PyTorch DDP syncs on), copy worker 0's buffers (BatchNorm
    statistics) to every worker; skipped when the model has no buffers. async/ssp: each worker
    keeps its own buffers (see [Note: ps buffers])."""

    name = "ps"

    def __post_init__(self):
        if isinstance(self.servers, int) and self.servers < 1:
            raise ConfigError(f"a parameter server needs at least 1 server rank, got {self.servers}")
        if self.mode not in MODES:
            raise ConfigError(f"parameter-server mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if isinstance(self.staleness, bool) or not isinstance(self.staleness, int) or self.staleness < 0:
            raise ConfigError(f"staleness must be a whole number of at least 0, got {self.staleness!r}")
        if isinstance(self.servers, bool) or not isinstance(self.servers, int):
            raise ConfigError(f"servers must be a whole number, got {self.servers!r}")
        positive_number("dead_after_s", self.dead_after_s)

    def __str__(self) -> str:
        return f"ps-{self.mode}-{self.servers}"

    @property
    def wraps_together(self) -> bool:
        """Every rank wraps at once in sync mode; async and ssp workers may start late."""
        return self.mode == "sync"

    @property
    def steps_together(self) -> bool:
        """sync: workers take every step together; async/ssp: each at its own pace."""
        return self.mode == "sync"

    def training_ranks(self, world_size: int) -> range:
        """Global ranks servers..world_size-1 are workers."""
        return range(self.servers, world_size)

    def role(self, rank: int, world_size: int) -> Role:
        return "server" if rank < self.servers else "worker"

    def with_precision(self, precision: str) -> ParameterServer:
        if check_precision(precision) != "fp32":
            raise ConfigError("the parameter server trains in fp32: give --precision fp32")
        return self

    def wrap(self, module, optimizer, group=None):
        from .strategy import wrap_parameter_server

        return wrap_parameter_server(self, module, optimizer)
