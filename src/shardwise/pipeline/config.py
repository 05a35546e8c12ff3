"""`sw.Pipeline`: the pipeline-parallel strategy object (see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..strategy.base import StrategyDefaults
from .schedules import SCHEDULES


@dataclass(frozen=True)
class Pipeline(StrategyDefaults):
    """Cut the model into `stages` consecutive stages, one per rank (v per rank for the
    interleaved schedule), and run `microbatches` micro-batches per step through them on
    `schedule`. Train with `model.train_step(inputs, targets, loss_fn)` then `optimizer.step()`.

    `split`: None cuts the layers into stages of balanced parameter counts; "auto" balances
    the layers' forward+backward times measured on `example` (one micro-batch of inputs; None:
    the model's `example_input()`, or random rows for a first Linear) when the model is
    wrapped, averaged over all ranks so that every rank cuts alike; a list of
    P·v - 1 layer names starts a stage at each ("blocks.2")."""

    stages: int = 2
    microbatches: int = 4
    schedule: str = "1f1b"
    split: tuple[str, ...] | str | None = None
    virtual: int | None = None
    """Stages per rank; None: 2 for "interleaved-1f1b", else 1."""
    example: Any = field(default=None, compare=False, repr=False)
    """One micro-batch of inputs to time the layers on, for split="auto" (None: made up)."""

    name = "pipeline"

    def __post_init__(self):
        for field, value in (("stages", self.stages), ("microbatches", self.microbatches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Pipeline {field} must be a positive whole number, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown pipeline schedule '{self.schedule}'; choose from {', '.join(SCHEDULES)}")
        if isinstance(self.split, list):
            object.__setattr__(self, "split", tuple(self.split))
        if not (self.split is None or self.split == "auto" or
                (isinstance(self.split, tuple) and all(isinstance(s, str) for s in self.split))):
            raise ConfigError(f"split must be None, 'auto' or a list of layer names, got {self.split!r}")
        from .schedules import make_schedule

        make_schedule(self.schedule, self.stages, self.microbatches, self.virtual)  # refuses what cannot run

    trains_by_step = True

    def batch_slices(self, world_size: int) -> int:
        return 1

    def __str__(self) -> str:
        return f"pipeline(stages={self.stages}, microbatches={self.microbatches}, schedule={self.schedule})"

    def wrap(self, module, optimizer, group=None):
        from ..runtime import env
        from .module import wrap_pipeline

        wrapped = wrap_pipeline(self, module, optimizer, group)
        env.set_data_parallel(0, 1)  # every rank of a pipeline feeds the same, whole batch
        return wrapped
