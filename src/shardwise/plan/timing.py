"""Predicted step time from compute and communication (pure).

Compute: about 6Ψ FLOPs per token for forward and backward (2Ψ forward, 4Ψ backward; 8Ψ when
activations are recomputed), plus attention's 12·L·s·h per token when the shape is known
(Kaplan et al. 2020; Narayanan et al. 2021), at `device_flops` × `mfu` per device.
Communication: the ring volume of the strategy (from its `PlanTraits`) over a link of `bandwidth`
bytes/s per device.
With overlap a step takes max(compute, communication); without, their sum.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formulas import comm_bytes_per_step
from .model_spec import ModelSpec


@dataclass(frozen=True)
class Cluster:
    world_size: int
    """Devices."""
    device_flops: float = 312e12
    """Peak FLOP/s of one device in the compute precision (A100 bf16: 312e12)."""
    mfu: float = 0.5
    """Fraction of peak the kernels reach (model FLOPs utilisation without communication)."""
    bandwidth: float = 25e9
    """Bytes/s each device can send (and receive) to the others."""
    device_memory: float = 80e9
    """Bytes of memory per device."""


def flops_per_token(model: ModelSpec, checkpointing: bool = False) -> float:
    dense = (8 if checkpointing else 6) * model.params
    attention = 12 * model.layers * model.seq_len * model.hidden if model.has_shape else 0.0
    return dense + attention * (4 / 3 if checkpointing else 1)


@dataclass(frozen=True)
class StepTime:
    compute_s: float
    comm_s: float

    @property
    def overlapped_s(self) -> float:
        return max(self.compute_s, self.comm_s)

    @property
    def serial_s(self) -> float:
        return self.compute_s + self.comm_s


def step_time(model: ModelSpec, strategy, cluster: Cluster, tokens_per_device: float,
              precision: str = "mixed", checkpointing: bool = False, kept: float = 0) -> StepTime:
    """`strategy`: a registry name, a strategy object or its PlanTraits (see `comm_bytes_per_step`,
    also for `kept`)."""
    compute = flops_per_token(model, checkpointing) * tokens_per_device / (cluster.device_flops * cluster.mfu)
    comm = comm_bytes_per_step(model.params, strategy, cluster.world_size, precision, kept) / cluster.bandwidth
    return StepTime(compute, comm if cluster.world_size > 1 else 0.0)
