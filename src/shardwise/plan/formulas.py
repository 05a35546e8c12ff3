"""Memory and communication per device for every strategy the planner models (pure: the numbers
come from each strategy's `PlanTraits`, never from its name).

[Note: ZeRO memory formulas]
ZeRO (Rajbhandari et al., SC20, §3 and Figure 1): with Ψ parameters, parameters take P bytes
each, gradients G bytes each, and the optimizer K bytes each (mixed-precision Adam: fp32 master,
momentum, variance, K = 12; fp32 Adam: K = 8 as the parameters are the master). On N devices:
DDP (P + G + K)Ψ; stage 1 (P + G)Ψ + KΨ/N; stage 2 PΨ + (G + K)Ψ/N; stage 3 (P + G + K)Ψ/N.
Communication per step (§7, ring volumes): DDP, stage 1 and stage 2 move 2(N-1)/N·Ψ elements
(all-reduce, or reduce-scatter + all-gather); stage 3 3(N-1)/N·Ψ (a second all-gather).
The planner reads which of the three a strategy splits, and how it moves them, from its
`PlanTraits` (strategy/base.py): `shards_params`/`shards_grads`/`shards_optimizer` divide P, G
and K by N; gradients meet in an all-reduce (2(N-1)/N·Ψ elements of G bytes) or a reduce-scatter
((N-1)/N·Ψ), and each of `parameter_gathers` all-gathers adds (N-1)/N·Ψ elements of P bytes.
Stage 3 keeps the units its forward ends with (root and last) gathered for backward, so its
second gather moves Ψ - kept elements (`kept`: `ZeRO.kept_for_backward(module)`; 0 when the
model's units are not known, the formula's upper bound).
P = G = `vocab.bytes_per_value(precision)`: 4 in fp32 (no master copy); 2 in the 16-bit kinds
(mixed, bf16, fp16), which keep a 4-byte fp32 master counted in K ([Note: precisions]).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import REGISTRY, resolve_strategy
from ..errors import ConfigError
from ..strategy.base import PlanTraits
from ..vocab import MIXED, PRECISIONS, bytes_per_value

PLAN_PRECISIONS = (PRECISIONS[0], MIXED, *PRECISIONS[1:])
"""What the planner accepts: fp32, or 16-bit with fp32 masters (mixed, bf16, fp16: same bytes)."""


def modelled_strategies() -> tuple[str, ...]:
    """The registry's names whose default object the planner models (`planner()` not None),
    in registry order."""
    return tuple(name for name, factory in REGISTRY.items() if factory().planner() is not None)


def plan_traits(strategy) -> PlanTraits:
    """The `PlanTraits` of a strategy given by registry name or object (PlanTraits as is); a
    ConfigError naming the modelled strategies for an unknown name or one the planner does not model."""
    if isinstance(strategy, PlanTraits):
        return strategy
    if isinstance(strategy, str) and strategy not in REGISTRY:
        raise ConfigError(f"unknown strategy '{strategy}'; choose from {', '.join(modelled_strategies())}")
    resolved = resolve_strategy(strategy)
    traits = resolved.planner()
    if traits is None:
        raise ConfigError(f"the planner does not model strategy '{resolved.name}'; "
                          f"choose from {', '.join(modelled_strategies())}")
    return traits


@dataclass(frozen=True)
class Precision:
    param_bytes: int
    grad_bytes: int
    master_bytes: int
    """Bytes of an fp32 master copy per parameter (0 when parameters are fp32 already)."""


def precision_bytes(precision: str) -> Precision:
    """Bytes per parameter at `precision` (one of PLAN_PRECISIONS) from `vocab.bytes_per_value`."""
    value = bytes_per_value(precision)  # a ConfigError naming the precisions for an unknown one
    full = bytes_per_value(PRECISIONS[0])
    return Precision(value, value, full if value < full else 0)


def optimizer_state_bytes(optimizer: str, precision: str) -> int:
    """K: optimizer bytes per parameter, master copy included."""
    per_param = {"adam": 8, "adamw": 8, "sgd-momentum": 4, "sgd": 0}
    if optimizer not in per_param:
        raise ConfigError(f"unknown optimizer '{optimizer}'; choose from {', '.join(per_param)}")
    return per_param[optimizer] + precision_bytes(precision).master_bytes


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


def model_states(psi: float, strategy, world_size: int, precision: str = "mixed",
                 optimizer: str = "adam", offload: bool = False) -> ModelStates:
    """Per-device bytes for parameters, gradients and optimizer state ([Note: ZeRO memory formulas]);
    `strategy`: a registry name, a strategy object or its PlanTraits."""
    traits = plan_traits(strategy)
    if world_size < 1:
        raise ConfigError(f"world size must be at least 1, got {world_size}")
    p = precision_bytes(precision)
    k = optimizer_state_bytes(optimizer, precision)
    n = world_size
    shard = tuple(n if split else 1 for split in (traits.shards_params, traits.shards_grads, traits.shards_optimizer))
    params, grads, opt = p.param_bytes * psi / shard[0], p.grad_bytes * psi / shard[1], k * psi / shard[2]
    if offload:
        return ModelStates(params, grads, 0.0, cpu=opt)
    return ModelStates(params, grads, opt)


def _reduce_passes(traits: PlanTraits) -> int:
    """Ring passes of the gradient reduction: 2 for an all-reduce, 1 for a reduce-scatter."""
    return 2 if traits.reduces_by_all_reduce else 1


def _gathered_elements(psi: float, traits: PlanTraits, kept: float) -> float:
    """Parameter elements all-gathered per step: the second gather skips what stays gathered."""
    return traits.parameter_gathers * psi - (kept if traits.parameter_gathers > 1 else 0)


def comm_elements_per_step(psi: float, strategy, world_size: int, kept: float = 0) -> float:
    """Ring wire volume per device per step, in parameter elements."""
    traits = plan_traits(strategy)
    n = world_size
    return (n - 1) / n * (_reduce_passes(traits) * psi + _gathered_elements(psi, traits, kept))


def comm_bytes_per_step(psi: float, strategy, world_size: int, precision: str = "fp32", kept: float = 0) -> float:
    """Bytes: gradients reduce in the gradient dtype, parameters gather in the parameter dtype;
    `kept`: parameter elements gathered once for forward and backward (see the module's note)."""
    traits = plan_traits(strategy)
    p = precision_bytes(precision)
    ring = (world_size - 1) / world_size
    return ring * (_reduce_passes(traits) * psi * p.grad_bytes + _gathered_elements(psi, traits, kept) * p.param_bytes)


def activation_bytes(layers: int, hidden: int, heads: int, seq_len: int, micro_batch: int,
                     checkpointing: bool = False, bytes_per_value: int = 2) -> float:
    """Transformer activations per device (Korthikanti et al. 2022, no sequence parallelism):
    s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit; with full checkpointing only each layer's
    input (2·s·b·h) is kept, plus one layer recomputed at a time."""
    per_layer = seq_len * micro_batch * hidden * (34 + 5 * heads * seq_len / hidden) * bytes_per_value / 2
    if not checkpointing:
        return layers * per_layer
    return layers * seq_len * micro_batch * hidden * bytes_per_value + per_layer
