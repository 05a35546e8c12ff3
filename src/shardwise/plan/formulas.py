"""Memory and communication per device for DDP and ZeRO stages 1-3 (pure).

[Note: ZeRO memory formulas]
ZeRO (Rajbhandari et al., SC20, §3 and Figure 1): with Ψ parameters, parameters take P bytes
each, gradients G bytes each, and the optimizer K bytes each (mixed-precision Adam: fp32 master,
momentum, variance, K = 12; fp32 Adam: K = 8 as the parameters are the master). On N devices:
DDP (P + G + K)Ψ; stage 1 (P + G)Ψ + KΨ/N; stage 2 PΨ + (G + K)Ψ/N; stage 3 (P + G + K)Ψ/N.
Communication per step (§7, ring volumes): DDP, stage 1 and stage 2 move 2(N-1)/N·Ψ elements
(all-reduce, or reduce-scatter + all-gather); stage 3 3(N-1)/N·Ψ (a second all-gather).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

STRATEGIES = ("ddp", "zero1", "zero2", "zero3")


@dataclass(frozen=True)
class Precision:
    param_bytes: int
    grad_bytes: int
    master_bytes: int
    """Bytes of an fp32 master copy per parameter (0 when parameters are fp32 already)."""


PRECISIONS = {"fp32": Precision(4, 4, 0), "mixed": Precision(2, 2, 4)}


def optimizer_state_bytes(optimizer: str, precision: str) -> int:
    """K: optimizer bytes per parameter, master copy included."""
    per_param = {"adam": 8, "adamw": 8, "sgd-momentum": 4, "sgd": 0}
    if optimizer not in per_param:
        raise ConfigError(f"unknown optimizer '{optimizer}'; choose from {', '.join(per_param)}")
    return per_param[optimizer] + _precision(precision).master_bytes


def _precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


@dataclass(frozen=True)
class ModelStates:
    params: float
    grads: float
    optimizer: float
    """On the device; under offload the optimizer part (with masters) is on the CPU instead."""
    cpu: float = 0.0

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer


def model_states(psi: float, strategy: str, world_size: int, precision: str = "mixed",
                 optimizer: str = "adam", offload: bool = False) -> ModelStates:
    """Per-device bytes for parameters, gradients and optimizer state ([Note: ZeRO memory formulas])."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}'; choose from {', '.join(STRATEGIES)}")
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    p = _precision(precision)
    k = optimizer_state_bytes(optimizer, precision)
    n = world_size
    shard = {"ddp": (1, 1, 1), "zero1": (1, 1, n), "zero2": (1, n, n), "zero3": (n, n, n)}[strategy]
    params, grads, opt = p.param_bytes * psi / shard[0], p.grad_bytes * psi / shard[1], k * psi / shard[2]
    if offload:
        return ModelStates(params, grads, 0.0, cpu=opt)
    return ModelStates(params, grads, opt)


def comm_elements_per_step(psi: float, strategy: str, world_size: int) -> float:
    """Ring wire volume per device per step, in parameter elements."""
    n = world_size
    factor = 3 if strategy == "zero3" else 2
    return factor * (n - 1) / n * psi


def comm_bytes_per_step(psi: float, strategy: str, world_size: int, precision: str = "fp32") -> float:
    """Bytes: gradients reduce in the gradient dtype, parameters gather in the parameter dtype."""
    p = _precision(precision)
    n = world_size
    ring = (n - 1) / n * psi
    if strategy == "ddp":
        return 2 * ring * p.grad_bytes
    gathers = 2 if strategy == "zero3" else 1
    return ring * p.grad_bytes + gathers * ring * p.param_bytes


def activation_bytes(layers: int, hidden: int, heads: int, seq_len: int, micro_batch: int,
                     checkpointing: bool = False, bytes_per_value: int = 2) -> float:
    """Transformer activations per device (Korthikanti et al. 2022, no sequence parallelism):
    s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit; with full checkpointing only each layer's
    input (2·s·b·h) is kept, plus one layer recomputed at a time."""
    per_layer = seq_len * micro_batch * hidden * (34 + 5 * heads * seq_len / hidden) * bytes_per_value / 2
    if not checkpointing:
        return layers * per_layer
    return layers * seq_len * micro_batch * hidden * bytes_per_value + per_layer
