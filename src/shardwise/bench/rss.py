"""Peak resident memory and step time of each configuration, from launches of its own.

[Note: peak RSS]
`getrusage(RUSAGE_SELF).ru_maxrss` is the high-water mark of the whole process and only grows.
In the interleaved run every configuration lives in the same process, so its peak is the max
over all of them (plus the full copies the parity check gathers): it says nothing about any one
configuration. Two ways, `--rss`:
- 'separate' (the default): after the interleaved run, each configuration gets launches of its
  own, fresh processes that import, build the model on every rank (whole, in fp32: what the
  wrappers expect), wrap it and train warm-up plus timed steps, consecutively, as a user's job
  does; the configurations take turns, in order and then in reverse order (two passes), so that
  drift of the machine does not favour one. The peak then belongs to the configuration alone,
  and its step times (and minor page faults per step) confirm the interleaved ones. We
  also note the RSS just before the model was built, so that "peak - before" is what the model,
  its wrapping and training added (activations included), without the interpreter and libraries.
  Before that note, the configuration takes a step on a throwaway tiny model of the same kind:
  what first use costs whatever the model (code pages, modules imported lazily: the first
  optimizer step imports torch._dynamo, tens of MB) is then in "before", not in "added".
- 'shared': no extra launches; every configuration shows the shared process's peak.
Either way the JSON keeps the shared process's peak (`shared_process_peak_rss_bytes`), and the
model-state bytes (see [Note: splitting model states]) are per configuration in both modes: they
are the honest per-configuration number, RSS is what the operating system saw.
"""

from __future__ import annotations

import gc
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from ..models import GPTConfig
from .cases import ModelCase
from .memory import current_rss_bytes, peak_rss_bytes
from .runner import minor_faults
from .variants import build_variant

def separate_on_rank(case: ModelCase, name: str, seed: int, steps: int, warmup: int) -> dict:
    """One rank of one configuration's own launch: RSS before the model, the peak after training,
    and the durations and minor page faults of `steps` consecutive steps after `warmup`."""
    mesh = init_device_mesh("cpu", (dist.get_world_size(),)) if name == "torch_fsdp2" else None
    _train(name, tiny_twin(case), mesh, steps=1, warmup=0, seed=seed)
    gc.collect()
    before = current_rss_bytes()
    seconds, faults = _train(name, case, mesh, steps=steps, warmup=warmup, seed=seed)
    # The kernel's high-water mark is updated lazily (when pages are unmapped), so it can trail a
    # sample of VmRSS taken earlier by a few pages: a peak is at least every RSS observed.
    return {"rss_before_model_bytes": before, "peak_rss_bytes": max(peak_rss_bytes(), before, current_rss_bytes()),
            "seconds": seconds, "faults": faults}


def tiny_twin(case: ModelCase) -> ModelCase:
    """A model of the same kind small enough to cost no memory worth noting."""
    if case.name == "mlp":
        return ModelCase("mlp", width=8, depth=2, batch=2)
    return ModelCase("gpt", gpt=GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4), batch=2)


def _train(name: str, case: ModelCase, mesh, steps: int, warmup: int, seed: int) -> tuple[list[float], list[int]]:
    """Train warm-up then timed steps back to back (one barrier before the timed ones); the
    timed steps' durations and minor page faults."""
    torch.manual_seed(seed)
    model, optimizer = build_variant(name, case.build(), case, mesh)
    batches = case.batches(dist.get_rank(), warmup + steps, seed)
    seconds, faults = [], []
    for index, (x, y) in enumerate(batches):
        if index == warmup:
            dist.barrier()
        started, faulted = time.perf_counter(), minor_faults()
        case.loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        if index >= warmup:
            seconds.append(time.perf_counter() - started)
            faults.append(minor_faults() - faulted)
    return seconds, faults

