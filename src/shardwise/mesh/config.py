"""`sw.Mesh`: data, pipeline and tensor parallelism together (see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import ConfigError
from ..pipeline import Pipeline
from ..strategy.base import StrategyDefaults
from ..tensor_parallel import TensorParallel
from .layout import MeshShape
from .replicas import DP_STRATEGIES


@dataclass(frozen=True)
class Mesh(StrategyDefaults):
    """N = dp·pp·tp ranks ([Note: mesh layout]): `tp` ranks split each layer (`tensor`),
    `pp` ranks hold consecutive stages (`pipeline`), `dp` replicas of that whole arrangement
    train on their slices of the batch and meet by `dp_strategy` ("ddp", "zero1", "zero2").
    Train with `model.train_step(inputs, targets, loss_fn)` on the slice of
    `sw.data_parallel_rank()` of `sw.data_parallel_size()`, then `optimizer.step()`."""

    dp: int = 1
    pp: int = 1
    tp: int = 1
    dp_strategy: str = "ddp"
    pipeline: Pipeline | None = None
    tensor: TensorParallel | None = field(default=None, hash=False)

    name = "mesh"

    def __post_init__(self):
        MeshShape(self.dp, self.pp, self.tp)
        if self.dp_strategy not in DP_STRATEGIES:
            raise ConfigError(f"dp_strategy must be one of {', '.join(DP_STRATEGIES)}, got '{self.dp_strategy}'")
        if self.pipeline is not None and self.pipeline.stages != self.pp:
            raise ConfigError(f"Mesh(pp={self.pp}) with Pipeline(stages={self.pipeline.stages}): make them equal")
        if self.tensor is not None and self.tensor.size != self.tp:
            raise ConfigError(f"Mesh(tp={self.tp}) with TensorParallel(size={self.tensor.size}): make them equal")

    @property
    def shape(self) -> MeshShape:
        return MeshShape(self.dp, self.pp, self.tp)

    def pipeline_config(self) -> Pipeline:
        return self.pipeline if self.pipeline is not None else Pipeline(stages=self.pp, microbatches=max(self.pp, 1))

    def tensor_config(self) -> TensorParallel:
        return self.tensor if self.tensor is not None else TensorParallel(size=self.tp)

    trains_by_step = True

    def batch_slices(self, world_size: int) -> int:
        return self.dp

    def __str__(self) -> str:
        return f"mesh(dp={self.dp}, pp={self.pp}, tp={self.tp}, {self.dp_strategy})"

    def with_options(self, **options):
        return replace(self, **options)

    def wrap(self, module, optimizer, group=None):
        from .module import wrap_mesh

        return wrap_mesh(self, module, optimizer, group)
