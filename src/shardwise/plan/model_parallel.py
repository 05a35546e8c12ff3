"""Predictions for pipeline and tensor parallelism on a dp x pp x tp mesh (pure).

Per rank, for a GPT-style model (ModelSpec with a shape) of L layers, hidden h, a heads,
sequence s, vocabulary V, with b sequences per micro-batch and M micro-batches per step:
- parameters: the layers of one stage (L/P of them, 12h² + 13h each) split over T ranks
  (their matrices; the 13h of biases and norms counted whole, an upper bound), plus the token
  embedding (V·h) on the first stage and its tied copy in the head on the last one, the position
  embedding (s·h) on the first; the planner reports the fullest stage. Gradients and optimizer
  state follow the data-parallel strategy over the D replicas ([Note: ZeRO memory formulas]).
- activations (Korthikanti et al. 2022, tensor parallel without sequence parallelism):
  s·b·h·(10 + 24/T + 5·a·s/(h·T)) bytes per layer per micro-batch in 16 bits, times the
  micro-batches the schedule keeps at once on rank 0, the fullest ([Note: pipeline schedules]).
- the bubble (P-1)/(v·M + P-1).
- tensor-parallel communication: per layer per micro-batch 4 all-reduces (2 forward, 2 backward)
  of s·b·h values, 2(T-1)/T of their bytes each per rank; pipeline: per micro-batch one
  activation sent down and one gradient up at each stage boundary (s·b·h values each). Values
  are counted in the dtypes shardwise sends them: in fp32, or under 16-bit autocast (parameters
  fp32) the forward's two sums of row-parallel products in 16 bits, while the backward's two
  input gradients (of fp32 LayerNorm outputs), the embedding's and head's sums and the pipeline's
  residual stream stay fp32.
- with the vocabulary split (`vocab_parallel`, [Note: vocabulary parallel]): the token embedding
  and its tied head hold V·h/T each, and per micro-batch the embedding's all-reduce and the
  head's input-gradient all-reduce (s·b·h values each) are added, with the cross-entropy over
  the split logits (as `shardwise train --tp-vocab` runs it): each rank's row maxima and width
  gathered (s·b + 1 fp32 values from each rank) and the sums of exponentials and target logits
  all-reduced (2·s·b fp32 values). Gathering the logits instead would move s·b·V·(T-1)/T values.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..pipeline.formulas import bubble_fraction, peak_stored
from ..pipeline.schedules import make_schedule
from ..vocab import bytes_per_value
from .formulas import model_states
from .model_spec import ModelSpec

_FP32 = 4  # bytes of what stays fp32 under autocast (see the module's docstring)


def model_parallel_row(model: ModelSpec, world_size: int, pp: int, tp: int, microbatches: int, schedule: str,
                       dp_strategy: str = "ddp", precision: str = "mixed", optimizer: str = "adam",
                       micro_batch: int = 1, virtual: int | None = None, device_memory: float = 80e9,
                       vocab_parallel: bool = False) -> dict:
    if not model.has_shape:
        raise ConfigError("pipeline and tensor-parallel predictions need the model's shape: give --layers/--hidden/"
                          "--heads or --config")
    if world_size % (pp * tp):
        raise ConfigError(f"world size {world_size} is not a multiple of pp {pp} x tp {tp}")
    v = virtual if virtual is not None else (2 if schedule == "interleaved-1f1b" else 1)
    if pp > 1:
        make_schedule(schedule, pp, microbatches, v)  # refuses what cannot run (e.g. zb-h1 with M < P)
    if model.layers < pp * v:
        raise ConfigError(f"{model.layers} layers cannot fill {pp * v} pipeline stages")
    dp = world_size // (pp * tp)
    L, h, a, s, V = model.layers, model.hidden, model.heads, model.seq_len, model.vocab or 0
    layers_per_rank = math.ceil(L / pp)
    layer_params = layers_per_rank * (12 * h * h / tp + 13 * h)
    if vocab_parallel and tp == 1:
        raise ConfigError("the vocabulary split needs tensor-parallel ranks: give --tp 2 or more")
    table = V * h / tp if vocab_parallel else V * h  # the token embedding, whole or this rank's rows
    first = layer_params + table + s * h  # token and position embeddings
    last = layer_params + table + 2 * h  # the tied head's copy, the final norm
    params = max(first, last) if pp > 1 else layer_params + table + s * h + 2 * h
    states = model_states(params, dp_strategy, dp, precision, optimizer)
    act = bytes_per_value(precision)
    per_layer = s * micro_batch * h * (10 + 24 / tp + 5 * a * s / (h * tp)) * act / 2
    stored = peak_stored(schedule, pp, microbatches, 0, v) if pp > 1 else 1.0
    activations = stored * layers_per_rank * per_layer
    values = s * micro_batch * h
    ring = 2 * (tp - 1) / tp
    tp_per_layer = ring * values * (2 * act + 2 * _FP32)  # forward sums in the compute dtype, backward fp32
    vocab_bytes = 0.0
    if vocab_parallel:  # the embedding's and the head's all-reduces, on the first and last stage
        tokens = s * micro_batch
        embedding = ring * values * _FP32
        cross_entropy = ((tp - 1) * (tokens + 1) + ring * 2 * tokens) * _FP32
        head = ring * values * _FP32 + cross_entropy
        vocab_bytes = embedding + head if pp == 1 else max(embedding, head)  # first and last stage apart
    tp_bytes = (tp_per_layer * layers_per_rank + vocab_bytes) * microbatches
    pp_bytes = 2 * values * _FP32 * microbatches if pp > 1 else 0.0
    return {
        "world_size": world_size, "dp": dp, "pp": pp, "tp": tp, "schedule": schedule if pp > 1 else "-",
        "microbatches": microbatches, "dp_strategy": dp_strategy,
        "params_per_rank": params, "params_bytes": states.params, "grads_bytes": states.grads,
        "optimizer_bytes": states.optimizer, "model_state_bytes": states.total,
        "activation_bytes": activations, "stored_microbatches": stored,
        "fits": states.total + activations <= device_memory,
        "bubble": bubble_fraction(pp, microbatches, v, schedule) if pp > 1 else 0.0,
        "tp_bytes_per_layer_per_microbatch": tp_per_layer, "tp_bytes_per_step": tp_bytes,
        "pp_bytes_per_step": pp_bytes, "tp_vocab_bytes_per_microbatch": vocab_bytes,
    }
