"""One row per (strategy, world size): memory, whether it fits, predicted step time; the strategies
are those the planner models (`modelled_strategies`: the registry's with `PlanTraits`)."""

from __future__ import annotations

import torch

from ..api import resolve_strategy
from ..models.gpt import GPT, GPTConfig
from ..strategy.base import PlanTraits
from ..vocab import bytes_per_value
from .formulas import activation_bytes, comm_bytes_per_step, model_states, modelled_strategies, plan_traits
from .model_spec import ModelSpec
from .timing import Cluster, flops_per_token, step_time

DEFAULT_SEQ_LEN = 2048


def kept_for_backward(model: ModelSpec, strategy: str, traits: PlanTraits) -> int:
    """Parameter elements the strategy gathers once for forward and backward (ZeRO-3's root and
    last unit, [Note: kept for backward]) on a GPT of this shape, built on the meta device (no
    memory; for other architectures of that shape, an estimate); 0 where the shape is not known
    or no such GPT exists: the formula's upper bound."""
    if traits.parameter_gathers < 2 or not model.has_shape or model.vocab is None or model.hidden % model.heads:
        return 0
    with torch.device("meta"):
        gpt = GPT(GPTConfig(vocab_size=model.vocab, block_size=model.seq_len, n_layer=model.layers,
                            n_head=model.heads, n_embd=model.hidden))
    return min(resolve_strategy(strategy).kept_for_backward(gpt), int(model.params))


def plan_rows(model: ModelSpec, world_sizes: list[int], precision: str = "mixed", optimizer: str = "adam",
              offload: bool = False, micro_batch: int = 1, device_memory: float = 80e9,
              device_flops: float = 312e12, mfu: float = 0.5, bandwidth: float = 25e9) -> list[dict]:
    """Activations need the model's shape; without it, rows count model states only and time
    `micro_batch` sequences of DEFAULT_SEQ_LEN tokens per device. `precision`: fp32, or mixed,
    bf16 or fp16 (16-bit with fp32 masters; activations in 16 bits)."""
    rows = []
    act_bytes = bytes_per_value(precision)
    strategies = [(name, plan_traits(name)) for name in modelled_strategies()]
    kept = {name: kept_for_backward(model, name, traits) for name, traits in strategies}
    tokens = micro_batch * (model.seq_len or DEFAULT_SEQ_LEN)
    for n in world_sizes:
        cluster = Cluster(n, device_flops, mfu, bandwidth, device_memory)
        for name, traits in strategies:
            states = model_states(model.params, traits, n, precision, optimizer, offload)
            row = {
                "strategy": name, "world_size": n,
                "model_state_bytes": states.total, "params_bytes": states.params, "grads_bytes": states.grads,
                "optimizer_bytes": states.optimizer, "cpu_offload_bytes": states.cpu,
                "comm_bytes_per_step": comm_bytes_per_step(model.params, traits, n, precision, kept[name]),
                "tokens_per_device": tokens,
            }
            variants = [("", False)]
            if model.has_shape:
                variants.append(("_checkpointed", True))
            for suffix, recompute in variants:
                acts = (activation_bytes(model.layers, model.hidden, model.heads, model.seq_len, micro_batch, recompute, act_bytes)
                        if model.has_shape else 0.0)
                timing = step_time(model, traits, cluster, tokens, precision, recompute, kept[name])
                if model.has_shape:
                    row[f"activation_bytes{suffix}"] = acts
                row[f"fits{suffix}"] = states.total + acts <= device_memory
                row[f"step_s_overlap{suffix}"] = timing.overlapped_s
                row[f"step_s_serial{suffix}"] = timing.serial_s
                row[f"tokens_per_s{suffix}"] = tokens * n / timing.overlapped_s
                row[f"tflops_per_device{suffix}"] = flops_per_token(model, False) * tokens / timing.overlapped_s / 1e12
            rows.append(row)
    return rows
