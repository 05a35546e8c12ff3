"""The strategy objects of periodic communication (see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import positive_number
from ..errors import ConfigError
from ..strategy.base import StrategyDefaults


def _whole(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name} must be a whole number of at least {least}, got {value!r}")


@dataclass(frozen=True)
class LocalSGD(StrategyDefaults):
    """Post-local SGD (Lin et al., ICLR 2020; PyTorch's PostLocalSGDOptimizer): synchronous data
    parallelism for `warmup_steps` steps, then every rank steps on its own gradient and the
    parameters are averaged every `period` steps. Optimizer state stays local to each rank."""

    period: int = 8
    """Steps between parameter averages after the warm-up (1: every step)."""
    warmup_steps: int = 0
    """Steps of synchronous gradient averaging first."""
    broadcast_buffers: bool = True
    """Before each forward, copy rank 0's buffers (BatchNorm statistics) to every rank."""
    find_unused_parameters: bool = False
    """Accepted for PyTorch DDP's signature: gradients are averaged at the optimizer step, where a
    parameter without gradient simply counts as zero."""

    name = "local-sgd"

    def __post_init__(self):
        _whole("period", self.period, 1)
        _whole("warmup_steps", self.warmup_steps, 0)

    def __str__(self) -> str:
        return self.name

    def wrap(self, module, optimizer, group=None):
        from .periodic import PeriodicModule, local_sgd_hooks

        wrapped = PeriodicModule(module, group, self.broadcast_buffers)
        local_sgd_hooks(wrapped, optimizer, self.period, self.warmup_steps)
        return wrapped, optimizer


@dataclass(frozen=True)
class DiLoCo(StrategyDefaults):
    """DiLoCo (Douillard et al., 2023): each rank takes `inner_steps` steps of the user's optimizer
    on its own data; then the ranks average their pseudo-gradients (global parameters minus
    their local ones) and an outer Nesterov SGD steps the global parameters, which every rank
    copies. The outer state (global parameters, momentum) is replicated on every rank."""

    inner_steps: int = 50
    """Inner steps between outer steps (H)."""
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    broadcast_buffers: bool = True
    """Before each forward, copy rank 0's buffers (BatchNorm statistics) to every rank."""
    find_unused_parameters: bool = False
    """Accepted for PyTorch DDP's signature; no gradient is communicated."""

    name = "diloco"

    def __post_init__(self):
        _whole("inner_steps", self.inner_steps, 1)
        positive_number("outer_lr", self.outer_lr)
        if not 0 <= self.outer_momentum < 1:
            raise ConfigError(f"outer_momentum must be in [0, 1), got {self.outer_momentum}")

    def __str__(self) -> str:
        return self.name

    def wrap(self, module, optimizer, group=None):
        from .periodic import PeriodicModule, diloco_hooks

        wrapped = PeriodicModule(module, group, self.broadcast_buffers)
        diloco_hooks(wrapped, optimizer, self)
        return wrapped, optimizer
