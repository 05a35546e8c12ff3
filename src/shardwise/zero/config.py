"""The ZeRO strategy object: which stage, and its tuning knobs (see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..checks import positive_number
from ..errors import ConfigError
from ..strategy.base import PlanTraits, StrategyDefaults
from ..vocab import MIB, as_dtype, check_precision
from .units import kept_for_backward

@dataclass(frozen=True)
class ZeRO(StrategyDefaults):
    """Sharded data parallelism after Rajbhandari et al. (SC20): stage 1 shards optimizer state,
    stage 2 also gradients, stage 3 also parameters."""

    stage: int = 2
    """1, 2 or 3."""
    bucket_mb: float = 25
    """Stages 1-2: cap in MiB on a unit (the parameters that reduce and gather together)."""
    prefetch: int = 1
    """Stage 3: units whose all-gather is started ahead of the one computing."""
    offload: str = "none"
    """'cpu': fp32 master weights, gradients' shards and optimizer state live on the CPU."""
    param_dtype: torch.dtype | str | None = None
    """Compute dtype of parameters (bf16/fp16 for mixed precision); None: the model's (fp32)."""
    reduce_dtype: torch.dtype | str | None = None
    """Dtype gradients are reduced in; None: fp32."""
    unit_modules: tuple = ()
    """Stage 3: module classes that each form a unit; default: members of ModuleList/Sequential."""
    min_unit_mb: float = 2.0
    """Stage 3: a ModuleList/Sequential member with fewer MiB of (fp32) trainable parameters is
    not a unit of its own but part of the root unit, gathered once per forward and once per
    backward ([Note: small units]); 0: every member is a unit."""
    keep_for_backward: bool = True
    """Stage 3: the root unit and the forward's last unit stay gathered from forward into the
    backward that starts with them ([Note: kept for backward]); False: freed after forward and
    gathered again, one more gather each, less memory between forward and backward."""
    max_inflight: int = 1
    """Reduce-scatters in flight before the oldest is awaited (bounds gradient memory)."""
    find_unused_parameters: bool = False
    """Allow parameters that get no gradient in a backward (on some ranks or all), as PyTorch DDP's
    switch: they count as zero in the average, and one no rank used is left untouched by the step.
    Stage 3 then keeps every parameter in its root unit (gathered for the whole forward), since
    ranks that skip different modules would gather different units."""
    broadcast_buffers: bool = True
    """Before each forward, copy rank 0's buffers (BatchNorm statistics) to every rank, as PyTorch
    DDP does; skipped when the model has no buffers."""
    quantized_gradients: bool = False
    """Reduce-scatter gradients as int8 with a scale per block (ZeRO++'s qgZ): a quarter of the
    bytes; each peer's contribution is rounded once ([Note: quantized collectives])."""
    quantized_weights: bool = False
    """Stage 3: all-gather parameters as int8 with a scale per block (ZeRO++'s qwZ); the fp32
    masters the optimizer updates stay exact."""

    def __post_init__(self):
        if self.stage not in (1, 2, 3):
            raise ConfigError(f"ZeRO stage must be 1, 2 or 3, got {self.stage}")
        if self.offload not in ("none", "cpu"):
            raise ConfigError(f"offload must be 'none' or 'cpu', got '{self.offload}'")
        positive_number("bucket_mb", self.bucket_mb)
        if not self.min_unit_mb >= 0:
            raise ConfigError(f"min_unit_mb must be at least 0, got {self.min_unit_mb}")
        if self.prefetch < 0 or self.max_inflight < 1:
            raise ConfigError("prefetch must be >= 0 and max_inflight >= 1")
        as_dtype(self.param_dtype)
        as_dtype(self.reduce_dtype)
        for flag in ("quantized_gradients", "quantized_weights"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} is True or False, got {getattr(self, flag)!r}")
        if self.quantized_weights and self.stage != 3:
            raise ConfigError("quantized_weights applies to ZeRO stage 3 (its parameter gathers), not stage "
                              f"{self.stage}")

    @property
    def name(self) -> str:
        return f"zero{self.stage}"

    def __str__(self) -> str:
        return self.name

    casts_itself = True
    """Parameters are cast to `param_dtype` for compute, with fp32 masters (and fp16 loss scaling)."""

    def with_precision(self, precision: str) -> ZeRO:
        return replace(self, param_dtype=None if check_precision(precision) == "fp32" else precision)

    def planner(self) -> PlanTraits:
        return PlanTraits(shards_params=self.stage >= 3, shards_grads=self.stage >= 2, shards_optimizer=True,
                          reduces_by_all_reduce=False, parameter_gathers=2 if self.stage == 3 else 1)

    def kept_for_backward(self, module: torch.nn.Module) -> int:
        """Parameter elements that stage 3 gathers once for both forward and backward of `module`
        (its root unit and last unit, [Note: kept for backward]); 0 for stages 1-2."""
        if self.stage < 3 or not self.keep_for_backward:
            return 0
        return kept_for_backward(module, self.unit_modules, int(self.min_unit_mb * MIB), self.find_unused_parameters)

    def wrap(self, module, optimizer, group=None):
        from .module import ZeroModule
        from .optimizer import shard_optimizer

        wrapped = ZeroModule(module, self, group)
        return wrapped, shard_optimizer(optimizer, wrapped.engine)
