"""Strategy objects for data parallelism: the tuning knobs, and how they wrap a model
(see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import positive_number
from ..errors import ConfigError
from ..compress import compressor_from_spec
from ..strategy.base import PlanTraits, StrategyDefaults


@dataclass(frozen=True)
class DDP(StrategyDefaults):
    """Data parallel with bucketed all-reduce overlapped with backward."""

    bucket_mb: float = 25
    """Cap on a gradient bucket's size in MiB; a larger bucket means fewer, larger all-reduces."""
    first_bucket_mb: float = 1
    """Cap on the first bucket (the last layers' gradients), so communication starts early."""
    trim_every: int = 100
    """Synchronising backward passes between returns of freed heap memory to the system (glibc
    `malloc_trim`; see [Note: heap retention under DDP]); 0: never."""
    find_unused_parameters: bool = False
    """Allow parameters that get no gradient in a backward (on some ranks or all), as PyTorch DDP's
    switch: they count as zero in the average, and one no rank used is left untouched by the step."""
    broadcast_buffers: bool = True
    """Before each forward, copy rank 0's buffers (BatchNorm statistics) to every rank, as PyTorch
    DDP does; skipped when the model has no buffers."""
    compress: object = "none"
    """Gradient compression per bucket: "none", "fp16", "bf16", "int8", "topk:RATIO",
    "powersgd:RANK", or a compressor object (shardwise.compress); see [Note: compressed buckets]."""

    name = "ddp"

    def __post_init__(self):
        positive_number("bucket_mb", self.bucket_mb)
        positive_number("first_bucket_mb", self.first_bucket_mb)
        if self.trim_every < 0:
            raise ConfigError(f"trim_every must be 0 (never) or positive, got {self.trim_every}")
        compressor_from_spec(self.compress)  # a bad spec fails here, before any process starts

    def __str__(self) -> str:
        return self.name

    def planner(self) -> PlanTraits:
        return PlanTraits()  # everything replicated; gradients meet in an all-reduce

    def wrap(self, module, optimizer, group=None):
        from .data_parallel import DataParallel

        return DataParallel(module, self.bucket_mb, self.first_bucket_mb, group, self.trim_every,
                            self.find_unused_parameters, self.broadcast_buffers,
                            compressor_from_spec(self.compress)), optimizer


@dataclass(frozen=True)
class NaiveDDP(StrategyDefaults):
    """Data parallel with one blocking all-reduce per parameter: the readable reference."""

    find_unused_parameters: bool = False
    """Allow parameters that get no gradient in a backward (on some ranks or all), as PyTorch DDP's
    switch: they count as zero in the average, and one no rank used is left untouched by the step."""
    broadcast_buffers: bool = True
    """Before each forward, copy rank 0's buffers (BatchNorm statistics) to every rank, as PyTorch
    DDP does; skipped when the model has no buffers."""

    name = "ddp-naive"

    def __str__(self) -> str:
        return self.name

    def wrap(self, module, optimizer, group=None):
        from .naive import NaiveDataParallel

        return NaiveDataParallel(module, group, self.find_unused_parameters, self.broadcast_buffers), optimizer
