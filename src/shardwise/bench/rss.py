"""Peak resident memory of each configuration, from a launch of its own.

[Note: peak RSS]
`getrusage(RUSAGE_SELF).ru_maxrss` is the high-water mark of the whole process and only grows.
In the interleaved run every configuration lives in the same process, so its peak is the max
over all of them (plus the full copies the parity check gathers): it says nothing about any one
configuration. Two ways, `--rss`:
- 'separate' (the default): after the interleaved run, each configuration gets a short launch
  of its own, fresh processes that import, build the model on every rank (whole, in fp32: what
  the wrappers expect), wrap it and take RSS_STEPS steps. Its peak then belongs to it alone. We
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

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from ..models import GPTConfig
from .cases import ModelCase
from .memory import current_rss_bytes, peak_rss_bytes
from .variants import build_variant

RSS_STEPS = 3  # the first step allocates optimizer state; the later ones show the steady state


def rss_on_rank(case: ModelCase, name: str, seed: int) -> dict:
    """One rank of one configuration's own launch: RSS before the model, and the peak after training."""
    mesh = init_device_mesh("cpu", (dist.get_world_size(),)) if name == "torch_fsdp2" else None
    _train(name, tiny_twin(case), mesh, steps=1, seed=seed)
    gc.collect()
    before = current_rss_bytes()
    _train(name, case, mesh, steps=RSS_STEPS, seed=seed)
    # The kernel's high-water mark is updated lazily (when pages are unmapped), so it can trail a
    # sample of VmRSS taken earlier by a few pages: a peak is at least every RSS observed.
    return {"rss_before_model_bytes": before, "peak_rss_bytes": max(peak_rss_bytes(), before, current_rss_bytes())}


def tiny_twin(case: ModelCase) -> ModelCase:
    """A model of the same kind small enough to cost no memory worth noting."""
    if case.name == "mlp":
        return ModelCase("mlp", width=8, depth=2, batch=2)
    return ModelCase("gpt", gpt=GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4), batch=2)


def _train(name: str, case: ModelCase, mesh, steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    model, optimizer = build_variant(name, case.build(), case, mesh)
    for x, y in case.batches(dist.get_rank(), steps, seed):
        case.loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()

