"""The strategy interface: what every strategy tells `wrap`, checkpoints, the training job and
the planner, declared once.

[Note: strategy interface]
A strategy is a frozen dataclass of its options (`DDP()`, `ZeRO(stage=2)`,
`ParameterServer(servers=1)`) implementing `Strategy`:
- `wrap(module, optimizer, group)`: the model wrapped in a `StrategyModule` (strategy/module.py)
  and the optimizer to train with. `wraps_together`: every rank wraps at once, so `sw.wrap` first
  checks that the ranks hold the same model and copies rank 0's parameters to all (else the
  strategy agrees on the model itself, e.g. workers joining a parameter server late).
- `training_ranks(world_size)`, `role(rank, world_size)`: which ranks train, and what each rank
  is ("worker" trains; "server" holds state for workers and returns from `wrap` only at the end).
- `steps_together`: the training ranks take every step together (False: asynchronous workers,
  which join no collective after `wrap`, so a job neither saves nor averages across them).
- `with_precision(precision)`: the same strategy computing in fp32, bf16 or fp16 (see
  [Note: precisions]), or a ConfigError saying what it cannot do; `casts_itself`: whether the
  wrapped model casts by itself (else a job that wants bf16 runs it under autocast).
- `trains_by_step`: the wrapped model trains with `model.train_step(inputs, targets, loss_fn)`
  (which runs forward and backward and returns the mean loss) instead of forward then backward
  (pipeline and tensor parallelism); `batch_slices(world_size)`: into how many slices the
  global batch is cut (data-parallel replicas; all ranks of one replica feed the same slice).
- `planner()`: what `shardwise plan` needs to predict memory and traffic (`PlanTraits`), or
  None where the planner does not model the strategy; `kept_for_backward(module)`: for a given
  model, the parameter elements its second gather skips (ZeRO-3's root and last unit; 0).
The wrapped model then answers everything asked after wrap: `no_sync()`, the model-state bytes
and the pieces each rank saves and loads (`StrategyModule.state`). Nothing outside a strategy's
own package reads more than these two declarations; the registry (`shardwise.api`) names them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import ConfigError
from ..vocab import check_precision

if TYPE_CHECKING:
    from .module import StrategyModule

Role = Literal["worker", "server"]


@dataclass(frozen=True)
class PlanTraits:
    """How a strategy holds model states and moves them, as the planner counts them
    ([Note: ZeRO memory formulas])."""

    shards_params: bool = False
    """Parameters split over the ranks (each holds 1/N)."""
    shards_grads: bool = False
    """Gradients split over the ranks."""
    shards_optimizer: bool = False
    """Optimizer state (and fp32 masters) split over the ranks."""
    reduces_by_all_reduce: bool = True
    """Gradients meet in an all-reduce (else a reduce-scatter into each rank's shard)."""
    parameter_gathers: int = 0
    """All-gathers of the parameters per step (sharded masters or sharded parameters)."""


@runtime_checkable
class Strategy(Protocol):
    """What every strategy object provides; see [Note: strategy interface]."""

    @property
    def name(self) -> str: ...

    @property
    def wraps_together(self) -> bool: ...

    @property
    def steps_together(self) -> bool: ...

    @property
    def casts_itself(self) -> bool: ...

    @property
    def trains_by_step(self) -> bool: ...

    def batch_slices(self, world_size: int) -> int: ...

    def wrap(self, module: nn.Module, optimizer: torch.optim.Optimizer,
             group=None) -> tuple[StrategyModule, torch.optim.Optimizer]: ...

    def training_ranks(self, world_size: int) -> range: ...

    def role(self, rank: int, world_size: int) -> Role: ...

    def with_precision(self, precision: str) -> Strategy: ...

    def planner(self) -> PlanTraits | None: ...

    def kept_for_backward(self, module: nn.Module) -> int: ...


class StrategyDefaults:
    """The answers of a strategy where every rank trains, in step, in fp32 or under bf16
    autocast; a strategy dataclass inherits them and overrides what differs."""

    wraps_together = True
    steps_together = True
    casts_itself = False
    trains_by_step = False

    def training_ranks(self, world_size: int) -> range:
        return range(world_size)

    def batch_slices(self, world_size: int) -> int:
        """Into how many slices the global batch is cut (one per data-parallel replica)."""
        return len(self.training_ranks(world_size))

    def role(self, rank: int, world_size: int) -> Role:
        return "worker" if rank in self.training_ranks(world_size) else "server"

    def with_precision(self, precision: str):
        """fp32 as is, bf16 under the job's autocast; fp16 needs a loss scaler the strategy lacks."""
        if check_precision(precision) == "fp16":
            raise ConfigError(f"--precision fp16 needs loss scaling: use a ZeRO strategy (zero1, zero2, zero3), not '{self.name}'")
        return self

    def planner(self) -> PlanTraits | None:
        return None

    def kept_for_backward(self, module: nn.Module) -> int:
        """Parameter elements gathered once for both forward and backward where the planner counts
        two gathers (`PlanTraits.parameter_gathers`); 0: none."""
        return 0

    def with_options(self, **options):
        """A copy with the given option fields changed (dataclasses.replace, validated again)."""
        return replace(self, **options)
